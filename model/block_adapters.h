#pragma once
// Trainable adapters on a block range's projections, owned by the client and applied by whoever
// runs the blocks (issue: PEQA and LoRA over remote blocks):
//
//   PEQA (Kim et al., 2023): on int8 weights W = diag(s) Q, a trainable m per output row makes the
//     row's scale s (1 + m): y' = y (1 + m). The integer matrix stays as it is; a tuned model is
//     the same int8 model with new scales.
//   LoRA (Hu et al., 2021): y' = y + c (x Aᵀ) Bᵀ with A [r, in], B [out, r] and c = alpha / r;
//     A starts random, B at zero, so training starts from the base model.
//
// Adapters apply to the product only (a projection's bias, where the architecture has one, comes
// after). Values of a block range are one flat vector: block by block, target by target, in
// Projection order (PEQA: m [rows]; LoRA: A then B), and within a target copy by copy: in a
// sparse block (a mixture of experts) gate, up and down are each expert's, and every expert has
// an adapter of its own, in expert order, then the shared expert's where there is one. Every block
// holds as many values per target as the largest kind of block needs: a dense block of a mixture
// uses the first of its MLP targets' values (its one adapter's), the rest stay zero.
//
// Thread-safety: plain values and functions; the backward accumulates into the caller's buffer.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/matmul.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace sepal {

enum class AdapterMethod { kPeqa, kLora };

/// A block's projections, in the order the values are laid out.
enum class Projection { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kProjections = 7;
/// "q_proj" ... "down_proj" (Hugging Face's names, which PEFT uses); nullopt otherwise.
std::optional<Projection> parse_projection(std::string_view name);
std::string_view projection_name(Projection p);
/// Whether a block of `config` has projection p to adapt (BLOOM has no gate_proj; the MLP of a
/// mixture of experts only where experts_take_adapters).
bool block_has_projection(const ModelConfig& config, Projection p);
/// Whether the experts of a mixture take adapters on their gate, up and down, each expert's
/// projections being Linear modules of their own (Mixtral's w1, w3 and w2; Qwen2-MoE's,
/// Qwen3-MoE's and OLMoE's gate_proj, up_proj and down_proj, and Qwen2-MoE's shared expert's).
/// Not GPT-OSS's biased experts nor Granite-MoE's stacked ones.
bool experts_take_adapters(const ModelConfig& config);
/// How many adapters projection p has in block `layer` of `config`: for a sparse block's gate, up
/// and down one per expert, and one more for its shared expert; else 1.
std::int64_t projection_copies(const ModelConfig& config, Projection p, std::int64_t layer);
/// [rows, cols] of copy `copy` of projection p's weight in block `layer` of `config` (an expert's,
/// the shared expert's or a dense MLP's).
std::pair<std::int64_t, std::int64_t> projection_shape(const ModelConfig& config, Projection p, std::int64_t layer,
                                                       std::int64_t copy = 0);
/// The weight of projection p in a block (of expert `copy` for a sparse block's MLP; the shared
/// expert's after the routed ones).
const WeightView& projection_weight(const BlockWeights& w, Projection p, std::int64_t copy = 0);

/// Where projection p of a block sits in the architecture's Hugging Face module (the layout PEFT
/// adapters and checkpoints name): the module's path ("model.layers.L.self_attn.q_proj",
/// "transformer.h.L.self_attention.query_key_value"), its name in PEFT's target_modules
/// ("q_proj", "query_key_value"), its rows, and which of them are p's. A fused module holds
/// several projections, interleaved: row i of p is module row (i / group) · stride + offset +
/// i % group (BLOOM's query_key_value is [heads, 3, head_dim]). An unfused module has group =
/// stride = rows and offset 0.
struct ProjectionModule {
  std::string path;
  std::string target;
  std::int64_t rows = 0;
  std::int64_t group = 0, stride = 0, offset = 0;

  std::int64_t module_row(std::int64_t i) const { return (i / group) * stride + offset + i % group; }
};
/// Projection p's module in block `layer` of `config` (expert `copy`'s, for a sparse block's MLP:
/// "model.layers.L.block_sparse_moe.experts.E.w1", "model.layers.L.mlp.experts.E.gate_proj", and
/// after the experts the shared one's, "model.layers.L.mlp.shared_expert.gate_proj").
ProjectionModule projection_module(const ModelConfig& config, std::int64_t layer, Projection p, std::int64_t copy = 0);
/// The projections a name selects in blocks of `config`: sepal's ("q_proj" ... "down_proj") or a
/// module's target name in the architecture's own layout ("query_key_value" is BLOOM's q, k and
/// v). Empty when the name selects none.
std::vector<Projection> projections_named(const ModelConfig& config, std::string_view name);

/// What an adapter is; fixed for a run.
struct AdapterShape {
  AdapterMethod method = AdapterMethod::kLora;
  std::int64_t rank = 0;      ///< LoRA
  double alpha = 0;           ///< LoRA: the update is scaled by alpha / rank
  std::vector<Projection> targets;  ///< in Projection order, no repeats

  /// Values per block of `config`.
  std::int64_t values_per_block(const ModelConfig& config) const;
  /// Values of one adapter: copy `copy` of target p in block `layer`.
  std::int64_t values_per_copy(const ModelConfig& config, Projection p, std::int64_t layer, std::int64_t copy) const;
  /// Values every block holds for target p (the most a block of `config` needs).
  std::int64_t values_of(const ModelConfig& config, Projection p) const;
  /// Offset of the values of copy `copy` of target `p` within block `layer`'s.
  std::int64_t offset_in_block(const ModelConfig& config, Projection p, std::int64_t layer, std::int64_t copy = 0) const;
  bool targets_projection(Projection p) const;
};
/// Throws sepal::Error naming what is wrong (no targets, repeats, a rank outside [1, 1024] or
/// beyond a target's sides, alpha not positive).
void validate(const AdapterShape& shape, const ModelConfig& config);

/// One projection's adapter in one block: a view into a block range's values.
struct ProjectionAdapter {
  AdapterMethod method = AdapterMethod::kLora;
  std::int64_t rank = 0;
  float scaling = 0;         ///< LoRA: alpha / rank
  const float* values = nullptr;
};

/// Adapters of blocks [first, first + blocks): the values a host holds for the blocks it serves.
struct BlockAdapters {
  AdapterShape shape;
  std::int64_t first = 0, blocks = 0;
  const float* values = nullptr;  ///< [blocks × shape.values_per_block], not owned

  /// The adapter of projection p (of expert `copy` in a sparse block) in block `block` (absolute
  /// index), or nullopt when p is not a target or the block is outside the range.
  std::optional<ProjectionAdapter> of(const ModelConfig& config, std::int64_t block, Projection p,
                                      std::int64_t copy = 0) const;
};

/// y[n, w.rows] (the product x · wᵀ) becomes the adapted product, in place. x is [n, w.cols].
/// PEQA needs int8 weights (it rescales rows). Each row's result depends only on that row.
void apply_adapter(const ProjectionAdapter& a, const WeightView& w, const float* x, std::int64_t n, float* y);

/// The backward of apply_adapter for n rows: dy holds d loss / d (adapted product) and becomes
/// d loss / d (base product), the gradient matmul_input_grad then takes to the input (PEQA
/// rescales it; LoRA leaves it); dx[n, w.cols] receives LoRA's own input gradient, added; and
/// grads (the adapter's values' layout) receives d loss / d values, added. x as in the forward.
void adapter_backward(const ProjectionAdapter& a, const WeightView& w, const float* x, std::int64_t n, float* dy,
                      float* dx, float* grads);

}  // namespace sepal

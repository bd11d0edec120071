#pragma once
// The MLP of a sparse block (a mixture of experts: Mixtral, Qwen3-MoE): a router picks
// experts_per_token of num_experts gated MLPs for each row, and the row's output is their outputs
// weighted by the router's probabilities (ModelConfig's num_experts and the fields after it).
// GPT-OSS adds biases to the router's logits and to each expert's products, and clamps its
// SwiGLU (ModelConfig::expert_biases, swiglu_limit).
//
// Each expert runs once per call over the rows that picked it, gathered; a row's weighted outputs
// are summed in ascending expert order, so a row's result depends only on its input and on which
// rows share its experts' products (none, with `alone`: every row then gets the bits it gets
// decoded alone, as block_parts.h's block_products gives them).
//
// Adapters (model/block_adapters.h) on the experts' gate, up and down are each expert's own (and
// the shared expert's its own), and each row's: rows of several sessions batched in one call take
// their own session's.
//
// Thread-safety: each call is independent; the products use the kernels' thread pool.

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/aligned_vector.h"
#include "model/block_adapters.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace sepal {

/// Which experts each of n rows takes and with what weights: row r's experts_per_token choices are
/// expert[r * k + j] (ascending within the row) and weight[r * k + j].
struct ExpertRouting {
  std::int64_t k = 0;
  std::vector<std::int32_t> expert;
  std::vector<float> weight;
  /// Every expert's softmax probability [n, num_experts] (the backward's; the picked weights are
  /// these, renormalised over the picked ones where the config says so).
  std::vector<float> probs;
};

/// Picks the experts of n rows from their router logits [n, num_experts]: the k largest (the
/// lower index first among equal ones), weighted by the softmax over all experts, renormalised to
/// sum to one over the k where moe_renormalize (as transformers computes them).
void route_experts(const ModelConfig& c, const float* logits, std::int64_t n, ExpertRouting& routing);

/// Buffers of one sparse MLP call over up to n rows.
struct ExpertScratch {
  AlignedFloats logits, gathered, gate, up, out;
  AlignedFloats shared_gate, shared_up, shared_out, shared_logit;  // Qwen2-MoE's shared expert
  std::vector<std::int32_t> rows;  // an expert's rows
  std::vector<std::int32_t> slots; // their choice slots (r * k + j)
  ExpertRouting routing;
  ExpertScratch(const ModelConfig& c, std::int64_t n);
};

/// Rows [row, row + n) of a call and the adapters their experts' products take (null: none).
struct AdaptedRows {
  std::int64_t row = 0, n = 0;
  const BlockAdapters* adapters = nullptr;
};

/// out[n, hidden] = the sparse MLP of x[n, hidden] with block w's router and experts (and, after
/// them, its shared expert's output times sigmoid of its gate), each row's expert products
/// adapted as `adapted` says (rows it does not cover take none). With `alone`, each row's products
/// are the bits it gets alone. x and out must not overlap.
void experts_forward(const ModelConfig& c, const BlockWeights& w, const float* x, std::int64_t n, bool alone,
                     ExpertScratch& s, float* out, std::span<const AdaptedRows> adapted = {});

/// A training pass's record of a sparse MLP over t rows, for its backward: the routing, and for
/// each choice slot (r * k + j) the expert's gate and up products [t * k, moe_intermediate_size]
/// (adapted) and its output before weighting [t * k, hidden].
struct ExpertActivations {
  ExpertRouting routing;
  std::vector<float> gate, up, out;
  /// Qwen2-MoE's shared expert over the t rows: its gate and up products [t, its width] and its
  /// output [t, hidden] (adapted), and its gate's logit [t].
  std::vector<float> shared_gate, shared_up, shared_out, shared_logit;
};

/// experts_forward over a training pass's t rows (adapted by `adapters`, which may be null),
/// recording what the backward needs.
void experts_training_forward(const ModelConfig& c, const BlockWeights& w, const float* x, std::int64_t t,
                              ExpertActivations& a, float* out, const BlockAdapters* adapters = nullptr);

/// dx[t, hidden] = d loss / d x of that MLP, whose input was x[t, hidden], given dout = d loss /
/// d out: through each picked expert, and through the router's probabilities (the choice itself
/// is piecewise constant). With adapters, adds their gradients to adapter_grads (the block's, in
/// the layout of its values).
void experts_input_grad(const ModelConfig& c, const BlockWeights& w, std::int64_t t, const ExpertActivations& a,
                        const float* x, const float* dout, float* dx, const BlockAdapters* adapters = nullptr,
                        float* adapter_grads = nullptr);

}  // namespace sepal

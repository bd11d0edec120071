#pragma once
// Tuning over frozen blocks: the client's trainable parameters, how examples become micro-batches
// with the soft prompt in them, and the loss and gradient of a batch, with the blocks behind an
// interface (in this process, or on block hosts).
//
//   ptune:      N trainable input vectors inserted right after BOS (first when the model has no
//               BOS), where a hard prompt would go.
//   deep-ptune: the same, plus N trainable vectors per block added to that block's input at the
//               same N positions.
//   peqa, lora: adapters on the blocks' projections (model/block_adapters.h), no prompt.
//
// Thread-safety: plain functions; a TrainingBlocks belongs to one trainer.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "model/model_ends.h"
#include "model/tuning_data.h"

namespace sepal {

enum class TuningMethod { kPtune, kDeepPtune, kPeqa, kLora };
/// "ptune", "deep-ptune", "peqa" or "lora"; nullopt otherwise.
std::optional<TuningMethod> parse_tuning_method(std::string_view name);
std::string_view tuning_method_name(TuningMethod method);
/// Whether the method trains adapters (peqa, lora) rather than a prompt.
inline bool trains_adapters(TuningMethod method) { return method == TuningMethod::kPeqa || method == TuningMethod::kLora; }

/// The trainable parameters.
struct PromptParameters {
  TuningMethod method = TuningMethod::kPtune;
  std::int64_t tokens = 0;        ///< N
  std::int64_t hidden_size = 0;
  std::int64_t layers = 0;
  std::vector<float> soft;        ///< [tokens, hidden_size]; empty for peqa and lora
  std::vector<float> deep;        ///< [layers, tokens, hidden_size]; empty but for deep-ptune
  AdapterShape adapter_shape;     ///< peqa, lora
  std::vector<float> adapter;     ///< [layers, values per block]; empty but for peqa and lora

  /// Where the prompt's N positions start in every sequence: 1 after a BOS, else 0.
  std::int64_t offset = 0;

  /// soft, deep, then adapter, as one vector (the optimizer's view), and back.
  std::vector<float> flat() const;
  void assign_flat(const std::vector<float>& values);
  std::size_t size() const { return soft.size() + deep.size() + adapter.size(); }
  /// The deep prompts as the blocks take them; none but for deep-ptune.
  std::optional<DeepPrompts> deep_prompts() const;
  /// The adapters of every block; none but for peqa and lora.
  std::optional<BlockAdapters> block_adapters() const;
};

/// New parameters: the soft prompt starts as the embeddings of N token ids drawn from the
/// vocabulary with `seed`; deep prompts start at zero (so training starts from plain ptune).
PromptParameters initial_prompt_parameters(TuningMethod method, std::int64_t tokens, const ModelEnds& ends,
                                           std::uint64_t seed);
/// New adapters of `shape` for every block (checked against the model): PEQA's offsets at zero;
/// LoRA's A uniform in ±1/sqrt(in) (as PEFT initialises it) from `seed` and B at zero. Both start
/// from the base model.
PromptParameters initial_adapter_parameters(const AdapterShape& shape, const ModelConfig& config, std::uint64_t seed);

/// What the blocks of a pass are tuned with; either may be null.
struct BlockTuning {
  const DeepPrompts* prompts = nullptr;
  const BlockAdapters* adapters = nullptr;
};
/// The tuning of `params` (none when null).
struct HeldTuning {
  std::optional<DeepPrompts> prompts;
  std::optional<BlockAdapters> adapters;
  explicit HeldTuning(const PromptParameters* params);
  BlockTuning view() const { return {prompts ? &*prompts : nullptr, adapters ? &*adapters : nullptr}; }
};

/// One micro-batch: sequences packed one after another, with the soft prompt in each.
struct PromptedBatch {
  std::vector<float> hidden;            ///< [T, hidden_size], the blocks' input
  std::vector<std::int32_t> targets;    ///< [T]: the id row t predicts, or -1
  std::vector<std::int64_t> lengths;
  std::int64_t scored = 0;
};
/// Embeds `examples` with the prompt of `params` inserted (none when params is null).
PromptedBatch build_batch(const ModelEnds& ends, std::span<const Example* const> examples,
                          const PromptParameters* params);

/// The blocks of the model, wherever they run. Both calls take every micro-batch of a step at
/// once, so an implementation may keep several in flight.
class TrainingBlocks {
 public:
  virtual ~TrainingBlocks() = default;
  /// Runs every micro-batch (hidden, lengths) through all blocks, in place. `backward_follows`:
  /// backward() will be called next for these micro-batches, in the same order (an
  /// implementation may keep what it needs for it).
  virtual void forward(std::span<PromptedBatch* const> batches, const BlockTuning& tuning, bool backward_follows) = 0;
  /// For every micro-batch: given its input as forward() got it and grads[i] = d loss / d output,
  /// overwrites grads[i] with d loss / d input; with prompts, prompt_grads [layers, N, hidden],
  /// and with adapters, adapter_grads [layers, values per block] receive the sums over
  /// micro-batches in their order.
  virtual void backward(std::span<const PromptedBatch* const> inputs, std::span<std::vector<float>* const> grads,
                        const BlockTuning& tuning, float* prompt_grads, float* adapter_grads) = 0;
};

/// All blocks in this process.
class LocalTrainingBlocks final : public TrainingBlocks {
 public:
  explicit LocalTrainingBlocks(const BlockStack& blocks);
  void forward(std::span<PromptedBatch* const> batches, const BlockTuning& tuning, bool backward_follows) override;
  void backward(std::span<const PromptedBatch* const> inputs, std::span<std::vector<float>* const> grads,
                const BlockTuning& tuning, float* prompt_grads, float* adapter_grads) override;

 private:
  const BlockStack& blocks_;
};

/// The summed loss of a batch and its gradient.
struct BatchGradient {
  double loss_sum = 0;       ///< Σ of -log p over the scored tokens
  std::int64_t scored = 0;   ///< scored tokens
  std::vector<float> grad;   ///< d (loss_sum / scored) / d params, in flat() order
};

/// The mean loss over the scored tokens of `examples` and its gradient, the examples run as
/// micro-batches of `micro_batch`.
BatchGradient batch_gradient(const ModelEnds& ends, TrainingBlocks& blocks, const PromptParameters& params,
                             std::span<const Example* const> examples, std::int64_t micro_batch);

/// Σ of -log p over the scored tokens of `examples` and their count, with the prompt (or none).
std::pair<double, std::int64_t> score_examples(const ModelEnds& ends, TrainingBlocks& blocks,
                                               const PromptParameters* params,
                                               std::span<const Example* const> examples, std::int64_t micro_batch);

}  // namespace sepal

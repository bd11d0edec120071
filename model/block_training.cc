// Training passes of BlockStack (model/block_stack.h): the forward over packed whole sequences,
// and its backward with respect to the input (and to deep prompts), weights frozen; each block's
// by its architecture (model/arch/<name>/training.cc).
#include <algorithm>
#include <numeric>

#include "kernels/activation.h"
#include "kernels/error.h"
#include "model/arch/architectures.h"
#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "model/device_blocks.h"

namespace sepal {
namespace {

void add_prompt(const ModelConfig& c, const DeepPrompts* prompts, std::int64_t block, const Packing& pack,
                float* hidden) {
  if (!prompts || prompts->count == 0) return;
  const std::int64_t h = c.hidden_size;
  const float* values = prompts->values + block * prompts->count * h;
  for (std::int64_t start : pack.starts) {
    add_in_place(hidden + (start + prompts->offset) * h, values, prompts->count * h);
  }
}

// The architecture's training forward and backward of one block.
void block_forward(const TrainingCall& call, float* hidden) {
  if (call.config.family == ModelFamily::kBloom) return bloom_training_forward(call, hidden);
  llama_training_forward(call, hidden);
}
void block_backward(const TrainingCall& call, float* grad) {
  if (call.config.family == ModelFamily::kBloom) return bloom_training_backward(call, grad);
  llama_training_backward(call, grad);
}

}  // namespace

void BlockStack::check_training_pass(std::span<const std::int64_t> lengths, std::int64_t first, std::int64_t blocks,
                                     const DeepPrompts* prompts) const {
  if (blocks <= 0 || first < first_ || first + blocks > last_) {
    fail("blocks [", first, ", ", first + blocks, ") are not a part of the served blocks [", first_, ", ", last_, ")");
  }
  if (lengths.empty()) fail("a training pass needs at least one sequence");
  for (std::int64_t n : lengths) {
    if (n <= 0 || n > config_.max_position_embeddings) {
      fail("a sequence of ", n, " tokens; lengths must be between 1 and max_position_embeddings (",
           config_.max_position_embeddings, ")");
    }
    if (prompts && prompts->count > 0 && prompts->offset + prompts->count > n) {
      fail("deep prompts at positions [", prompts->offset, ", ", prompts->offset + prompts->count,
           ") do not fit in a sequence of ", n, " tokens");
    }
  }
  if (prompts && (prompts->count < 0 || prompts->offset < 0 || (prompts->count > 0 && !prompts->values))) {
    fail("deep prompts need values, a count >= 0 and an offset >= 0");
  }
}

void BlockStack::forward_sequences(float* hidden, std::span<const std::int64_t> lengths, std::int64_t first,
                                   std::int64_t blocks, const DeepPrompts* prompts, const BlockAdapters* adapters) const {
  check_training_pass(lengths, first, blocks, prompts);
  check_adapters(adapters, first, blocks);
  if (device_) return device_->forward_sequences(hidden, lengths, first, blocks, prompts, adapters);
  const Packing pack(lengths);
  Activations a(config_, pack.tokens);
  for (std::int64_t i = 0; i < blocks; ++i) {
    add_prompt(config_, prompts, i, pack, hidden);
    block_forward(training_call(first + i, pack, a, adapters, nullptr), hidden);
  }
}

void BlockStack::backward_sequences(const float* input, std::span<const std::int64_t> lengths, std::int64_t first,
                                    std::int64_t blocks, const DeepPrompts* prompts, float* grad,
                                    float* prompt_grads, const BlockAdapters* adapters, float* adapter_grads) const {
  check_training_pass(lengths, first, blocks, prompts);
  check_adapters(adapters, first, blocks);
  if (adapters && !adapter_grads) fail("a backward pass with adapters needs somewhere to put their gradients");
  if (device_) {
    return device_->backward_sequences(input, lengths, first, blocks, prompts, grad, prompt_grads, adapters, adapter_grads);
  }
  const std::int64_t per_block = adapters ? adapters->shape.values_per_block(config_) : 0;
  if (adapters) std::fill(adapter_grads, adapter_grads + blocks * per_block, 0.0f);
  const Packing pack(lengths);
  const std::int64_t h = config_.hidden_size, t = pack.tokens;
  // Each block's input (before its deep prompt), from one forward.
  std::vector<float> inputs(static_cast<std::size_t>(blocks * t * h));
  std::vector<float> hidden(input, input + t * h);
  Activations a(config_, t);
  a.for_backward(config_, t);
  for (std::int64_t i = 0; i < blocks; ++i) {
    std::copy(hidden.begin(), hidden.end(), inputs.begin() + i * t * h);
    if (i + 1 == blocks) break;
    add_prompt(config_, prompts, i, pack, hidden.data());
    block_forward(training_call(first + i, pack, a, adapters, nullptr), hidden.data());
  }
  const bool with_prompts = prompts && prompts->count > 0;
  for (std::int64_t i = blocks - 1; i >= 0; --i) {
    std::copy_n(inputs.begin() + i * t * h, t * h, hidden.begin());
    add_prompt(config_, prompts, i, pack, hidden.data());
    const TrainingCall call = training_call(first + i, pack, a, adapters, adapters ? adapter_grads + i * per_block : nullptr);
    block_forward(call, hidden.data());
    block_backward(call, grad);
    if (!with_prompts) continue;
    // The prompt was added to the block's input: its gradient is the input's, summed over sequences.
    float* out = prompt_grads + i * prompts->count * h;
    std::fill(out, out + prompts->count * h, 0.0f);
    for (std::int64_t start : pack.starts) add_in_place(out, grad + (start + prompts->offset) * h, prompts->count * h);
  }
}

TrainingCall BlockStack::training_call(std::int64_t block, const Packing& pack, Activations& a,
                                       const BlockAdapters* adapters, float* adapter_grads) const {
  // A session's table by its length: a sequence of one position takes the short one, and one past
  // the original context (if the model has such) the long one.
  const double* long_table = config_.long_rope_for(INT64_MAX) ? inv_freq_of(block, INT64_MAX) : nullptr;
  return TrainingCall{config_, blocks_[static_cast<std::size_t>(block - first_)], inv_freq_of(block, 1),
                      alibi_.empty() ? nullptr : alibi_.data(), pack, a, adapters, adapter_grads, long_table};
}

std::int64_t BlockStack::training_working_bytes(std::int64_t tokens, std::int64_t blocks) const {
  const ModelConfig& c = config_;
  const std::int64_t dense = c.any_dense_block() ? 3 * c.intermediate_size : 0;
  // A sparse MLP keeps each choice's gate, up and output, its probabilities, and its passes' buffers.
  const std::int64_t k = c.experts_per_token, inter = c.moe_intermediate_size;
  const std::int64_t experts = c.mixture_of_experts() ? k * (2 * inter + c.hidden_size) + 2 * c.num_experts + 6 * inter + 5 * c.hidden_size : 0;
  const std::int64_t activations = 4 * c.hidden_size + 2 * c.q_size() + 2 * c.kv_size() + dense + experts;
  const std::int64_t backward = dense + 2 * c.hidden_size + 3 * c.q_size() + 6 * c.kv_size();
  const std::int64_t pass_io = (blocks + 3) * c.hidden_size;  // each block's input, the input, grad, hidden
  const std::int64_t int8_copies = 5 * std::max(c.hidden_size, c.widest_mlp()) / 4;
  return tokens * (activations + backward + pass_io + int8_copies + 2 * c.kv_size()) *
         static_cast<std::int64_t>(sizeof(float));
}

}  // namespace sepal

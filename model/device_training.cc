// Training passes of blocks on a device (model/device_blocks.h): block_training.cc's forward and
// backward over packed whole sequences, with each block's by its architecture
// (model/arch/<name>/device_training.cc). Host rows cross to the device once in and once out,
// the deep prompts and adapters once in, the prompts' gradients once out per block and the
// adapters' once out per pass.
#include <vector>

#include "kernels/error.h"
#include "model/arch/architectures.h"
#include "model/arch/device_training_parts.h"
#include "model/device_blocks.h"

namespace sepal {
namespace {

// Adds block `block`'s deep prompt (values in the backend's memory, [blocks, count, hidden]) at
// each sequence's prompt positions.
void add_prompt(Backend& b, const ModelConfig& c, const DeepPrompts* prompts, const float* values, std::int64_t block,
                const Packing& pack, float* hidden) {
  if (!prompts || prompts->count == 0) return;
  const std::int64_t h = c.hidden_size;
  for (std::int64_t start : pack.starts) {
    b.add_in_place(hidden + (start + prompts->offset) * h, values + block * prompts->count * h, prompts->count * h);
  }
}

}  // namespace

void DeviceBlockStack::training_block(std::int64_t layer, const Packing& pack, const DeviceActivations& a,
                                      const DeviceAdapters* adapters, float* hidden, float* grad,
                                      float* adapter_grads) const {
  // A sequence's table by its length, as BlockStack::training_call picks it.
  const double* long_table = config_.long_rope_for(INT64_MAX) ? inv_freq_of(layer, INT64_MAX) : nullptr;
  const DeviceTrainingCall call{config_, blocks_[static_cast<std::size_t>(layer - first_)], *backend_, inv_freq_of(layer, 1),
                                long_table, static_cast<const float*>(alibi_.get()), pack, a, adapters, adapter_grads};
  const bool bloom = config_.family == ModelFamily::kBloom;
  if (bloom) bloom_device_training_forward(call, hidden);
  else llama_device_training_forward(call, hidden);
  if (!grad) return;
  if (bloom) bloom_device_training_backward(call, grad);
  else llama_device_training_backward(call, grad);
}

namespace {

// A pass's adapters with their values in the backend's memory.
struct PassAdapters {
  std::shared_ptr<void> memory;
  DeviceAdapters adapters;
  PassAdapters(Backend& b, const ModelConfig& c, const BlockAdapters* host) {
    if (!host) return;
    memory = b.upload(host->values, host->blocks * host->shape.values_per_block(c));
    adapters = DeviceAdapters{host, static_cast<const float*>(memory.get())};
  }
  const DeviceAdapters* get() const { return adapters.host ? &adapters : nullptr; }
  std::int64_t rank() const { return adapters.host && adapters.host->shape.method == AdapterMethod::kLora ? adapters.host->shape.rank : 0; }
};

}  // namespace

void DeviceBlockStack::forward_sequences(float* hidden, std::span<const std::int64_t> lengths, std::int64_t first,
                                         std::int64_t blocks, const DeepPrompts* prompts,
                                         const BlockAdapters* adapters) const {
  SEPAL_CHECK(first >= first_ && first + blocks <= last_ && blocks > 0);
  const Packing pack(lengths);
  const std::int64_t h = config_.hidden_size, t = pack.tokens;
  Backend& b = *backend_;
  const std::lock_guard lock(b.turn());
  const PassAdapters on_device(b, config_, adapters);
  const DeviceActivations a(b, config_, pack, false, adapters != nullptr, on_device.rank());
  const auto rows = b.upload(hidden, t * h);
  std::shared_ptr<void> prompt_values;
  if (prompts && prompts->count > 0) prompt_values = b.upload(prompts->values, blocks * prompts->count * h);
  float* x = static_cast<float*>(rows.get());
  for (std::int64_t i = 0; i < blocks; ++i) {
    add_prompt(b, config_, prompts, static_cast<const float*>(prompt_values.get()), i, pack, x);
    training_block(first + i, pack, a, on_device.get(), x, nullptr, nullptr);
  }
  b.copy_out(hidden, x, t * h * 4);
}

void DeviceBlockStack::backward_sequences(const float* input, std::span<const std::int64_t> lengths, std::int64_t first,
                                          std::int64_t blocks, const DeepPrompts* prompts, float* grad,
                                          float* prompt_grads, const BlockAdapters* adapters,
                                          float* adapter_grads) const {
  SEPAL_CHECK(first >= first_ && first + blocks <= last_ && blocks > 0);
  SEPAL_CHECK(!adapters || adapter_grads, "a backward pass with adapters needs somewhere to put their gradients");
  const Packing pack(lengths);
  const std::int64_t h = config_.hidden_size, t = pack.tokens;
  Backend& b = *backend_;
  const std::lock_guard lock(b.turn());
  const PassAdapters on_device(b, config_, adapters);
  const DeviceActivations a(b, config_, pack, true, adapters != nullptr, on_device.rank());
  // The adapters' gradients of blocks [first, first + blocks), zero before the pass.
  const std::int64_t per_block = adapters ? adapters->shape.values_per_block(config_) : 0;
  const auto adapter_grad_memory = b.allocate(blocks * per_block * 4);
  auto* d_adapters = static_cast<float*>(adapter_grad_memory.get());
  b.zero(d_adapters, blocks * per_block * 4);
  // Each block's input (before its deep prompt), from one forward; then each block's forward
  // again and its backward, last block first.
  const auto inputs_memory = b.allocate(blocks * t * h * 4);
  float* inputs = static_cast<float*>(inputs_memory.get());
  const auto hidden_memory = b.upload(input, t * h);
  float* hidden = static_cast<float*>(hidden_memory.get());
  const auto grad_memory = b.upload(grad, t * h);
  float* d = static_cast<float*>(grad_memory.get());
  const bool with_prompts = prompts && prompts->count > 0;
  std::shared_ptr<void> prompt_memory, prompt_grad_memory;
  std::vector<float> zeros;
  if (with_prompts) {
    prompt_memory = b.upload(prompts->values, blocks * prompts->count * h);
    prompt_grad_memory = b.allocate(prompts->count * h * 4);
    zeros.assign(static_cast<std::size_t>(prompts->count * h), 0.0f);
  }
  const auto* prompt_values = static_cast<const float*>(prompt_memory.get());
  for (std::int64_t i = 0; i < blocks; ++i) {
    b.copy(inputs + i * t * h, hidden, t * h * 4);
    if (i + 1 == blocks) break;
    add_prompt(b, config_, prompts, prompt_values, i, pack, hidden);
    training_block(first + i, pack, a, on_device.get(), hidden, nullptr, nullptr);
  }
  for (std::int64_t i = blocks - 1; i >= 0; --i) {
    b.copy(hidden, inputs + i * t * h, t * h * 4);
    add_prompt(b, config_, prompts, prompt_values, i, pack, hidden);
    training_block(first + i, pack, a, on_device.get(), hidden, d, d_adapters + i * per_block);
    if (!with_prompts) continue;
    // The prompt was added to the block's input: its gradient is the input's, summed over the
    // sequences in their order.
    auto* sum = static_cast<float*>(prompt_grad_memory.get());
    const std::int64_t count = prompts->count * h;
    b.copy_in(sum, zeros.data(), count * 4);
    for (std::int64_t start : pack.starts) b.add_in_place(sum, d + (start + prompts->offset) * h, count);
    b.copy_out(prompt_grads + i * count, sum, count * 4);
  }
  b.copy_out(grad, d, t * h * 4);
  if (adapters) b.copy_out(adapter_grads, d_adapters, blocks * per_block * 4);
}

}  // namespace sepal

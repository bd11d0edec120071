#pragma once
// Blocks on a device (kernels/backend.h): a BlockStack's weights copied into a backend's memory,
// each session's KV cache there too (a KvCache on_device()), and the forward of decode and prompts
// run by the backend's ops. On a GPU the hidden states cross to the host once per call, in and
// out; nothing else does. A BlockStack placed on a device (BlockStack::place_on) runs through one
// of these; the same code runs on the CPU backend, where it must give the CPU blocks' own results
// (tests/model/device_blocks_test.cc), so the forward is checked here even without a GPU.
//
// What runs on a device: the forward of decode, prompts, token trees (speculative decoding) and
// batches of several sessions' steps, with deep prompts and PEQA or LoRA adapters, and the
// training passes (forward and input- and adapter-gradient backward over packed sequences, deep
// prompts included), f32, bf16 and int8 (LLM.int8()), Llama-family and BLOOM blocks.
//
// Thread-safety: immutable after construction but for its working buffers; forward() may be
// called from any thread: it holds the backend's turn() (stacks sharing a backend, such as a
// host's old and newly loaded blocks, take turns).

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "model/block_stack.h"
#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace sepal {

struct Packing;            // model/arch/training_parts.h
struct DeviceActivations;  // model/arch/device_training_parts.h
struct DeviceAdapters;     // model/arch/device_parts.h

/// A vector of f32 weights in a backend's memory (null where the block has none).
struct DeviceVector {
  const float* data = nullptr;
  std::shared_ptr<void> storage;
};

/// One block's weights in a backend's memory (model/weights.h: BlockWeights).
struct DeviceBlockWeights {
  std::int64_t layer = 0;  ///< the block's index in the model
  DeviceVector input_norm, post_attention_norm, input_norm_bias, post_attention_norm_bias;
  DeviceMatrix q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
  DeviceVector q_bias, k_bias, v_bias, o_bias, up_bias, down_bias;
  DeviceVector q_norm, k_norm;  ///< Qwen3
  DeviceVector attention_out_norm, mlp_out_norm;  ///< Gemma 2
};

/// Working buffers of a forward of up to `rows` rows in a backend's memory, with LoRA adapters of
/// up to `rank` (their products' two steps in lora_u and lora_v).
struct DeviceScratch {
  std::int64_t rows = 0, rank = 0;
  float *hidden = nullptr, *normed = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr,
        *proj = nullptr, *gate = nullptr, *up = nullptr, *lora_u = nullptr, *lora_v = nullptr;
  std::int64_t* positions = nullptr;
  std::shared_ptr<void> storage;
};

class DeviceBlockStack {
 public:
  /// Copies blocks [first, first + weights.size()) into `backend`'s memory. Throws sepal::Error in
  /// one line when the backend does not hold their type or runs out of memory.
  DeviceBlockStack(const ModelConfig& config, std::int64_t first, const std::vector<BlockWeights>& weights,
                   std::span<const double> inv_freq, std::span<const float> alibi, std::shared_ptr<Backend> backend);

  std::int64_t first() const { return first_; }
  std::int64_t last() const { return last_; }
  Backend& backend() const { return *backend_; }
  /// Bytes of weights in the backend's memory.
  std::int64_t weight_bytes() const { return weight_bytes_; }

  /// A cache in the backend's memory for blocks [first, last) of the stack and `capacity`
  /// positions (checked by the caller), its blocks with a window (`windows`, one per block, or
  /// empty) keeping only what those reach. Throws sepal::Error when the device is out of memory.
  KvCache new_cache(std::int64_t capacity, std::int64_t first, std::int64_t last,
                    std::vector<std::int64_t> windows = {}) const;

  /// Runs host rows hidden[n, hidden_size] in place through blocks [first, first +
  /// cache.blocks()) as the cache's next n positions (checked by the caller), and advances it;
  /// with deep prompts and adapters (each may be null; checked by the caller) as
  /// BlockStack::forward takes them. Their values are copied to the device with each call (into
  /// memory the stack keeps for it).
  void forward(float* hidden, std::int64_t n, KvCache& cache, std::int64_t first, const DeepPrompts* prompts = nullptr,
               const BlockAdapters* adapters = nullptr) const;

  /// BlockStack::forward_tree's step (checked by the caller; the cache reserved for its nodes):
  /// nodes [nodes - n, nodes) of the tree `parents` at `positions` (each start + its depth).
  void forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents,
                    std::span<const std::int64_t> positions, KvCache& cache, std::int64_t first,
                    const BlockAdapters* adapters) const;

  /// BlockStack::forward_batch's steps (checked by the caller), each with its deep prompts and
  /// adapters, through blocks [first, first + their caches' blocks): one pass for all of them,
  /// each step's rows ending as forward() gives them alone (bit for bit on the CPU backend).
  void forward_batch(std::span<const BatchedStep> steps, std::int64_t first) const;

  /// BlockStack::forward_sequences and backward_sequences (checked by the caller) through blocks
  /// [first, first + blocks): host rows, deep prompts and adapters in, rows and gradients out,
  /// everything else on the device; on the CPU backend the CPU passes' bits
  /// (model/device_training.cc).
  void forward_sequences(float* hidden, std::span<const std::int64_t> lengths, std::int64_t first, std::int64_t blocks,
                         const DeepPrompts* prompts, const BlockAdapters* adapters) const;
  void backward_sequences(const float* input, std::span<const std::int64_t> lengths, std::int64_t first,
                          std::int64_t blocks, const DeepPrompts* prompts, float* grad, float* prompt_grads,
                          const BlockAdapters* adapters, float* adapter_grads) const;

 private:
  // Block `layer`'s RoPE inverse frequencies in the backend's memory (model/block_stack.h).
  const double* inv_freq_of(std::int64_t layer, std::int64_t session_positions) const;
  // One block's training pass: its forward, and with `grad` its backward after it (adding its
  // adapters' gradients to adapter_grads).
  void training_block(std::int64_t layer, const Packing& pack, const DeviceActivations& a, const DeviceAdapters* adapters,
                      float* hidden, float* grad, float* adapter_grads) const;

  ModelConfig config_;
  std::int64_t first_ = 0, last_ = 0, weight_bytes_ = 0;
  std::shared_ptr<Backend> backend_;
  std::vector<DeviceBlockWeights> blocks_;
  std::shared_ptr<void> inv_freq_, alibi_;
  mutable DeviceScratch scratch_;  // grown to the largest call; guarded by the backend's turn()
  // Sessions' deep prompts and adapter values for one call, grown as needed; guarded by turn().
  mutable std::shared_ptr<void> staging_;
  mutable std::int64_t staging_floats_ = 0;

  float* staging(std::int64_t floats) const;

  void ensure_scratch(std::int64_t rows, std::int64_t rank = 0) const;
};

}  // namespace sepal

#pragma once
// Blocks on a device (kernels/backend.h): a BlockStack's weights copied into a backend's memory,
// each session's KV cache there too, and the forward of decode and prompts run by the backend's
// ops. On a GPU the hidden states cross to the host once per call, in and out; nothing else does.
// The same code runs on the CPU backend, where it must give BlockStack's own results
// (tests/model/device_blocks_test.cc): the forward is checked here even without a GPU.
//
// What runs on a device: the forward of decode and prompts, f32, bf16 and int8 (LLM.int8()),
// Llama-family and BLOOM blocks. What does not (yet): token trees, batches of several sessions,
// deep prompts, adapters and the training passes; they stay on the CPU's BlockStack.
//
// Thread-safety: a DeviceBlockStack is immutable after construction; forward() may be called from
// any thread (calls take turns on the backend, which runs one at a time).

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/backend.h"
#include "model/block_stack.h"
#include "model/generation.h"

namespace sepal {

/// A vector of f32 weights in a backend's memory (null where the block has none).
struct DeviceVector {
  const float* data = nullptr;
  std::shared_ptr<void> storage;
};

/// One block's weights in a backend's memory (model/weights.h: BlockWeights).
struct DeviceBlockWeights {
  DeviceVector input_norm, post_attention_norm, input_norm_bias, post_attention_norm_bias;
  DeviceMatrix q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
  DeviceVector q_bias, k_bias, v_bias, o_bias, up_bias, down_bias;
};

/// Working buffers of a forward of up to `rows` rows in a backend's memory.
struct DeviceScratch {
  std::int64_t rows = 0;
  float *hidden = nullptr, *normed = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr,
        *proj = nullptr, *gate = nullptr, *up = nullptr;
  std::int64_t* positions = nullptr;
  std::shared_ptr<void> storage;
};

/// One session's keys and values for every block of a DeviceBlockStack, in the backend's memory,
/// laid out as KvCache's, and its working buffers.
class DeviceSession {
 public:
  std::int64_t length() const { return length_; }
  std::int64_t capacity() const { return capacity_; }
  /// Bytes of device memory the session holds.
  std::int64_t bytes() const { return bytes_; }

 private:
  friend class DeviceBlockStack;
  std::int64_t length_ = 0, capacity_ = 0, bytes_ = 0, blocks_ = 0, block_stride_ = 0;
  std::shared_ptr<void> cache_;  // keys of every block, then values
  DeviceScratch scratch_;
};

class DeviceBlockStack {
 public:
  /// Copies the weights of `blocks` into `backend`'s memory (the BlockStack may go afterwards).
  /// Throws sepal::Error in one line when the backend does not hold their type or runs out of
  /// memory.
  DeviceBlockStack(const BlockStack& blocks, std::shared_ptr<Backend> backend);

  std::int64_t first() const { return first_; }
  std::int64_t last() const { return last_; }
  const ModelConfig& config() const { return config_; }
  Backend& backend() const { return *backend_; }
  /// Bytes of weights in the backend's memory.
  std::int64_t weight_bytes() const { return weight_bytes_; }
  /// Bytes of a session of `capacity` positions (its cache) in the backend's memory.
  std::int64_t session_bytes(std::int64_t capacity) const;

  /// A session of up to `capacity` positions (1 to max_position_embeddings). Throws sepal::Error
  /// when the device runs out of memory.
  DeviceSession new_session(std::int64_t capacity) const;

  /// Runs host rows hidden[n, hidden_size] through every block in place, as the session's next n
  /// positions, and advances it. Throws sepal::Error, leaving the session unchanged, when the
  /// positions would pass its capacity.
  void forward(float* hidden, std::int64_t n, DeviceSession& session) const;

 private:
  ModelConfig config_;
  std::int64_t first_ = 0, last_ = 0, weight_bytes_ = 0;
  std::shared_ptr<Backend> backend_;
  std::vector<DeviceBlockWeights> blocks_;
  std::shared_ptr<void> inv_freq_, alibi_;
  mutable std::mutex turn_;  // one forward at a time on the backend

  void ensure_scratch(DeviceSession& session, std::int64_t rows) const;
};

/// A generation's blocks on a device (model/generation.h): decode and prompts; no token trees.
class DevicePipeline final : public BlockPipeline {
 public:
  DevicePipeline(const DeviceBlockStack& blocks, std::int64_t capacity);
  void forward(float* hidden, std::int64_t n) override { blocks_.forward(hidden, n, session_); }
  std::int64_t length() const override { return session_.length(); }

 private:
  const DeviceBlockStack& blocks_;
  DeviceSession session_;
};

}  // namespace sepal

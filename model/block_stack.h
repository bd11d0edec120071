#pragma once
// A contiguous range of decoder blocks [first, last) of a model, runnable on its own: hidden
// states in, hidden states out, with a per-session KV cache. This is what a block host serves
// and what a single process chains from embeddings to the LM head.
//
// Thread-safety: immutable after load; forward() may run concurrently on distinct caches.

#include <cstdint>
#include <vector>

#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace sepal {

/// Blocks [first, last) of a Llama-family model.
class BlockStack {
 public:
  /// Loads blocks [first, last) as `loading` says, reading no other block's weights.
  /// Throws sepal::Error for an empty or out-of-range range or bad tensors.
  static BlockStack load(const Checkpoint& checkpoint, const ModelConfig& config,
                         std::int64_t first, std::int64_t last,
                         const WeightLoading& loading);

  std::int64_t first() const { return first_; }
  std::int64_t last() const { return last_; }
  const ModelConfig& config() const { return config_; }
  /// Bytes of weights held in memory for these blocks.
  std::int64_t weight_bytes() const;
  /// Memory one forward() of n tokens works in, besides weights and cache: its scratch buffers,
  /// the int8 activation copies, and a step's input and output on a host (an upper estimate).
  std::int64_t step_working_bytes(std::int64_t n) const;

  /// A cache for one session of up to `capacity` positions (at most max_position_embeddings)
  /// over every block of the stack.
  KvCache new_cache(std::int64_t capacity) const;
  /// A cache for a session that runs only blocks [first, last), a part of the stack's range.
  KvCache new_cache(std::int64_t capacity, std::int64_t first, std::int64_t last) const;

  /// Runs hidden[n, hidden_size] through the blocks in place, as positions
  /// [cache.length(), cache.length() + n), then advances the cache. Throws sepal::Error, leaving
  /// the cache unchanged, when the positions would pass the cache capacity.
  void forward(float* hidden, std::int64_t n, KvCache& cache) const;
  /// The same through blocks [first, first + cache.blocks()) only, a part of the stack's range.
  void forward(float* hidden, std::int64_t n, KvCache& cache, std::int64_t first) const;

 private:
  ModelConfig config_;
  std::int64_t first_ = 0, last_ = 0;
  std::vector<BlockWeights> blocks_;
  std::vector<double> inv_freq_;
};

}  // namespace sepal

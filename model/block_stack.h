#pragma once
// A contiguous range of decoder blocks [first, last) of a model, runnable on its own: hidden
// states in, hidden states out, with a per-session KV cache. This is what a block host serves
// and what a single process chains from embeddings to the LM head.
//
// Thread-safety: immutable after load; forward() may run concurrently on distinct caches.

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/rope_tables.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace sepal {

/// Trainable vectors added to the input of every block of a training pass (deep prompt tuning):
/// block i of the pass gets values[i, k, :] added at position offset + k of every sequence, for
/// k < count. values is [blocks of the pass, count, hidden_size].
struct TrainingCall;
struct BlockAdapters;
struct Packing;
struct Activations;
class DeviceBlockStack;

struct DeepPrompts {
  const float* values = nullptr;
  std::int64_t count = 0;
  std::int64_t offset = 0;
};

/// One session's step in BlockStack::forward_batch.
struct BatchedStep {
  float* hidden = nullptr;  ///< [n, hidden_size], in place
  std::int64_t n = 0;
  KvCache* cache = nullptr;
  const DeepPrompts* prompts = nullptr;       ///< may be null
  const BlockAdapters* adapters = nullptr;    ///< may be null
};

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
  /// Bytes of weights held in memory (a device's, once placed) for these blocks.
  std::int64_t weight_bytes() const;

  /// Moves the weights into `backend`'s memory (a GPU's: model/device_blocks.h) and frees the host
  /// copies: from now on caches are made there and forward() and forward_batch() run there. Token
  /// trees, deep prompts, adapters and the training passes then refuse in one line (they run on
  /// the CPU only). Throws sepal::Error, leaving the stack on the CPU, when the
  /// backend cannot hold the weights.
  void place_on(std::shared_ptr<Backend> backend);
  /// The device the blocks run on: the CPU unless placed.
  Device device() const;
  /// The backend they were placed on; null on the CPU.
  Backend* backend() const;
  /// Memory one forward() of n tokens works in, besides weights and cache: its scratch buffers,
  /// the int8 activation copies, and a step's input and output on a host (an upper estimate).
  std::int64_t step_working_bytes(std::int64_t n) const;

  /// Element type of the sessions' caches (WeightLoading::kv_dtype; f32 on a device).
  DType kv_dtype() const { return kv_dtype_; }
  /// A cache for one session of up to `capacity` positions (at most max_position_embeddings)
  /// over every block of the stack.
  KvCache new_cache(std::int64_t capacity) const;
  /// A cache for a session that runs only blocks [first, last), a part of the stack's range. Its
  /// blocks with a sliding window keep only what the window reaches, unless `keep` says kAll (on
  /// a device, every position is kept).
  KvCache new_cache(std::int64_t capacity, std::int64_t first, std::int64_t last, KvKeep keep = KvKeep::kWindow) const;
  /// The sliding window of each block of [first, last) (0: none).
  std::vector<std::int64_t> windows(std::int64_t first, std::int64_t last) const;

  /// Runs hidden[n, hidden_size] through the blocks in place, as positions
  /// [cache.length(), cache.length() + n), then advances the cache. Throws sepal::Error, leaving
  /// the cache unchanged, when the positions would pass the cache capacity.
  void forward(float* hidden, std::int64_t n, KvCache& cache) const;
  /// The same through blocks [first, first + cache.blocks()) only, a part of the stack's range,
  /// with deep prompts (may be null; values for those blocks) added to the input of each block at
  /// the positions of [cache.length(), cache.length() + n) that they cover.
  /// With `adapters` (model/block_adapters.h; covering those blocks), each block's projections
  /// are adapted.
  void forward(float* hidden, std::int64_t n, KvCache& cache, std::int64_t first,
               const DeepPrompts* prompts = nullptr, const BlockAdapters* adapters = nullptr) const;

  /// The steps of several sessions at once (a host batching its sessions' decode steps), through
  /// blocks [first, first + blocks), a part of the stack's range that every step's cache covers:
  /// each step's rows hidden[n, hidden_size] run in place as its session's next n positions, with
  /// its deep prompts and adapters (each may be null). Every step ends as forward() gives it alone,
  /// bit for bit: the products run in calls of at most kStreamingMaxTokens rows, which give each
  /// row the bits it gets alone, and a step of that many rows alone runs in one such call. The
  /// weights are read once per kStreamingMaxTokens rows instead of once per step. Throws
  /// sepal::Error, changing no cache, for a step of more than kStreamingMaxTokens rows, a cache of
  /// other blocks or given twice, positions past a cache's capacity, or adapters that do not fit.
  void forward_batch(std::span<const BatchedStep> steps, std::int64_t first, std::int64_t blocks) const;

  /// A step of a token tree (speculative decoding) through blocks [first_block, first_block +
  /// cache.blocks()): hidden[n, hidden_size] are the tree's last n nodes, of parents.size() in
  /// all; parents[i] is node i's parent (an earlier node) or -1 for a node that follows the
  /// session's sequence. Node i is stored in the cache slot of position length() + i, sits at position length() +
  /// its depth and attends to the sequence and its own ancestors (kernels/attention.h:
  /// attention_tree), so its output equals, bit for bit, that of the same path run as a sequence.
  /// The cache's length does not change: KvCache::keep_path then keeps one path of the tree.
  /// Earlier nodes must already be stored (by earlier calls for the same tree). Throws sepal::Error
  /// for a malformed tree or one that does not fit in the cache.
  void forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents, KvCache& cache,
                    std::int64_t first_block, const BlockAdapters* adapters = nullptr) const;

  // ---- training passes (model/block_training.cc) ----
  // A batch of whole sequences packed one after another: hidden[T, hidden_size] with T the sum of
  // `lengths`; each sequence starts at position 0 and attends only to itself. No cache. The pass
  // runs blocks [first, first + blocks), a part of the stack's range; `prompts` may be null.
  // Results do not depend on the thread count. Throw sepal::Error for a bad range, an empty or
  // non-positive length, or deep prompts that do not fit inside every sequence.

  /// Runs the sequences through the blocks in place.
  void forward_sequences(float* hidden, std::span<const std::int64_t> lengths, std::int64_t first,
                         std::int64_t blocks, const DeepPrompts* prompts, const BlockAdapters* adapters = nullptr) const;
  /// The backward of forward_sequences: given the pass's `input` (as forward_sequences got it) and
  /// `grad` = d loss / d output, overwrites grad with d loss / d input and, with prompts, writes
  /// d loss / d prompts into prompt_grads [blocks, count, hidden_size]. The forward is recomputed
  /// from `input` (weights and activations are never kept between calls), one block at a time:
  /// the cost is about three forward passes, the memory one block's activations plus each
  /// block's input.
  /// With `adapters`, adapter_grads [blocks × values per block] receives d loss / d values of
  /// blocks [first, first + blocks) (overwritten).
  void backward_sequences(const float* input, std::span<const std::int64_t> lengths, std::int64_t first,
                          std::int64_t blocks, const DeepPrompts* prompts, float* grad,
                          float* prompt_grads, const BlockAdapters* adapters = nullptr,
                          float* adapter_grads = nullptr) const;
  /// Memory one training pass of `tokens` tokens through `blocks` blocks works in (an upper estimate).
  std::int64_t training_working_bytes(std::int64_t tokens, std::int64_t blocks) const;

  /// The weights of block `layer` (first() <= layer < last()), e.g. to copy them to a device.
  const BlockWeights& block_weights(std::int64_t layer) const;
  /// RoPE's inverse frequencies (model/rope_tables.h: rope_dims() / 2 of them, then Gemma 3's
  /// sliding blocks' own and LongRoPE's long factors' where the model has them) and, for BLOOM,
  /// ALiBi's slope of each head (empty otherwise).
  std::span<const double> inverse_frequencies() const { return inv_freq_; }
  /// Block `layer`'s RoPE inverse frequencies for a session of `session_positions` positions.
  const double* inv_freq_of(std::int64_t layer, std::int64_t session_positions) const {
    return inv_freq_.data() + rope_table_offset(config_, layer, session_positions);
  }
  std::span<const float> alibi() const { return alibi_; }

 private:
  ModelConfig config_;
  std::int64_t first_ = 0, last_ = 0;
  std::vector<BlockWeights> blocks_;
  std::vector<double> inv_freq_;
  std::vector<float> alibi_;  ///< BLOOM: ALiBi slope of each head
  DType kv_dtype_ = DType::kF32;  ///< element type of the caches new_cache() makes on the CPU
  std::shared_ptr<const DeviceBlockStack> device_;  ///< once placed on a device

  /// Throws sepal::Error saying `what` runs on the CPU only, when the blocks are on a device.
  void check_on_cpu(const char* what) const;

  void check_training_pass(std::span<const std::int64_t> lengths, std::int64_t first, std::int64_t blocks,
                           const DeepPrompts* prompts) const;
  /// Block `block`'s training pass over `pack` (model/arch/training_parts.h).
  TrainingCall training_call(std::int64_t block, const Packing& pack, Activations& a, const BlockAdapters* adapters,
                             float* adapter_grads) const;
  /// Throws sepal::Error unless `adapters` (may be null) cover blocks [first, first + count) and fit the model.
  void check_adapters(const BlockAdapters* adapters, std::int64_t first, std::int64_t count) const;
};

}  // namespace sepal

#pragma once
// Keys and values of one inference session for a contiguous range of blocks.
//
// Thread-safety: not thread-safe; one session is advanced by one thread at a time.

#include <cstdint>
#include <memory>
#include <span>

#include "kernels/attention.h"

namespace sepal {

/// Per-block key and value arrays of one session, laid out [kv_heads, capacity, head_dim] so
/// that one head's history is contiguous. Positions [0, length()) are valid. The arrays are in
/// host memory, or in a device's (on_device(): made by a BlockStack placed on a device; only its
/// backend's ops may touch them). Elements are f32, or bf16 in host memory (kernels/attention.h:
/// KvArray).
///
/// A session may hold up to max_positions(); a host-memory cache holds capacity() of them now and
/// grows (reserve()) as positions come, so that memory follows the positions used: with the
/// whole length allocated up front, every head's first rows touch a page of their own, and a
/// short session made the kernel zero fifteen times the bytes it used. A device's cache is
/// allocated whole.
class KvCache {
 public:
  /// A cache for `blocks` blocks holding up to `max_positions` positions, of `dtype` elements
  /// (f32 or bf16; sepal::Error otherwise), in host memory.
  KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t max_positions,
          DType dtype = DType::kF32);
  /// An f32 cache of `max_positions` positions in `device_memory` (at least bytes() of a device's
  /// memory, which the cache keeps).
  KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t max_positions,
          std::shared_ptr<void> device_memory);
  KvCache(KvCache&&) noexcept = default;
  KvCache& operator=(KvCache&&) noexcept = default;
  KvCache(const KvCache&) = delete;  // one session's memory; sessions are moved, not copied
  KvCache& operator=(const KvCache&) = delete;

  std::int64_t blocks() const { return blocks_; }
  /// Positions the arrays hold now: the stride between heads. Grows with reserve().
  std::int64_t capacity() const { return capacity_; }
  /// Positions the session may hold.
  std::int64_t max_positions() const { return max_positions_; }
  std::int64_t kv_heads() const { return kv_heads_; }
  std::int64_t head_dim() const { return head_dim_; }
  /// Number of positions already computed.
  std::int64_t length() const { return length_; }
  /// Bytes of memory the cache holds now (capacity() positions).
  std::int64_t bytes() const;
  /// Whether the arrays are in a device's memory.
  bool on_device() const { return on_device_; }
  /// Element type: f32 or bf16.
  DType dtype() const { return dtype_; }
  /// Bytes one position takes over every block (keys and values).
  static std::int64_t bytes_per_position(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim,
                                         DType dtype);

  /// Key array of block `block` (0-based within the range).
  KvArray keys(std::int64_t block) { return {bytes_ + block * block_bytes(), dtype_}; }
  /// Value array of block `block`.
  KvArray values(std::int64_t block) { return {bytes_ + (blocks_ + block) * block_bytes(), dtype_}; }
  /// The same as f32 pointers, for an f32 cache only (a device's caches are).
  float* keys_f32(std::int64_t block);
  float* values_f32(std::int64_t block);

  /// Makes room for positions [0, positions), at most max_positions(): moves the arrays to a
  /// larger allocation (at least twice the capacity) when they hold fewer. Slots past length()
  /// move too (a token tree's rows wait there). Invalidates the arrays' addresses when it moves
  /// them; the caller reserves before taking them for a step.
  void reserve(std::int64_t positions);
  /// Marks positions [0, length) as valid; `length` must not exceed capacity.
  void set_length(std::int64_t length);
  /// Forgets positions from `length` on (rollback); `length` must not exceed the current length.
  void truncate(std::int64_t length);
  /// After a tree step (BlockStack::forward_tree): appends the tree nodes `path` (increasing node
  /// indices, each the parent of the next) to the sequence, moving each node's keys and values
  /// from slot length() + node to the next position, and forgets the other nodes. Throws
  /// sepal::Error when the path does not fit, and for a cache on a device (token trees run on the
  /// CPU).
  void keep_path(std::span<const std::int32_t> path);

 private:
  std::int64_t block_bytes() const {
    return kv_heads_ * capacity_ * head_dim_ * static_cast<std::int64_t>(dtype_size(dtype_));
  }

  std::int64_t blocks_, kv_heads_, head_dim_, max_positions_, capacity_;
  DType dtype_ = DType::kF32;
  std::int64_t length_ = 0;
  bool on_device_ = false;
  std::shared_ptr<void> memory_;  // every block's keys, then every block's values; huge pages (model/huge_buffer.h)
  std::byte* bytes_ = nullptr;
};

}  // namespace sepal

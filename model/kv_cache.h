#pragma once
// Keys and values of one inference session for a contiguous range of blocks.
//
// Thread-safety: not thread-safe; one session is advanced by one thread at a time.

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/attention.h"
#include "kernels/backend.h"

namespace sepal {

/// What a host-memory cache keeps of the blocks that have a sliding window.
enum class KvKeep {
  kWindow,  ///< only the positions a coming step's window reaches: memory follows the window
  kAll,     ///< every position, so that truncate() may go back anywhere (a draft's guesses)
};

/// Per-block key and value arrays of one session, each laid out [kv_heads, capacity, head_dim]
/// so that one head's history is contiguous. Positions [0, length()) have been computed. The
/// arrays are in host memory, or in a device's (on_device(): made by a BlockStack placed on a
/// device; only its backend's ops may touch them). Elements are f32, or bf16 in host memory
/// (kernels/attention.h: KvArray).
///
/// A session may hold up to max_positions(); a host-memory cache holds capacity(b) of them now
/// and grows (reserve()) as positions come, so that memory follows the positions used: with the
/// whole length allocated up front, every head's first rows touch a page of their own, and a
/// short session made the kernel zero fifteen times the bytes it used. A device's cache is
/// allocated whole when it is made (most_bytes() with steps of kDeviceStepRows), so that a
/// session admitted never runs out of device memory later: every position for a block without a
/// window, and for one with a window the room its steps need, its positions moved down there.
///
/// A block with a sliding window of W (Mistral, Gemma 2 and 3's local blocks), in a host-memory
/// cache made with KvKeep::kWindow, keeps only the positions the next step's queries reach: slot 0
/// of its arrays holds position held_from(b), and reserve() drops the positions before
/// length() - W + 1, moving the rest down (once every W positions or more) or into arrays of about
/// twice the window (growing for a long step, shrinking after it). Its memory is then bounded
/// by most_bytes(), whatever the session's length. truncate() cannot go back past what such a
/// block dropped (earliest_length()).
class KvCache {
 public:
  /// A cache for `blocks` blocks holding up to `max_positions` positions, of `dtype` elements
  /// (f32 or bf16; sepal::Error otherwise), in host memory. `windows`: each block's sliding
  /// window (0: none), or empty for none; with KvKeep::kWindow those blocks keep only what their
  /// windows reach.
  KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t max_positions,
          DType dtype = DType::kF32, std::vector<std::int64_t> windows = {}, KvKeep keep = KvKeep::kWindow);
  /// An f32 cache of `max_positions` positions in `backend`'s memory, whose blocks with a window
  /// (`windows` as above) keep only what it reaches, for steps of at most kDeviceStepRows
  /// positions. Throws sepal::Error in one line when the device is out of memory.
  KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t max_positions,
          std::shared_ptr<Backend> backend, std::vector<std::int64_t> windows = {});

  /// The most positions one step adds to a device's cache (longer steps go in parts of it).
  static constexpr std::int64_t kDeviceStepRows = 512;
  KvCache(KvCache&&) noexcept = default;
  KvCache& operator=(KvCache&&) noexcept = default;
  KvCache(const KvCache&) = delete;  // one session's memory; sessions are moved, not copied
  KvCache& operator=(const KvCache&) = delete;

  std::int64_t blocks() const { return static_cast<std::int64_t>(arrays_.size()); }
  /// Positions block `block`'s arrays hold now: the stride between heads. Changes with reserve().
  std::int64_t capacity(std::int64_t block) const { return at(block).capacity; }
  /// The position at slot 0 of block `block`'s arrays (position p is at slot p - held_from); 0
  /// but for a block that keeps only its window.
  std::int64_t held_from(std::int64_t block) const { return at(block).held_from; }
  /// Positions the session may hold.
  std::int64_t max_positions() const { return max_positions_; }
  std::int64_t kv_heads() const { return kv_heads_; }
  std::int64_t head_dim() const { return head_dim_; }
  /// Number of positions already computed.
  std::int64_t length() const { return length_; }
  /// Bytes of memory the cache holds now.
  std::int64_t bytes() const;
  /// Whether the arrays are in a device's memory.
  bool on_device() const { return on_device_; }
  /// Element type: f32 or bf16.
  DType dtype() const { return dtype_; }
  /// Bytes one position takes over every block (keys and values).
  static std::int64_t bytes_per_position(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim,
                                         DType dtype);
  /// The most bytes a host-memory cache made with these `windows` (one per block, 0: none) and
  /// KvKeep::kWindow ever holds for a session of `max_positions` whose steps add at most
  /// `step_rows` positions each (a tree's nodes counted).
  static std::int64_t most_bytes(std::span<const std::int64_t> windows, std::int64_t kv_heads, std::int64_t head_dim,
                                 DType dtype, std::int64_t max_positions, std::int64_t step_rows);

  /// Key array of block `block` (0-based within the range): slot 0 is position held_from(block).
  KvArray keys(std::int64_t block) { return {bytes_ + at(block).offset, dtype_}; }
  /// Value array of block `block`.
  KvArray values(std::int64_t block) { return {bytes_ + at(block).offset + array_bytes(at(block)), dtype_}; }
  /// The same as f32 pointers, for an f32 cache only (a device's caches are).
  float* keys_f32(std::int64_t block);
  float* values_f32(std::int64_t block);

  /// Makes room for positions [length(), positions), at most max_positions(), for a step whose
  /// queries are at length() or later: a block's arrays move to a larger allocation (at least
  /// twice the capacity) when they hold fewer, and a block that keeps only its window drops the
  /// positions before length() - window + 1 (see the class comment). Slots past length() are kept
  /// (a token tree's rows wait there). Invalidates the arrays' addresses when it moves them, and
  /// what held_from() says; the caller reserves before taking them for a step. A device's cache
  /// never moves: its windows' positions move down within it, for steps of at most
  /// kDeviceStepRows positions (sepal::Error for more).
  void reserve(std::int64_t positions);
  /// Marks positions [0, length) as computed; every block must have slots up to `length`.
  void set_length(std::int64_t length);
  /// The shortest length truncate() may go back to, but for 0: the positions before it are gone
  /// from a block that keeps only its window.
  std::int64_t earliest_length() const;
  /// Forgets positions from `length` on (rollback); `length` must not exceed the current length,
  /// and must be 0 or at least earliest_length() (sepal::Error otherwise).
  void truncate(std::int64_t length);
  /// After a tree step (BlockStack::forward_tree): appends the tree nodes `path` (increasing node
  /// indices, each the parent of the next) to the sequence, moving each node's keys and values
  /// from the slot of position length() + node to the next position, and forgets the other nodes.
  /// Throws sepal::Error when the path does not fit.
  void keep_path(std::span<const std::int32_t> path);

 private:
  struct Arrays {
    std::int64_t window = 0;      // kept only within it (0: every position kept)
    std::int64_t capacity = 0;    // positions
    std::int64_t held_from = 0;   // the position at slot 0
    std::int64_t offset = 0;      // bytes from the allocation's start to the keys; the values follow them
  };
  const Arrays& at(std::int64_t block) const;
  // What block arrays `a` become for a step up to `positions` (reserve()).
  Arrays planned(Arrays a, std::int64_t positions) const;
  std::int64_t row_bytes() const { return head_dim_ * static_cast<std::int64_t>(dtype_size(dtype_)); }
  std::int64_t array_bytes(const Arrays& a) const { return kv_heads_ * a.capacity * row_bytes(); }
  // Lays the blocks' arrays out one after another; returns the bytes they take.
  std::int64_t lay_out(std::vector<Arrays>& arrays) const;
  // reserve() of a device's cache.
  void reserve_on_device(std::int64_t positions);

  std::int64_t kv_heads_, head_dim_, max_positions_;
  DType dtype_ = DType::kF32;
  std::vector<Arrays> arrays_;
  std::int64_t length_ = 0;
  bool on_device_ = false;
  std::shared_ptr<Backend> backend_;  // a device's cache: the backend whose memory it is
  std::shared_ptr<void> memory_;  // each block's keys then values; huge pages (model/huge_buffer.h)
  std::byte* bytes_ = nullptr;
};

}  // namespace sepal

#include "model/kv_cache.h"

#include <algorithm>

#include "kernels/error.h"
#include "model/huge_buffer.h"

namespace sepal {

namespace {

// Positions a host-memory cache holds before its first growth: most sessions stay within them
// (a prompt and a reply), and those that outgrow them move only a few times.
constexpr std::int64_t kFirstCapacity = 256;

}  // namespace

KvCache::KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim,
                 std::int64_t max_positions, DType dtype)
    : blocks_(blocks), kv_heads_(kv_heads), head_dim_(head_dim), max_positions_(max_positions),
      capacity_(std::min(max_positions, kFirstCapacity)), dtype_(dtype) {
  SEPAL_CHECK(blocks >= 0 && kv_heads > 0 && head_dim > 0 && max_positions > 0);
  if (!kv_dtype_supported(dtype)) fail("a key/value cache holds f32 or bf16, not ", dtype_name(dtype));
  memory_ = allocate_huge_buffer(static_cast<std::size_t>(bytes()));
  bytes_ = static_cast<std::byte*>(memory_.get());
}

KvCache::KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t max_positions,
                 std::shared_ptr<void> device_memory)
    : blocks_(blocks), kv_heads_(kv_heads), head_dim_(head_dim), max_positions_(max_positions),
      capacity_(max_positions), on_device_(true) {
  SEPAL_CHECK(blocks >= 0 && kv_heads > 0 && head_dim > 0 && max_positions > 0 && device_memory);
  memory_ = std::move(device_memory);
  bytes_ = static_cast<std::byte*>(memory_.get());
}

std::int64_t KvCache::bytes_per_position(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim,
                                         DType dtype) {
  return 2 * blocks * kv_heads * head_dim * static_cast<std::int64_t>(dtype_size(dtype));
}

std::int64_t KvCache::bytes() const { return capacity_ * bytes_per_position(blocks_, kv_heads_, head_dim_, dtype_); }

float* KvCache::keys_f32(std::int64_t block) {
  SEPAL_CHECK(dtype_ == DType::kF32, "an f32 cache");
  return static_cast<float*>(keys(block).data);
}

float* KvCache::values_f32(std::int64_t block) {
  SEPAL_CHECK(dtype_ == DType::kF32, "an f32 cache");
  return static_cast<float*>(values(block).data);
}

void KvCache::reserve(std::int64_t positions) {
  SEPAL_CHECK(positions <= max_positions_, "positions ", positions, " past the cache's ", max_positions_);
  if (positions <= capacity_) return;
  SEPAL_CHECK(!on_device_, "a device's cache is allocated whole");
  const std::int64_t grown = std::min(max_positions_, std::max(positions, 2 * capacity_));
  const std::int64_t row = head_dim_ * static_cast<std::int64_t>(dtype_size(dtype_));  // bytes of one position
  std::shared_ptr<void> memory = allocate_huge_buffer(static_cast<std::size_t>(grown * bytes_per_position(blocks_, kv_heads_, head_dim_, dtype_)));
  auto* to = static_cast<std::byte*>(memory.get());
  for (std::int64_t array = 0; array < 2 * blocks_ * kv_heads_; ++array) {  // keys' heads, then values'
    const std::byte* from = bytes_ + array * capacity_ * row;
    std::copy(from, from + capacity_ * row, to + array * grown * row);
  }
  memory_ = std::move(memory);
  bytes_ = to;
  capacity_ = grown;
}

void KvCache::set_length(std::int64_t length) {
  SEPAL_CHECK(length >= 0 && length <= capacity_, "cache length ", length, " past capacity ", capacity_,
              " (reserve first)");
  length_ = length;
}

void KvCache::truncate(std::int64_t length) {
  SEPAL_CHECK(length >= 0 && length <= length_, "cannot roll back to ", length, " from ", length_);
  length_ = length;
}

void KvCache::keep_path(std::span<const std::int32_t> path) {
  if (on_device_) fail("token trees (speculative decoding) run on the CPU only, not on a device's cache");
  const auto kept = static_cast<std::int64_t>(path.size());
  std::int32_t previous = -1;
  for (const std::int32_t node : path) {
    if (node <= previous || length_ + node >= capacity_) fail("tree path node ", node, " is out of order or past the cache");
    previous = node;
  }
  const std::int64_t row = head_dim_ * static_cast<std::int64_t>(dtype_size(dtype_));  // bytes of one position
  for (std::int64_t b = 0; b < blocks_; ++b) {
    for (const KvArray array : {keys(b), values(b)}) {
      for (std::int64_t h = 0; h < kv_heads_; ++h) {
        std::byte* head = static_cast<std::byte*>(array.data) + h * capacity_ * row;
        for (std::int64_t i = 0; i < kept; ++i) {
          const std::int64_t from = length_ + path[static_cast<std::size_t>(i)], to = length_ + i;
          if (from != to) std::copy(head + from * row, head + (from + 1) * row, head + to * row);
        }
      }
    }
  }
  length_ += kept;
}

}  // namespace sepal

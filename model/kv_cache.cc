#include "model/kv_cache.h"

#include <algorithm>

#include "kernels/error.h"
#include "model/huge_buffer.h"

namespace sepal {

KvCache::KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim,
                 std::int64_t capacity)
    : blocks_(blocks), kv_heads_(kv_heads), head_dim_(head_dim), capacity_(capacity) {
  SEPAL_CHECK(blocks >= 0 && kv_heads > 0 && head_dim > 0 && capacity > 0);
  const auto size = static_cast<std::size_t>(blocks * block_stride());
  memory_ = allocate_huge_buffer(2 * size * sizeof(float));
  keys_ = static_cast<float*>(memory_.get());
  values_ = keys_ + size;
}

KvCache::KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t capacity,
                 std::shared_ptr<void> device_memory)
    : blocks_(blocks), kv_heads_(kv_heads), head_dim_(head_dim), capacity_(capacity), on_device_(true) {
  SEPAL_CHECK(blocks >= 0 && kv_heads > 0 && head_dim > 0 && capacity > 0 && device_memory);
  memory_ = std::move(device_memory);
  keys_ = static_cast<float*>(memory_.get());
  values_ = keys_ + blocks * block_stride();
}

std::int64_t KvCache::bytes() const {
  return 2 * blocks_ * block_stride() * static_cast<std::int64_t>(sizeof(float));
}

void KvCache::set_length(std::int64_t length) {
  SEPAL_CHECK(length >= 0 && length <= capacity_, "cache length ", length, " past capacity ", capacity_);
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
  for (std::int64_t b = 0; b < blocks_; ++b) {
    for (float* base : {keys(b), values(b)}) {
      for (std::int64_t h = 0; h < kv_heads_; ++h) {
        float* head = base + h * capacity_ * head_dim_;
        for (std::int64_t i = 0; i < kept; ++i) {
          const std::int64_t from = length_ + path[static_cast<std::size_t>(i)], to = length_ + i;
          if (from != to) std::copy(head + from * head_dim_, head + (from + 1) * head_dim_, head + to * head_dim_);
        }
      }
    }
  }
  length_ += kept;
}

}  // namespace sepal

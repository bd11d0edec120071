#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "kernels/error.h"
#include "model/huge_buffer.h"

namespace sepal {

namespace {

// Positions a host-memory cache holds before its first growth: most sessions stay within them
// (a prompt and a reply), and those that outgrow them move only a few times.
constexpr std::int64_t kFirstCapacity = 256;

// The capacity a block that keeps only its window wants for `span` positions: room for a window
// more, so that moving its positions down happens once every window or more.
std::int64_t window_capacity(std::int64_t span, std::int64_t window, std::int64_t max_positions) {
  return std::max(std::min(max_positions, span + window), std::min(max_positions, kFirstCapacity));
}

}  // namespace

KvCache::KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t max_positions,
                 DType dtype, std::vector<std::int64_t> windows, KvKeep keep)
    : kv_heads_(kv_heads), head_dim_(head_dim), max_positions_(max_positions), dtype_(dtype) {
  SEPAL_CHECK(blocks >= 0 && kv_heads > 0 && head_dim > 0 && max_positions > 0);
  if (!kv_dtype_supported(dtype)) fail("a key/value cache holds f32 or bf16, not ", dtype_name(dtype));
  SEPAL_CHECK(windows.empty() || static_cast<std::int64_t>(windows.size()) == blocks, "a window per block");
  arrays_.resize(static_cast<std::size_t>(blocks));
  for (std::size_t b = 0; b < arrays_.size(); ++b) {
    arrays_[b].capacity = std::min(max_positions, kFirstCapacity);
    if (keep == KvKeep::kWindow && !windows.empty()) {
      SEPAL_CHECK(windows[b] >= 0, "a window of ", windows[b], " positions");
      arrays_[b].window = windows[b];
    }
  }
  memory_ = allocate_huge_buffer(static_cast<std::size_t>(lay_out(arrays_)));
  bytes_ = static_cast<std::byte*>(memory_.get());
}

KvCache::KvCache(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t max_positions,
                 std::shared_ptr<Backend> backend, std::vector<std::int64_t> windows)
    : kv_heads_(kv_heads), head_dim_(head_dim), max_positions_(max_positions), on_device_(true), backend_(std::move(backend)) {
  SEPAL_CHECK(blocks >= 0 && kv_heads > 0 && head_dim > 0 && max_positions > 0 && backend_);
  SEPAL_CHECK(windows.empty() || static_cast<std::int64_t>(windows.size()) == blocks, "a window per block");
  arrays_.resize(static_cast<std::size_t>(blocks));
  for (std::size_t b = 0; b < arrays_.size(); ++b) {
    Arrays& a = arrays_[b];
    a.window = windows.empty() ? 0 : windows[b];
    SEPAL_CHECK(a.window >= 0, "a window of ", a.window, " positions");
    // As most_bytes() counts them for steps of kDeviceStepRows.
    a.capacity = a.window > 0 ? window_capacity(a.window - 1 + kDeviceStepRows, a.window, max_positions) : max_positions;
  }
  memory_ = backend_->allocate(lay_out(arrays_));
  bytes_ = static_cast<std::byte*>(memory_.get());
}

const KvCache::Arrays& KvCache::at(std::int64_t block) const {
  SEPAL_CHECK(block >= 0 && block < blocks(), "block ", block, " of a cache of ", blocks());
  return arrays_[static_cast<std::size_t>(block)];
}

std::int64_t KvCache::lay_out(std::vector<Arrays>& arrays) const {
  std::int64_t offset = 0;
  for (Arrays& a : arrays) {
    a.offset = offset;
    offset += 2 * array_bytes(a);
  }
  return offset;
}

std::int64_t KvCache::bytes_per_position(std::int64_t blocks, std::int64_t kv_heads, std::int64_t head_dim,
                                         DType dtype) {
  return 2 * blocks * kv_heads * head_dim * static_cast<std::int64_t>(dtype_size(dtype));
}

std::int64_t KvCache::most_bytes(std::span<const std::int64_t> windows, std::int64_t kv_heads, std::int64_t head_dim,
                                 DType dtype, std::int64_t max_positions, std::int64_t step_rows) {
  std::int64_t positions = 0;
  for (const std::int64_t window : windows) {
    // reserve() drops what lies before length() - window + 1, so a step spans at most
    // window - 1 + step_rows positions, and the arrays take a window more.
    positions += window > 0 ? window_capacity(window - 1 + std::max<std::int64_t>(step_rows, 1), window, max_positions)
                            : max_positions;
  }
  return positions * bytes_per_position(1, kv_heads, head_dim, dtype);
}

std::int64_t KvCache::bytes() const {
  std::int64_t total = 0;
  for (const Arrays& a : arrays_) total += 2 * array_bytes(a);
  return total;
}

float* KvCache::keys_f32(std::int64_t block) {
  SEPAL_CHECK(dtype_ == DType::kF32, "an f32 cache");
  return static_cast<float*>(keys(block).data);
}

float* KvCache::values_f32(std::int64_t block) {
  SEPAL_CHECK(dtype_ == DType::kF32, "an f32 cache");
  return static_cast<float*>(values(block).data);
}

KvCache::Arrays KvCache::planned(Arrays a, std::int64_t positions) const {
  if (a.window > 0) {
    // The coming step's queries, at length() or later, reach back to length() - window + 1.
    const std::int64_t keep = std::max(a.held_from, length_ - a.window + 1);
    const std::int64_t span = positions - keep;
    const std::int64_t wanted = window_capacity(span, a.window, max_positions_);
    if (positions - a.held_from <= a.capacity && a.capacity <= 2 * wanted) return a;  // fits, and not far too large
    a.held_from = keep;
    if (a.capacity > 2 * wanted) {  // after a long step
      a.capacity = wanted;
    } else if (a.capacity < wanted) {  // too small, or moving down would free less than a window
      a.capacity = std::min(wanted, std::max(span, 2 * a.capacity));
    }
  } else if (positions > a.capacity) {
    a.capacity = std::min(max_positions_, std::max(positions, 2 * a.capacity));
  }
  return a;
}

void KvCache::reserve_on_device(std::int64_t positions) {
  const std::int64_t row = row_bytes();
  for (Arrays& a : arrays_) {
    if (positions - a.held_from <= a.capacity) continue;
    // Only a block with a window runs out of slots: its positions before the coming step's
    // window, length() - window + 1, go, and the rest move down to slot 0.
    const std::int64_t keep = a.window > 0 ? std::max(a.held_from, length_ - a.window + 1) : a.held_from;
    if (positions - keep > a.capacity) {
      fail("a step of ", positions - length_, " positions does not fit a device's cache (steps of at most ",
           kDeviceStepRows, ")");
    }
    const std::int64_t drop = keep - a.held_from, kept = length_ - keep;
    SEPAL_CHECK(drop >= kept, "a device cache's window moves without overlap");  // its capacity is twice the window
    for (std::int64_t array = 0; array < 2 * kv_heads_; ++array) {  // keys' heads, then values'
      std::byte* head = bytes_ + a.offset + array * a.capacity * row;
      backend_->copy(head, head + drop * row, kept * row);
    }
    a.held_from = keep;
  }
}

void KvCache::reserve(std::int64_t positions) {
  SEPAL_CHECK(positions <= max_positions_, "positions ", positions, " past the cache's ", max_positions_);
  if (on_device_) return reserve_on_device(positions);
  const auto settled = [&](const Arrays& a) {
    const Arrays next = planned(a, positions);
    return next.capacity == a.capacity && next.held_from == a.held_from;
  };
  if (std::all_of(arrays_.begin(), arrays_.end(), settled)) return;  // most steps: nothing moves
  std::vector<Arrays> plan;
  bool reallocate = false;
  for (const Arrays& a : arrays_) {
    plan.push_back(planned(a, positions));
    reallocate |= plan.back().capacity != a.capacity;
  }
  const std::int64_t row = row_bytes();
  if (!reallocate) {  // blocks that keep their window move their positions down in place
    for (std::size_t b = 0; b < plan.size(); ++b) {
      const Arrays& was = arrays_[b];
      const std::int64_t drop = plan[b].held_from - was.held_from;
      if (drop == 0) continue;
      for (std::int64_t array = 0; array < 2 * kv_heads_; ++array) {  // keys' heads, then values'
        std::byte* head = bytes_ + was.offset + array * was.capacity * row;
        std::memmove(head, head + drop * row, static_cast<std::size_t>((was.capacity - drop) * row));
      }
      arrays_[b].held_from = plan[b].held_from;
    }
    return;
  }
  std::shared_ptr<void> memory = allocate_huge_buffer(static_cast<std::size_t>(lay_out(plan)));
  auto* to = static_cast<std::byte*>(memory.get());
  for (std::size_t b = 0; b < plan.size(); ++b) {
    const Arrays& was = arrays_[b];
    const Arrays& now = plan[b];
    const std::int64_t drop = now.held_from - was.held_from;
    const std::int64_t rows = std::min(now.capacity, was.capacity - drop);  // the slots still wanted, tree rows too
    for (std::int64_t array = 0; array < 2 * kv_heads_; ++array) {
      const std::byte* from = bytes_ + was.offset + (array * was.capacity + drop) * row;
      std::copy(from, from + rows * row, to + now.offset + array * now.capacity * row);
    }
  }
  memory_ = std::move(memory);
  bytes_ = to;
  arrays_ = std::move(plan);
}

void KvCache::set_length(std::int64_t length) {
  for (const Arrays& a : arrays_) {
    SEPAL_CHECK(length >= 0 && length <= a.held_from + a.capacity, "cache length ", length, " past the slots ",
                a.held_from + a.capacity, " (reserve first)");
  }
  length_ = length;
}

std::int64_t KvCache::earliest_length() const {
  std::int64_t earliest = 0;
  for (const Arrays& a : arrays_) {
    if (a.held_from > 0) earliest = std::max(earliest, a.held_from + a.window - 1);
  }
  return earliest;
}

void KvCache::truncate(std::int64_t length) {
  SEPAL_CHECK(length >= 0 && length <= length_, "cannot roll back to ", length, " from ", length_);
  if (length == 0) {
    for (Arrays& a : arrays_) a.held_from = 0;  // nothing is kept: every slot is free again
  } else if (length < earliest_length()) {
    fail("cannot roll back to ", length, " positions: blocks with a sliding window keep positions from ",
         earliest_length(), " on only");
  }
  length_ = length;
}

void KvCache::keep_path(std::span<const std::int32_t> path) {
  const auto kept = static_cast<std::int64_t>(path.size());
  std::int32_t previous = -1;
  for (const std::int32_t node : path) {
    for (const Arrays& a : arrays_) {
      if (node <= previous || length_ + node >= a.held_from + a.capacity) {
        fail("tree path node ", node, " is out of order or past the cache");
      }
    }
    previous = node;
  }
  if (on_device_) {  // each block's keys' heads and values' heads, one after another
    for (std::int64_t b = 0; b < blocks(); ++b) {
      const Arrays& a = at(b);
      backend_->keep_rows(keys_f32(b), 2 * kv_heads_, a.capacity, head_dim_, length_ - a.held_from, path.data(), kept);
    }
    length_ += kept;
    return;
  }
  const std::int64_t row = row_bytes();
  for (std::int64_t b = 0; b < blocks(); ++b) {
    const Arrays& a = at(b);
    for (const KvArray array : {keys(b), values(b)}) {
      for (std::int64_t h = 0; h < kv_heads_; ++h) {
        std::byte* head = static_cast<std::byte*>(array.data) + h * a.capacity * row;
        for (std::int64_t i = 0; i < kept; ++i) {
          const std::int64_t from = length_ + path[static_cast<std::size_t>(i)] - a.held_from;
          const std::int64_t to = length_ + i - a.held_from;
          if (from != to) std::copy(head + from * row, head + (from + 1) * row, head + to * row);
        }
      }
    }
  }
  length_ += kept;
}

}  // namespace sepal

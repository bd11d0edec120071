#include "runtime/buffer.h"

#include <array>
#include <bit>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace sepal {
namespace {

// Large receive buffers are recycled: a stream of big frames would otherwise fault fresh pages in
// for every frame (the kernel zeroes each one), which costs more than the transfer itself.
// Classes are 2^k and 1.5 * 2^k bytes from 64 KiB up, so at most a third is wasted.
constexpr std::size_t kPoolMin = 64 * 1024;
constexpr std::size_t kPoolMaxBytes = std::size_t{512} << 20;
constexpr int kClasses = 64;

std::size_t class_size(int c) {
  const std::size_t base = kPoolMin << (c / 2);
  return c % 2 == 0 ? base : base + base / 2;
}

int class_of(std::size_t size) {
  for (int c = 0; c < kClasses; ++c) {
    if (class_size(c) >= size) return c;
  }
  return -1;
}

struct Pool {
  std::mutex mutex;
  std::array<std::vector<std::byte*>, kClasses> free;
  std::size_t cached = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: buffers may outlive static destruction
  return *p;
}

}  // namespace

std::shared_ptr<Buffer> Buffer::allocate(std::size_t size) {
  const int c = size >= kPoolMin ? class_of(size) : -1;
  const std::size_t capacity = c >= 0 ? class_size(c) : (size + kWireAlignment - 1) / kWireAlignment * kWireAlignment;
  std::byte* data = nullptr;
  if (c >= 0) {
    Pool& p = pool();
    std::lock_guard lock(p.mutex);
    if (!p.free[c].empty()) {
      data = p.free[c].back();
      p.free[c].pop_back();
      p.cached -= capacity;
    }
  }
  if (!data) data = static_cast<std::byte*>(std::aligned_alloc(kWireAlignment, capacity == 0 ? kWireAlignment : capacity));
  if (!data) return nullptr;
  auto* buffer = new Buffer(data, size);
  return std::shared_ptr<Buffer>(buffer);
}

Buffer::~Buffer() {
  const int c = size_ >= kPoolMin ? class_of(size_) : -1;
  if (c >= 0) {
    Pool& p = pool();
    std::lock_guard lock(p.mutex);
    if (p.cached + class_size(c) <= kPoolMaxBytes) {
      p.free[c].push_back(data_);
      p.cached += class_size(c);
      return;
    }
  }
  std::free(data_);
}

}  // namespace sepal

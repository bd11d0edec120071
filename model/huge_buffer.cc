#include "model/huge_buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "kernels/error.h"

namespace sepal {

namespace {

constexpr std::size_t kHugePage = 2u << 20;

// Freed huge-page mappings by size, at most `limit` bytes of them.
struct KeptBuffers {
  std::mutex mutex;
  std::multimap<std::size_t, void*> free;
  std::size_t bytes = 0;
  std::size_t limit = 0;

  // Unmaps kept buffers until at most `limit` bytes are kept; the caller holds the mutex.
  void trim() {
    while (bytes > limit && !free.empty()) {
      auto largest = std::prev(free.end());
      ::munmap(largest->second, largest->first);
      bytes -= largest->first;
      free.erase(largest);
    }
  }
};

KeptBuffers& kept() {
  static KeptBuffers* buffers = new KeptBuffers;  // never destroyed: buffers may be freed at exit
  return *buffers;
}

void release(void* p, std::size_t size) {
  KeptBuffers& k = kept();
  {
    std::lock_guard lock(k.mutex);
    if (k.bytes + size <= k.limit) {
      k.free.emplace(size, p);
      k.bytes += size;
      return;
    }
  }
  ::munmap(p, size);
}

}  // namespace

std::shared_ptr<void> allocate_huge_buffer(std::size_t bytes) {
  if (bytes >= kHugePage) {
    const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = nullptr;
    {
      KeptBuffers& k = kept();
      std::lock_guard lock(k.mutex);
      if (auto it = k.free.find(rounded); it != k.free.end()) {
        p = it->second;
        k.bytes -= rounded;
        k.free.erase(it);
      }
    }
    if (p) {
      std::memset(p, 0, rounded);
    } else {
      p = ::mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) fail("out of memory allocating ", bytes, " bytes");
      ::madvise(p, rounded, MADV_HUGEPAGE);
    }
    return std::shared_ptr<void>(p, [rounded](void* q) { release(q, rounded); });
  }
  const std::size_t size = (bytes + 63) / 64 * 64 + 64;
  void* p = std::aligned_alloc(64, size);
  if (!p) fail("out of memory allocating ", bytes, " bytes");
  std::memset(p, 0, size);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

void set_huge_buffer_reuse_limit(std::size_t bytes) {
  KeptBuffers& k = kept();
  std::lock_guard lock(k.mutex);
  k.limit = bytes;
  k.trim();
}

std::size_t huge_buffer_bytes_kept() {
  KeptBuffers& k = kept();
  std::lock_guard lock(k.mutex);
  return k.bytes;
}

}  // namespace sepal

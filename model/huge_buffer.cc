#include "model/huge_buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

#include "kernels/error.h"

namespace sepal {

std::shared_ptr<void> allocate_huge_buffer(std::size_t bytes) {
  constexpr std::size_t kHugePage = 2u << 20;
  if (bytes >= kHugePage) {
    const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = ::mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("out of memory allocating ", bytes, " bytes");
    ::madvise(p, rounded, MADV_HUGEPAGE);
    return std::shared_ptr<void>(p, [rounded](void* q) { ::munmap(q, rounded); });
  }
  const std::size_t size = (bytes + 63) / 64 * 64 + 64;
  void* p = std::aligned_alloc(64, size);
  if (!p) fail("out of memory allocating ", bytes, " bytes");
  std::memset(p, 0, size);
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

}  // namespace sepal

#pragma once
// Vectors whose data starts on a cache line (64 bytes): activations the products read with
// 64-byte vector loads, which cost two cache accesses each when they straddle a line (a group of
// four rows loads its activations four times per weight load: unaligned rows ran the batched
// products at half speed).
//
// Thread-safety: as std::vector.

#include <cstddef>
#include <new>
#include <vector>

namespace sepal {

template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, kAlignment); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept { return true; }
};

/// floats on a cache line.
using AlignedFloats = std::vector<float, CacheLineAllocator<float>>;

}  // namespace sepal

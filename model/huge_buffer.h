#pragma once
// Large owned buffers backed by huge pages where the kernel allows: weights a token streams
// through, and the key/value caches attention reads back at every step (4 KiB pages made a
// 1000-position context read its cache at half the bandwidth, from TLB misses).
//
// Thread-safety: the function is thread-safe; the buffer is the caller's.

#include <cstddef>
#include <memory>

namespace sepal {

/// Zero-filled memory of `bytes` bytes, 64-byte aligned; 2 MiB pages advised from 2 MiB on.
/// Throws sepal::Error when the memory cannot be had.
std::shared_ptr<void> allocate_huge_buffer(std::size_t bytes);

}  // namespace sepal

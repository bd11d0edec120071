#pragma once
// Large owned buffers backed by huge pages where the kernel allows: weights a token streams
// through, and the key/value caches attention reads back at every step (4 KiB pages made a
// 1000-position context read its cache at half the bandwidth, from TLB misses).
//
// Freed buffers may be kept for reuse (set_huge_buffer_reuse_limit): a fresh transparent huge
// page must be found and zeroed by the kernel at its first touch, which ran at 0.3 GB/s on the
// development VM, while a kept buffer is zeroed again at memory speed (15 GB/s there). A block
// host keeps up to its cache budget, so that new sessions' caches and reloaded blocks land in
// memory it has already touched.
//
// Thread-safety: the functions are thread-safe; a buffer is its caller's.

#include <cstddef>
#include <memory>

namespace sepal {

/// Zero-filled memory of `bytes` bytes, 64-byte aligned; 2 MiB pages advised from 2 MiB on, and
/// then a kept buffer of the same rounded size is reused. Throws sepal::Error when the memory
/// cannot be had.
std::shared_ptr<void> allocate_huge_buffer(std::size_t bytes);

/// Keeps up to `bytes` of freed huge-page buffers for reuse (0, the default: none); buffers
/// freed past the limit go back to the system, and lowering it releases the excess at once.
void set_huge_buffer_reuse_limit(std::size_t bytes);

/// Bytes of freed buffers kept for reuse now.
std::size_t huge_buffer_bytes_kept();

}  // namespace sepal

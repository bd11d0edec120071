#pragma once
// Measures this machine's read bandwidth the way a decode step uses memory: every thread streams
// its own contiguous slice of a buffer far larger than the caches.

#include <cstdint>

namespace sepal::bench {

/// Best-of-`repeats` read bandwidth in bytes per second over a buffer of `bytes`, with all
/// the kernels' threads (kernels/parallel.h).
double measure_read_bandwidth(std::int64_t bytes, int repeats);

}  // namespace sepal::bench

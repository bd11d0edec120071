#pragma once
// The read bandwidth of a GPU's memory, measured (bench/gpu_bandwidth.cu): the roofline of decode
// on that device.

#include <cstdint>

namespace sepal::bench {

/// The best of `rounds` timed reads of a `bytes` buffer in GPU `device`'s memory (a vectorised
/// sum over it), in bytes/s. Throws sepal::Error naming the CUDA call that failed.
double gpu_read_bandwidth(int device, std::int64_t bytes, int rounds = 10);

}  // namespace sepal::bench

#pragma once
// This machine's read bandwidth, the roofline of decode: the fastest read it does over a buffer
// the size of the weights a token streams. Several read kernels (AVX-512 with 4 and 8
// accumulators, without software prefetch and with each line prefetched 4 or 8 KiB ahead into
// the first-level cache or 8 KiB ahead into the second or non-temporal, as the decode kernels
// do; AVX2) at every thread count from 1 to the kernels' threads are tried, each the best of a few passes over memory in huge pages; the best
// of all is the roofline, so a decode that reads faster than it means the probe is wrong, and
// the benchmark says so.
//
// Thread-safety: call from one thread; it uses threads of its own.

#include <cstdint>
#include <string>

namespace sepal::bench {

struct ReadBandwidth {
  double bytes_per_second = 0;
  std::string kernel;  ///< the read kernel that reached it
  int threads = 0;     ///< and with how many threads
};

/// The fastest read over a buffer of `bytes` (best of `repeats` passes per kernel and thread count).
ReadBandwidth measure_read_bandwidth(std::int64_t bytes, int repeats);

}  // namespace sepal::bench

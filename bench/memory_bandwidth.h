#pragma once
// This machine's read bandwidth, the roofline of decode: the fastest read it does over a buffer
// the size of the weights a token streams. Several read kernels (AVX-512 with 4 and 8
// accumulators, without software prefetch and with each line prefetched 4 or 8 KiB ahead into
// the first-level cache, 8 KiB ahead into the second, or 4 or 8 KiB ahead non-temporally, as the
// decode kernels do on Intel and AMD; AVX2) at every thread count from 1 to the kernels' threads
// are tried, each the best of a few passes over memory in huge pages; the best of all is the
// roofline, so a decode that reads faster than it means the probe is wrong, and the benchmark
// says so.
//
// Thread-safety: call from one thread; it uses threads of its own.

#include <cstdint>
#include <string>

namespace sepal::bench {

struct ReadBandwidth {
  double bytes_per_second = 0;
  std::string kernel;  ///< the read kernel that reached it
  int threads = 0;     ///< and with how many threads
  int kernel_index = -1;
};

/// A buffer of `bytes` (at least 64 MiB) in huge pages, kept for repeated reads: the fastest read
/// over it, then single passes of that read, each timed from the moment its threads (started
/// beforehand) are released to the last one's end.
class ReadProbe {
 public:
  explicit ReadProbe(std::int64_t bytes);
  ~ReadProbe();
  ReadProbe(const ReadProbe&) = delete;
  ReadProbe& operator=(const ReadProbe&) = delete;

  /// Every kernel at every thread count, the best of `repeats` passes each.
  ReadBandwidth fastest(int repeats);

  /// Bytes per second of one pass of the read `how` (a result of fastest()).
  double pass(const ReadBandwidth& how);

 private:
  float* data_ = nullptr;
  std::int64_t bytes_ = 0;
  float sink_ = 0;
};

}  // namespace sepal::bench

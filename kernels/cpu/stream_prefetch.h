#pragma once
// How the decode kernels (gemv_avx512.cc, gemv_i8_avx512vnni.cc) prefetch the weight rows they
// stream: every line a fixed distance ahead, into the cache that reads fastest on this CPU's
// make, as measured (two threads streaming decode's products; docs/operations.md):
// - into the second-level cache (Intel, and any other make): on a Xeon with AVX-512 and AMX a
//   prefetch into the first holds one of its few fill buffers, and bf16 rows over 2 GiB read 33.9
//   GB/s against 31.4;
// - non-temporal (AMD): on an EPYC (Zen 5) the 110M shape's products in decode order read at 1.1
//   to 1.25 times the speed of a prefetch into the second level (medians of 15 alternated rounds:
//   bf16 62 to 64 against 51 to 52 GB/s, f32 58 against 49, int8 65 against 59), a prefetch into
//   the first in between; on the 1.1B shape 0.98 to 1.06 times. One 210 MB bf16 matrix read at
//   57 GB/s against 47 (f32 62 against 51), where a plain read did 59. The lines are read once
//   and leave the other caches to the rest of the step.
// Internal to kernels/cpu.

#include <immintrin.h>

namespace sepal::cpu {

enum class StreamPrefetch { kSecondLevel, kNonTemporal };

/// The choice for this CPU, made once per process. Thread-safe.
StreamPrefetch stream_prefetch();

inline void prefetch_streamed_line(const void* p, StreamPrefetch how) {
  if (how == StreamPrefetch::kNonTemporal)
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_NTA);
  else
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
}

}  // namespace sepal::cpu

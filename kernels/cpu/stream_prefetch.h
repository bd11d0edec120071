#pragma once
// How the decode kernels (gemv_avx512.cc, gemv_i8_avx512vnni.cc; the AVX2 ones below) prefetch
// the weight rows they stream: every line a fixed distance ahead, into the cache and at the
// distance that read fastest on this CPU's make, as measured (two threads streaming decode's
// products; docs/operations.md):
// - Intel (and any other make): 8 KiB ahead into the second-level cache. On a Xeon with AVX-512
//   and AMX a prefetch into the first holds one of its few fill buffers, and bf16 rows over 2 GiB
//   read 33.9 GB/s against 31.4; 2 KiB ahead read 47 to 58 GB/s, 4 KiB 58 to 64, 8 KiB 60 to 67.
// - AMD: 4 KiB ahead, non-temporal. On an EPYC (Zen 5) the 110M shape's products in decode
//   order read at 1.1 to 1.25 times the speed of 8 KiB into the second level (medians of 15
//   alternated rounds: bf16 62 to 64 against 51 to 52 GB/s, f32 58 against 49, int8 65 against
//   59), into the first in between; on the 1.1B shape 0.98 to 1.06 times. 4 KiB rather than 8:
//   `decode_bench`'s decode steps over a plain read in the same moment, 0.78 to 0.91 against 0.74
//   to 0.85 (three alternated runs, every dtype). The lines are read once and leave the other
//   caches to the rest of the step.
// Internal to kernels/cpu.

#include <immintrin.h>

#include <cstdint>

namespace sepal::cpu {

struct StreamPrefetch {
  bool non_temporal = false;  ///< else into the second-level cache
  std::int64_t ahead = 8192;  ///< bytes ahead of the line being read
};

/// The choice for this CPU, made once per process. Thread-safe.
StreamPrefetch stream_prefetch();

/// The AVX2 kernels (gemv_avx2.cc, gemv_i8_avx2.cc) read four rows side by side and place their
/// own prefetches (side_by_side_prefetch.h); they take only the cache from here: the first level
/// where `how` says the second (on the Xeon their four streams measured no faster into the
/// second), non-temporal where it says so (on the Zen 5 EPYC at the avx2 level, bf16 decode of
/// the 110M shape 1.08 to 1.13 times as fast, f32 and int8 0.98 to 1.05; three alternated runs).
inline void prefetch_side_by_side_line(const char* line, const StreamPrefetch& how) {
  if (how.non_temporal)
    _mm_prefetch(line, _MM_HINT_NTA);
  else
    _mm_prefetch(line, _MM_HINT_T0);
}

/// Prefetches the line `how.ahead` bytes past p (prefetches do not fault: it may lie past the
/// matrix).
inline void prefetch_ahead_of(const void* p, const StreamPrefetch& how) {
  const char* line = static_cast<const char*>(p) + how.ahead;
  if (how.non_temporal)
    _mm_prefetch(line, _MM_HINT_NTA);
  else
    _mm_prefetch(line, _MM_HINT_T1);
}

}  // namespace sepal::cpu

// Compiled with -mavx2 -mfma -mf16c.
#include <immintrin.h>

#include "kernels/cpu/gemv.h"
#include "kernels/cpu/side_by_side_prefetch.h"
#include "kernels/cpu/stream_prefetch.h"

namespace sepal::cpu {
namespace {

constexpr int kRowsPerStep = 4;
// Every row's lines are prefetched this far ahead of the block's stream (the hardware prefetcher
// alone kept too few lines in flight; see gemv_avx512.cc), into the cache stream_prefetch.h names
// (prefetch_side_by_side_line).
// A fixed 8 KiB from each row fell, on the 1.1B shape's 4 and 8 KiB rows, on the rows the block
// was reading (bf16 decode 0.92 to 0.96 times the 2 KiB of before), hence side_by_side_ahead.
constexpr std::int64_t kPrefetchBytes = 8192;

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const std::uint16_t* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
inline float load1(const float* p) { return *p; }
inline float load1(const std::uint16_t* p) { return bf16_to_f32(*p); }

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// R rows x N tokens; with R = 4 and N = 3 this uses 12 accumulators + 3 inputs + 1 weight.
template <typename T, int R, int N>
inline void dot_block(const float* x, std::int64_t cols, const T* w, std::int64_t ldy, float* y,
                      const StreamPrefetch& how) {
  __m256 acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < N; ++t) acc[r][t] = _mm256_setzero_ps();
  std::int64_t k = 0;
  for (; k + 8 <= cols; k += 8) {
    if (k % (64 / sizeof(T)) == 0)  // each row's line, ahead
      for (int r = 0; r < R; ++r)
        prefetch_side_by_side_line(side_by_side_ahead(w + r * cols, k * sizeof(T), cols * sizeof(T), R,
                                                      kPrefetchBytes / R),
                                   how);
    __m256 xv[N];
    for (int t = 0; t < N; ++t) xv[t] = _mm256_loadu_ps(x + t * cols + k);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = load8(w + r * cols + k);
      for (int t = 0; t < N; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < N; ++t) {
      float sum = hsum(acc[r][t]);
      for (std::int64_t kk = k; kk < cols; ++kk) sum += x[t * cols + kk] * load1(w + r * cols + kk);
      y[t * ldy + r] = sum;
    }
  }
}

template <typename T, int N>
void gemv_typed(const float* x, const WeightView& w, std::int64_t r0, std::int64_t r1, float* y) {
  const T* data = static_cast<const T*>(w.data);
  const StreamPrefetch how = stream_prefetch();
  std::int64_t r = r0;
  for (; r + kRowsPerStep <= r1; r += kRowsPerStep)
    dot_block<T, kRowsPerStep, N>(x, w.cols, data + r * w.cols, w.rows, y + r, how);
  for (; r < r1; ++r) dot_block<T, 1, N>(x, w.cols, data + r * w.cols, w.rows, y + r, how);
}

template <typename T>
void gemv_dispatch_n(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                     std::int64_t r1, float* y) {
  // Four tokens would need 16 accumulators, the whole register file: do them as 3 + 1.
  switch (n) {
    case 1: return gemv_typed<T, 1>(x, w, r0, r1, y);
    case 2: return gemv_typed<T, 2>(x, w, r0, r1, y);
    case 3: return gemv_typed<T, 3>(x, w, r0, r1, y);
    default:
      gemv_typed<T, 3>(x, w, r0, r1, y);
      gemv_typed<T, 1>(x + 3 * w.cols, w, r0, r1, y + 3 * w.rows);
  }
}

}  // namespace

void gemv_avx2(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
               std::int64_t r1, float* y) {
  if (w.dtype == DType::kF32) {
    gemv_dispatch_n<float>(x, n, w, r0, r1, y);
  } else {
    gemv_dispatch_n<std::uint16_t>(x, n, w, r0, r1, y);
  }
}

}  // namespace sepal::cpu

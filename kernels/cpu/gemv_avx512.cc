// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma.
#include <immintrin.h>

#include "kernels/cpu/gemv.h"

namespace sepal::cpu {
namespace {

constexpr int kRowsPerStep = 4;
constexpr std::int64_t kPrefetchBytes = 512;

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const std::uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
inline __m512 load16_masked(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16_masked(const std::uint16_t* p, __mmask16 m) {
  const __m256i bits = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// R weight rows against N tokens: each weight vector is loaded once and used N times.
template <typename T, int R, int N>
inline void dot_block(const float* x, std::int64_t cols, const T* w, std::int64_t ldy, float* y) {
  __m512 acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
  std::int64_t k = 0;
  for (; k + 16 <= cols; k += 16) {
    __m512 xv[N];
    for (int t = 0; t < N; ++t) xv[t] = _mm512_loadu_ps(x + t * cols + k);
    for (int r = 0; r < R; ++r) {
      const T* row = w + r * cols + k;
      _mm_prefetch(reinterpret_cast<const char*>(row) + kPrefetchBytes, _MM_HINT_T0);
      const __m512 wv = load16(row);
      for (int t = 0; t < N; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (k < cols) {
    const __mmask16 m = static_cast<__mmask16>((1u << (cols - k)) - 1u);
    __m512 xv[N];
    for (int t = 0; t < N; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * cols + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = load16_masked(w + r * cols + k, m);
      for (int t = 0; t < N; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < N; ++t) y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]);
}

template <typename T, int N>
void gemv_typed(const float* x, const WeightView& w, std::int64_t r0, std::int64_t r1, float* y) {
  const T* data = static_cast<const T*>(w.data);
  std::int64_t r = r0;
  for (; r + kRowsPerStep <= r1; r += kRowsPerStep)
    dot_block<T, kRowsPerStep, N>(x, w.cols, data + r * w.cols, w.rows, y + r);
  for (; r < r1; ++r) dot_block<T, 1, N>(x, w.cols, data + r * w.cols, w.rows, y + r);
}

template <typename T>
void gemv_dispatch_n(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                     std::int64_t r1, float* y) {
  switch (n) {
    case 1: return gemv_typed<T, 1>(x, w, r0, r1, y);
    case 2: return gemv_typed<T, 2>(x, w, r0, r1, y);
    case 3: return gemv_typed<T, 3>(x, w, r0, r1, y);
    default: return gemv_typed<T, 4>(x, w, r0, r1, y);
  }
}

}  // namespace

void gemv_avx512(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                 std::int64_t r1, float* y) {
  if (w.dtype == DType::kF32) {
    gemv_dispatch_n<float>(x, n, w, r0, r1, y);
  } else {
    gemv_dispatch_n<std::uint16_t>(x, n, w, r0, r1, y);
  }
}

}  // namespace sepal::cpu

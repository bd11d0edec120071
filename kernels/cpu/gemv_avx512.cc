// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma.
#include <immintrin.h>

#include <type_traits>
#include <vector>

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

// bf16 rows, 32 weights per step without shuffles: a 64-byte load holds 16 dwords, each two bf16
// weights; shifting left by 16 widens the even ones and masking the high half widens the odd ones.
// The activations are de-interleaved once per call to match: xp[k..k+16) holds x at the even
// offsets of chunk k and xp[k+16..k+32) the odd ones.
template <int R, int N>
inline void dot_block_bf16_pairs(const float* xp, std::int64_t cols, std::int64_t paired,
                                 const float* x, const std::uint16_t* w, std::int64_t ldy, float* y) {
  __m512 acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_ps();
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (std::int64_t k = 0; k < paired; k += 32) {
    __m512 xe[N], xo[N];
    for (int t = 0; t < N; ++t) {
      xe[t] = _mm512_loadu_ps(xp + t * paired + k);
      xo[t] = _mm512_loadu_ps(xp + t * paired + k + 16);
    }
    for (int r = 0; r < R; ++r) {
      const std::uint16_t* row = w + r * cols + k;
      _mm_prefetch(reinterpret_cast<const char*>(row) + kPrefetchBytes, _MM_HINT_T0);
      const __m512i bits = _mm512_loadu_si512(row);
      const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
      const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(bits, high));
      for (int t = 0; t < N; ++t) {
        acc[r][t] = _mm512_fmadd_ps(even, xe[t], acc[r][t]);
        acc[r][t] = _mm512_fmadd_ps(odd, xo[t], acc[r][t]);
      }
    }
  }
  // The tail (cols not a multiple of 32) takes the widening path, 16 at a time.
  for (std::int64_t k = paired; k < cols; k += 16) {
    const std::int64_t left = cols - k;
    const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
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

template <int N>
void gemv_bf16(const float* x, const WeightView& w, std::int64_t r0, std::int64_t r1, float* y) {
  const auto* data = static_cast<const std::uint16_t*>(w.data);
  const std::int64_t cols = w.cols;
  const std::int64_t paired = cols / 32 * 32;
  std::vector<float> xp(static_cast<std::size_t>(N * paired));
  for (int t = 0; t < N; ++t) {
    for (std::int64_t k = 0; k < paired; k += 32) {
      for (int j = 0; j < 16; ++j) {
        xp[t * paired + k + j] = x[t * cols + k + 2 * j];
        xp[t * paired + k + 16 + j] = x[t * cols + k + 2 * j + 1];
      }
    }
  }
  std::int64_t r = r0;
  for (; r + kRowsPerStep <= r1; r += kRowsPerStep)
    dot_block_bf16_pairs<kRowsPerStep, N>(xp.data(), cols, paired, x, data + r * cols, w.rows, y + r);
  for (; r < r1; ++r) dot_block_bf16_pairs<1, N>(xp.data(), cols, paired, x, data + r * cols, w.rows, y + r);
}

template <typename T, int N>
void gemv_typed(const float* x, const WeightView& w, std::int64_t r0, std::int64_t r1, float* y) {
  if constexpr (std::is_same_v<T, std::uint16_t>) {
    gemv_bf16<N>(x, w, r0, r1, y);
    return;
  }
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

// Compiled with -mavx512f -mavx512bw -mavx512vnni. VPDPBUSD multiplies unsigned by signed bytes
// into int32 without saturation: the activations are offset to q + 128 (a flip of the sign bit)
// and 128 * Σ w, accumulated alongside at one extra instruction per weight vector, is taken off.
#include <immintrin.h>

#include "kernels/cpu/gemv_i8.h"

namespace sepal::cpu {
namespace {

constexpr int kRowsPerStep = 4;
constexpr std::int64_t kPrefetchBytes = 512;

template <int R, int N>
inline void dot_block(const I8Activations& x, std::int64_t cols, const std::int8_t* w, const float* scales,
                      std::int64_t ldy, float* y) {
  __m512i acc[R][N], wsum[R];
  for (int r = 0; r < R; ++r) {
    wsum[r] = _mm512_setzero_si512();
    for (int t = 0; t < N; ++t) acc[r][t] = _mm512_setzero_si512();
  }
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i ones = _mm512_set1_epi8(1);
  for (std::int64_t k = 0; k < cols; k += 64) {
    const std::int64_t left = cols - k;
    const __mmask64 m = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
    __m512i xv[N];
    for (int t = 0; t < N; ++t) xv[t] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x.q + t * cols + k), flip);
    for (int r = 0; r < R; ++r) {
      const std::int8_t* row = w + r * cols + k;
      _mm_prefetch(reinterpret_cast<const char*>(row) + kPrefetchBytes, _MM_HINT_T0);
      const __m512i wv = _mm512_maskz_loadu_epi8(m, row);  // zero past the end: no contribution
      wsum[r] = _mm512_dpbusd_epi32(wsum[r], ones, wv);
      for (int t = 0; t < N; ++t) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], xv[t], wv);
    }
  }
  for (int r = 0; r < R; ++r) {
    const std::int32_t offset = 128 * _mm512_reduce_add_epi32(wsum[r]);
    for (int t = 0; t < N; ++t) {
      const std::int32_t dot = _mm512_reduce_add_epi32(acc[r][t]) - offset;
      y[t * ldy + r] = finish_i8_row(x, t, w + r * cols, scales[r], dot);
    }
  }
}

template <int N>
void gemv_n(const I8Activations& x, const WeightView& w, std::int64_t r0, std::int64_t r1, std::int64_t ldy,
            float* y) {
  const auto* data = static_cast<const std::int8_t*>(w.data);
  std::int64_t r = r0;
  for (; r + kRowsPerStep <= r1; r += kRowsPerStep)
    dot_block<kRowsPerStep, N>(x, w.cols, data + r * w.cols, w.scales + r, ldy, y + r);
  for (; r < r1; ++r) dot_block<1, N>(x, w.cols, data + r * w.cols, w.scales + r, ldy, y + r);
}

}  // namespace

void gemv_i8_avx512vnni(const I8Activations& x, std::int64_t n, const WeightView& w, std::int64_t r0,
                        std::int64_t r1, std::int64_t ldy, float* y) {
  switch (n) {
    case 1: return gemv_n<1>(x, w, r0, r1, ldy, y);
    case 2: return gemv_n<2>(x, w, r0, r1, ldy, y);
    case 3: return gemv_n<3>(x, w, r0, r1, ldy, y);
    default: return gemv_n<4>(x, w, r0, r1, ldy, y);
  }
}

}  // namespace sepal::cpu

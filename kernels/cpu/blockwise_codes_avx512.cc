// Compiled with -mavx512f. Sixteen values at a time, each searched without branches over the code
// with gathers: after 8 halvings `pos` counts the entries below the value (std::lower_bound's
// index), and the nearer of entries pos - 1 and pos is taken with the scalar search's arithmetic.
#include <immintrin.h>

#include "kernels/cpu/blockwise_codes.h"

namespace sepal::cpu {
namespace {

// K vectors of 16 values searched side by side: each halving's gathers wait for the previous
// one's, so independent searches fill that latency.
template <int K>
inline void nearest16(const __m512 (&v)[K], const float* code, __m512i (&out)[K]) {
  __m512i pos[K];
  for (int k = 0; k < K; ++k) pos[k] = _mm512_setzero_si512();
  for (int half = 128; half >= 1; half /= 2) {
    for (int k = 0; k < K; ++k) {
      const __m512 entry = _mm512_i32gather_ps(_mm512_add_epi32(pos[k], _mm512_set1_epi32(half - 1)), code, 4);
      pos[k] = _mm512_mask_add_epi32(pos[k], _mm512_cmp_ps_mask(entry, v[k], _CMP_LT_OQ), pos[k], _mm512_set1_epi32(half));
    }
  }
  // pos <= 255, since v <= code[255] = 1: entry 0 when pos is 0, else the nearer of pos - 1 and pos.
  for (int k = 0; k < K; ++k) {
    const __m512i lo = _mm512_max_epi32(_mm512_sub_epi32(pos[k], _mm512_set1_epi32(1)), _mm512_setzero_si512());
    const __m512 below = _mm512_i32gather_ps(lo, code, 4), above = _mm512_i32gather_ps(pos[k], code, 4);
    const __mmask16 lower = _mm512_cmp_ps_mask(_mm512_sub_ps(v[k], below), _mm512_sub_ps(above, v[k]), _CMP_LE_OQ);
    out[k] = _mm512_mask_mov_epi32(pos[k], lower & _mm512_cmpgt_epi32_mask(pos[k], _mm512_setzero_si512()), lo);
  }
}

}  // namespace

void nearest_codes_avx512(const float* x, std::int64_t n, float absmax, const float* code, std::uint8_t* codes) {
  const __m512 scale = _mm512_set1_ps(absmax);
  std::int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512 v[4];
    __m512i c[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm512_div_ps(_mm512_loadu_ps(x + i + 16 * k), scale);
    nearest16<4>(v, code, c);
    for (int k = 0; k < 4; ++k) _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i + 16 * k), _mm512_cvtepi32_epi8(c[k]));
  }
  for (; i < n; i += 16) {
    const auto m = static_cast<__mmask16>(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
    __m512 v[1] = {_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), scale)};
    __m512i c[1];
    nearest16<1>(v, code, c);
    _mm512_mask_cvtepi32_storeu_epi8(codes + i, m, c[0]);
  }
}

}  // namespace sepal::cpu

// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq.
#include <immintrin.h>

#include <cmath>

#include "kernels/cpu/i8_activations.h"
#include "kernels/cpu/lanes_avx512.h"

namespace sepal::cpu {
namespace {

inline __m512 abs16(__m512 v) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
}

// Lanes of 16 columns from k whose is_outlier byte is 0 (all of them where is_outlier is null).
inline __mmask16 inliers(const std::uint8_t* is_outlier, std::int64_t k, __mmask16 valid) {
  if (!is_outlier) return valid;
  const __m128i flags = _mm_maskz_loadu_epi8(valid, is_outlier + k);
  return static_cast<__mmask16>(valid & ~_mm_test_epi8_mask(flags, flags));
}

}  // namespace

bool mark_outlier_columns_avx512(const float* x, std::int64_t n, std::int64_t cols, float threshold,
                                 std::uint8_t* is_outlier) {
  const __m512 limit = _mm512_set1_ps(threshold);
  __mmask16 bad = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    for (std::int64_t k = 0; k < cols; k += 16) {
      const __mmask16 valid = first_lanes(cols - k);
      const __m512 v = _mm512_maskz_loadu_ps(valid, xt + k);
      bad |= _mm512_mask_fpclass_ps_mask(valid, v, 0x99);  // quiet or signalling NaN, +inf, -inf
      const __mmask16 large = _mm512_mask_cmp_ps_mask(valid, abs16(v), limit, _CMP_GE_OQ);
      _mm_mask_storeu_epi8(is_outlier + k, large, _mm_set1_epi8(1));
    }
  }
  return bad == 0;
}

float quantize_inliers_avx512(const float* x, std::int64_t cols, const std::uint8_t* is_outlier,
                              std::int8_t* q, std::int32_t* qsum) {
  __m512 top = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (std::int64_t k = 0; k < cols; k += 16) {
    const __mmask16 in = inliers(is_outlier, k, first_lanes(cols - k));
    const __m512 v = _mm512_maskz_loadu_ps(in, x + k);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);  // quiet or signalling NaN, +inf, -inf
    top = _mm512_mask_max_ps(top, in, top, abs16(v));
  }
  if (bad) return NAN;
  const float absmax = _mm512_reduce_max_ps(top);
  __m512i sum = _mm512_setzero_si512();
  if (absmax == 0.0f) {
    for (std::int64_t k = 0; k < cols; ++k) q[k] = 0;
    if (qsum) *qsum = 0;
    return 0.0f;
  }
  const __m512 inverse = _mm512_set1_ps(127.0f / absmax);
  for (std::int64_t k = 0; k < cols; k += 16) {
    const __mmask16 valid = first_lanes(cols - k);
    const __mmask16 in = inliers(is_outlier, k, valid);
    // Round to nearest even, as quantize_row_i8 does; 0 in the outlier columns.
    const __m512i v =
        _mm512_maskz_cvtps_epi32(in, _mm512_mul_ps(_mm512_maskz_loadu_ps(in, x + k), inverse));
    sum = _mm512_add_epi32(sum, v);
    _mm_mask_storeu_epi8(q + k, valid, _mm512_cvtsepi32_epi8(v));
  }
  if (qsum) *qsum = _mm512_reduce_add_epi32(sum);
  return absmax / 127.0f;
}

}  // namespace sepal::cpu

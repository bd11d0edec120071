#pragma once
// Pieces shared by the AVX-512 VNNI int8 kernels (decode and prompt), so that both turn the same
// int32 dot products into the same floats. Internal to kernels/cpu; include only from translation
// units compiled with AVX-512 F/BW.
//
// The weights enter VPDPBUSD as its unsigned operand, offset to w + 128 (a flip of the sign bit),
// against the signed activations; Σ (w + 128) q = Σ w q + 128 Σ q, and Σ q is one number per
// token (I8Activations::qsum), taken off once per output.

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/gemv_i8.h"
#include "kernels/cpu/lanes_avx512.h"

namespace sepal::cpu {

inline __m512i flip_sign_bits(__m512i v) {
  return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
}

/// The outlier part of 16 rows for token t: one chain of fused multiply-adds from zero over the
/// outlier columns j, with outlier_w[j * ld + i] = w[row i, outlier column j] as float. The
/// prompt kernel's f32 tile (gemm_f32_tile) computes the same chain, bit for bit.
inline __m512 outlier_sums16(const I8Activations& x, std::int64_t t, const float* outlier_w,
                             std::int64_t ld) {
  __m512 sum = _mm512_setzero_ps();
  const float* xo = x.outlier_x + t * x.outliers;
  for (std::int64_t j = 0; j < x.outliers; ++j)
    sum = _mm512_fmadd_ps(_mm512_set1_ps(xo[j]), _mm512_loadu_ps(outlier_w + j * ld), sum);
  return sum;
}

/// Outputs of 16 rows for token t from their sums Σ w q and their outlier part:
/// (scale_x * dot + outliers) * scale_w.
inline __m512 finish_i8_dots16(const I8Activations& x, std::int64_t t, __m512i dots, __m512 outliers,
                               const float* row_scales, __mmask16 rows) {
  const __m512 sum =
      _mm512_fmadd_ps(_mm512_set1_ps(x.scale[t]), _mm512_cvtepi32_ps(dots), outliers);
  return _mm512_mul_ps(sum, _mm512_maskz_loadu_ps(rows, row_scales));
}

/// The same from the offset sums Σ (w + 128) q.
inline __m512 finish_i8_rows16(const I8Activations& x, std::int64_t t, __m512i offset_dots,
                               __m512 outliers, const float* row_scales, __mmask16 rows) {
  const __m512i dots = _mm512_sub_epi32(offset_dots, _mm512_set1_epi32(128 * x.qsum[t]));
  return finish_i8_dots16(x, t, dots, outliers, row_scales, rows);
}

/// outlier_w[j * ld + i] = row[outlier column j] as float for every outlier column j, or 0 with
/// no row (null: a row past the block's end).
inline void gather_outlier_row(const I8Activations& x, const std::int8_t* row, std::int64_t i, std::int64_t ld,
                               float* outlier_w) {
  for (std::int64_t j = 0; j < x.outliers; ++j)
    outlier_w[j * ld + i] = row != nullptr ? static_cast<float>(row[x.outlier_cols[j]]) : 0.0f;
}

/// outlier_w[j * ld + i] = w[r0 + i, outlier column j] for i < count, 0 for count <= i < ld.
inline void gather_outlier_weights(const I8Activations& x, const std::int8_t* w, std::int64_t cols,
                                   std::int64_t r0, std::int64_t count, std::int64_t ld,
                                   float* outlier_w) {
  for (std::int64_t i = 0; i < ld; ++i)
    gather_outlier_row(x, i < count ? w + (r0 + i) * cols : nullptr, i, ld, outlier_w);
}

}  // namespace sepal::cpu

#pragma once
// LLM.int8() matrix-vector kernels, one translation unit per CPU level. Internal to kernels/cpu:
// matmul_i8_cpu.cc quantizes the activations and splits the work; these compute
//   y[t, r] = scale_w[r] * (scale_x[t] * Σ_k q[t, k] * w[r, k] + Σ_j outlier_x[t, j] * w[r, col_j])
// for tokens t < n (n <= kStreamingMaxTokens) and rows r in [r0, r1). The int32 sums are exact,
// so every level gets the same dot products; only the float steps after them may differ. The quantized activations
// are zero in the outlier columns, so the int8 part skips them and the float part adds them back.

#include <cstdint>

#include "kernels/matmul.h"

namespace sepal::cpu {

/// One group of tokens' activations, quantized.
struct I8Activations {
  const std::int8_t* q = nullptr;             ///< [n, ldq], in [-127, 127]; 0 in outlier columns and past cols
  std::int64_t ldq = 0;                       ///< bytes per token: cols rounded up to kI8RowAlign
  const float* scale = nullptr;               ///< [n]
  const std::int32_t* qsum = nullptr;         ///< [n]: Σ_k q[t, k]
  const std::int32_t* outlier_cols = nullptr; ///< [outliers], increasing
  std::int64_t outliers = 0;
  const float* outlier_x = nullptr;           ///< [n, outliers]: the activations in those columns
};

/// Quantized activations are padded to a multiple of this many bytes per token.
inline constexpr std::int64_t kI8RowAlign = 64;

/// y has leading dimension ldy.
using GemvI8Fn = void (*)(const I8Activations& x, std::int64_t n, const WeightView& w, std::int64_t r0,
                          std::int64_t r1, std::int64_t ldy, float* y);

void gemv_i8_generic(const I8Activations& x, std::int64_t n, const WeightView& w, std::int64_t r0,
                     std::int64_t r1, std::int64_t ldy, float* y);
void gemv_i8_avx2(const I8Activations& x, std::int64_t n, const WeightView& w, std::int64_t r0,
                  std::int64_t r1, std::int64_t ldy, float* y);
void gemv_i8_avx512vnni(const I8Activations& x, std::int64_t n, const WeightView& w, std::int64_t r0,
                        std::int64_t r1, std::int64_t ldy, float* y);

/// The result of row r for token t from its int32 dot product: scaling plus the outlier part,
/// which reads the row's outlier columns while the row is still in cache.
inline float finish_i8_row(const I8Activations& x, std::int64_t t, const std::int8_t* row, float row_scale,
                           std::int32_t dot) {
  float sum = x.scale[t] * static_cast<float>(dot);
  const float* xo = x.outlier_x + t * x.outliers;
  for (std::int64_t j = 0; j < x.outliers; ++j) sum += xo[j] * static_cast<float>(row[x.outlier_cols[j]]);
  return sum * row_scale;
}

}  // namespace sepal::cpu

#pragma once
// Quantizing the activations of an int8 product, 16 lanes at a time (AVX-512 F/BW/VL/DQ).
// Internal to kernels/cpu: matmul_i8_cpu.cc calls these where cpu_supports(CpuIsa::kAvx512), and
// the scalar code otherwise; both give the same bytes.

#include <cstdint>

namespace sepal::cpu {

/// Sets is_outlier[k] = 1 for every column k where some token's |x[t, k]| >= threshold (other
/// entries are left as they are). False, with nothing promised, when x holds NaN or infinity.
bool mark_outlier_columns_avx512(const float* x, std::int64_t n, std::int64_t cols, float threshold,
                                 std::uint8_t* is_outlier);

/// Quantizes one token's inlier columns (is_outlier[k] == 0; every column where is_outlier is
/// null) exactly as the scalar quantize_row_i8 does the row with its outlier columns set to zero:
/// writes q[0, cols) (0 in outlier columns), returns the scale and sets *qsum = Σ q (where qsum
/// is not null). Returns NaN, with nothing promised in q, where an inlier is NaN or infinite.
float quantize_inliers_avx512(const float* x, std::int64_t cols, const std::uint8_t* is_outlier, std::int8_t* q,
                              std::int32_t* qsum);

}  // namespace sepal::cpu

#pragma once
// The code search of blockwise 8-bit quantization (kernels/blockwise_quant.h), per CPU level.
// Internal to kernels/cpu: every level gives the same codes as the scalar search (the nearest
// entry of the increasing 256-entry code, the lower one on a tie).

#include <cstdint>

namespace sepal::cpu {

/// codes[i] = the entry of `code` nearest to x[i] / absmax, for i < n; absmax finite, > 0 and
/// at least every |x[i]| (so that x[i] / absmax lies within the code's [-1, 1]).
/// Call only where cpu_supports(CpuIsa::kAvx512).
void nearest_codes_avx512(const float* x, std::int64_t n, float absmax, const float* code, std::uint8_t* codes);

}  // namespace sepal::cpu

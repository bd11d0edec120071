#pragma once
// Streaming matrix-vector kernels, one translation unit per CPU level (each compiled with that
// level's target flags). Internal to kernels/cpu.

#include <cstdint>

#include "kernels/matmul.h"

namespace sepal::cpu {

/// y[t, r] = dot(x[t, :], w[r, :]) for t < n (n <= kStreamingMaxTokens) and r in [r0, r1).
/// x has leading dimension w.cols, y has leading dimension w.rows.
using GemvFn = void (*)(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                        std::int64_t r1, float* y);

void gemv_generic(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                  std::int64_t r1, float* y);
void gemv_avx2(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
               std::int64_t r1, float* y);
void gemv_avx512(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                 std::int64_t r1, float* y);


}  // namespace sepal::cpu

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

/// bf16 rows at AVX-512 read the activations laid out per whole 32 columns as their 16 even
/// columns, then their 16 odd ones; gemv_avx512 lays them out on every call. A product split into
/// many calls (one per chunk of rows) lays them out once with this (split: n * (cols / 32 * 32)
/// floats, the columns past the last whole 32 not included) and calls gemv_bf16_avx512, which
/// reads x for those last columns.
void lay_out_bf16_activations_avx512(const float* x, std::int64_t n, std::int64_t cols,
                                     float* split);
void gemv_bf16_avx512(const float* x, const float* split, std::int64_t n, const WeightView& w,
                      std::int64_t r0, std::int64_t r1, float* y);


}  // namespace sepal::cpu

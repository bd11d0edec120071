#pragma once
// The int8 branch of matmul() (kernels/matmul.h). Internal to kernels/cpu.

#include <cstdint>
#include <span>

#include "kernels/matmul.h"

namespace sepal::cpu {

/// ys[i][n, ws[i].rows] = x[n, cols] · ws[i]ᵀ for LLM.int8() weights of one input width and one
/// outlier threshold: x is quantized once, and the rows of all the matrices share one pass.
void matmul_i8(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys,
               CpuIsa isa);

/// The same with every token's result the bits it gets alone (matmul_many_alone): groups of
/// kStreamingMaxTokens tokens, each quantized as a call of its own, over tiles of rows.
void matmul_i8_alone(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys,
                     CpuIsa isa);

}  // namespace sepal::cpu

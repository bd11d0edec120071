#pragma once
// The int8 branch of matmul() (kernels/matmul.h). Internal to kernels/cpu.

#include <cstdint>

#include "kernels/matmul.h"

namespace sepal::cpu {

/// y[n, w.rows] = x[n, w.cols] · wᵀ for LLM.int8() weights (w.dtype == kI8).
void matmul_i8(const float* x, std::int64_t n, const WeightView& w, float* y, CpuIsa isa);

}  // namespace sepal::cpu

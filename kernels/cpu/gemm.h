#pragma once
// Prompt-sized matrix products (more than kStreamingMaxTokens tokens) with AVX-512 register
// tiles, independent of any BLAS library's CPU detection. Internal to kernels/cpu.
//
// Each task packs a strip of 32 weight rows (transposed, widened to f32; for int8, 4-byte
// groups of the input dimension) and runs tiles of up to 12 tokens over it. Every output element
// is one chain of fused multiply-adds (f32, bf16) or one exact int32 sum (int8) over the input
// dimension in order, so a token's result does not depend on the other tokens in the call, on
// where its tile falls, or on the thread count.

#include <cstdint>

#include "kernels/cpu/gemv_i8.h"
#include "kernels/matmul.h"

namespace sepal::cpu {

/// Rows per packed strip: one task's share of the weights.
inline constexpr std::int64_t kGemmStripRows = 32;

/// y[n, w.rows] = x[n, w.cols] · wᵀ for f32 or bf16 weights (AVX-512 F).
void gemm_avx512(const float* x, std::int64_t n, const WeightView& w, float* y);

/// LLM.int8() for n tokens (AVX-512 VNNI), outliers included: the same outputs, bit for bit, as
/// gemv_i8_avx512vnni gives for each token alone.
void gemm_i8_avx512vnni(const I8Activations& x, std::int64_t n, const WeightView& w, float* y);

}  // namespace sepal::cpu

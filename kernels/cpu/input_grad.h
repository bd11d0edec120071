#pragma once
// The register tile of matmul_input_grad (kernels/gradients.h), per CPU level. Internal to
// kernels/cpu.
//
// Thread-safety: pure functions.

#include <cstdint>

#include "kernels/matmul.h"

namespace sepal::cpu {

/// Input-gradient tiles cover this many input columns and at most this many tokens.
inline constexpr std::int64_t kInputGradCols = 64;
inline constexpr std::int64_t kInputGradTokens = 6;

/// dx[t, c0 + c] = Σ_r dy[t, r] · w[r, c0 + c] for t < tokens (at most kInputGradTokens), c < width
/// (at most kInputGradCols); dy rows are w.rows long, dx rows w.cols. Each sum runs over r in
/// order (fused multiply-adds at AVX-512), so a result depends on neither the other tokens nor
/// the tiling. int8 weights are dequantized (data · scale of the row).
void input_grad_tile(const float* dy, std::int64_t tokens, const WeightView& w, std::int64_t c0, std::int64_t width,
                     float* dx);
/// The same for any number of tokens with AVX-512 F (the strip's rows packed in chunks, register
/// tiles of 6 tokens); the same sums in the same order. Call only where cpu_supports(kAvx512).
void input_grad_strip_avx512(const float* dy, std::int64_t tokens, const WeightView& w, std::int64_t c0,
                             std::int64_t width, float* dx);

}  // namespace sepal::cpu

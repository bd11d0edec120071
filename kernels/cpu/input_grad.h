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

/// With AMX (cpu_supports(kAmx)), for bf16 and int8 weights (kernels/cpu/input_grad_amx.cc): the
/// bytes split_input_grads_amx needs for n tokens of gradients over w's rows; it writes dy [n,
/// w.rows] there as three bf16 parts in the tiles' order (int8: times the row scales first), once
/// for every strip. input_grad_strip_amx then writes dx for tokens [t0, t0 + tokens) (t0 a
/// multiple of 32) and columns [c0, c0 + width), from that split of all n tokens; each result is
/// one fixed sequence of f32 additions over the rows, as accurate as the FMA chain.
std::int64_t input_grad_amx_bytes(std::int64_t n, std::int64_t rows);
void split_input_grads_amx(const float* dy, std::int64_t n, const WeightView& w, std::uint8_t* split);
void input_grad_strip_amx(const std::uint8_t* split, std::int64_t n, std::int64_t t0, std::int64_t tokens,
                          const WeightView& w, std::int64_t c0, std::int64_t width, float* dx);

}  // namespace sepal::cpu

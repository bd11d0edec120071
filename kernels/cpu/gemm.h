#pragma once
// Prompt-sized matrix products (more than kStreamingMaxTokens tokens) with AVX-512 register
// tiles, independent of any BLAS library's CPU detection. Internal to kernels/cpu.
//
// Each task packs a strip of 32 weight rows (transposed, widened to f32; for int8, 4-byte
// groups of the input dimension) and runs tiles of up to 12 tokens over it. Every output element
// is one chain of fused multiply-adds (f32, bf16) or one exact int32 sum (int8) over the input
// dimension in order, so a token's result does not depend on the other tokens in the call, on
// where its tile falls, or on the thread count.

#include <algorithm>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kernels/cpu/gemv_i8.h"
#include "kernels/matmul.h"

namespace sepal::cpu {

/// Rows per packed strip: one task's share of the weights.
inline constexpr std::int64_t kGemmStripRows = 32;

/// ys[i][n, ws[i].rows] = x[n, cols] · ws[i]ᵀ for f32 or bf16 weights (AVX-512 F), every strip
/// of every matrix one task of one parallel pass.
void gemm_avx512(const float* x, std::int64_t n, std::span<const WeightView> ws,
                 std::span<float* const> ys);

/// The f32 register tile behind gemm_avx512, for the other AVX-512 kernels: y[t, 0..32) for
/// `tokens` (1..12) tokens of x (leading dimension k) against a strip packed as p[j * 32 + i];
/// each output is one chain of fused multiply-adds over j from zero. rows_lo / rows_hi are the
/// store masks of rows 0..15 and 16..31.
void gemm_f32_tile(const float* x, int tokens, std::int64_t k, const float* packed, float* y,
                   std::int64_t ldy, std::uint16_t rows_lo, std::uint16_t rows_hi);

/// LLM.int8() for n tokens (AVX-512 VNNI), outliers included: the same outputs, bit for bit, as
/// gemv_i8_avx512vnni gives for each token alone.
void gemm_i8_avx512vnni(const I8Activations& x, std::int64_t n, std::span<const WeightView> ws,
                        std::span<float* const> ys);

/// The same on AMX tiles (kernels/cpu/gemm_i8_amx.cc), bit for bit; the calling thread's tile
/// state must be enabled (cpu_supports(CpuIsa::kAmx)).
void gemm_i8_amx(const I8Activations& x, std::int64_t n, std::span<const WeightView> ws,
                 std::span<float* const> ys);

/// ys[i] = x · ws[i]ᵀ for bf16 weights on AMX tiles (kernels/cpu/gemm_bf16_amx.cc): every output
/// one fixed sequence of f32 additions of exact products, independent of the other tokens and of
/// the thread count; rounded differently from gemm_avx512. Same precondition as gemm_i8_amx.
void gemm_bf16_amx(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys);

/// Tasks of one parallel pass over the strips of several matrices: (matrix, strip) by task.
struct StripTasks {
  explicit StripTasks(std::span<const WeightView> ws) {
    std::int64_t total = 0;
    for (const WeightView& w : ws)
      ends_.push_back(total += (w.rows + kGemmStripRows - 1) / kGemmStripRows);
  }
  std::int64_t count() const { return ends_.empty() ? 0 : ends_.back(); }
  std::pair<std::size_t, std::int64_t> at(std::int64_t task) const {
    const auto i = static_cast<std::size_t>(std::upper_bound(ends_.begin(), ends_.end(), task) -
                                            ends_.begin());
    return {i, task - (i == 0 ? 0 : ends_[i - 1])};
  }

 private:
  std::vector<std::int64_t> ends_;  // cumulative strip counts
};

}  // namespace sepal::cpu

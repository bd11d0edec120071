#pragma once
// Matrix products of activations with weight matrices: y = x · Wᵀ.
//
// Thread-safety: each call is independent; it uses the kernels' thread pool (kernels/parallel.h)
// and may be called from any thread, one call at a time per output buffer. Inside a task of that
// pool it runs on the calling thread only.

#include <cstdint>
#include <span>

#include "kernels/cpu_isa.h"
#include "kernels/dtype.h"

namespace sepal {

/// A read-only row-major weight matrix [rows, cols]: rows are output features and cols input
/// features, as Linear layers store them. Supported element types: f32, bf16 and int8.
///
/// int8 is LLM.int8(): row r holds the values data[r, :] * scales[r] (kernels/quantize.h). The
/// product quantizes each token's activations to int8 at run time, except the input columns where
/// any activation's magnitude reaches `outlier_threshold`: those are multiplied in floating point
/// against the same weight columns dequantized (mixed-precision decomposition). A threshold of
/// infinity turns the decomposition off.
struct WeightView {
  DType dtype = DType::kF32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  const void* data = nullptr;
  const float* scales = nullptr;   ///< int8 only: one per row
  float outlier_threshold = 6.0f;  ///< int8 only

  /// Bytes the matrix occupies (with its scales).
  std::int64_t bytes() const {
    return rows * cols * static_cast<std::int64_t>(dtype_size(dtype)) + (dtype == DType::kI8 ? rows * 4 : 0);
  }
};

/// The longest int8 row: Σ (w + 128) q over it must fit in an int32 (255 · 127 · 65536 < 2^31).
inline constexpr std::int64_t kMaxInt8Cols = 65536;

/// Up to this many tokens take the streaming path (each weight row read once for all tokens);
/// more take the blocked path: register-tile GEMMs at the AVX-512 levels, OpenBLAS panels (f32,
/// bf16) or cached panels (int8) below. On the streaming path each token's result is the bits it
/// gets alone (decoding), at every dtype: int8 splits off each token's own outlier columns. So
/// verifying a token tree takes its products in pieces of this many rows.
inline constexpr std::int64_t kStreamingMaxTokens = 4;

/// y[n, w.rows] = x[n, w.cols] · wᵀ, with the active CPU level. x and y must not overlap.
/// Results do not depend on the thread count. At the AVX-512 levels a token's result on the
/// blocked path does not depend on the other tokens of the call (for int8: given the same outlier
/// columns, which LLM.int8() picks over the whole call); with VNNI an int8 token's result is the
/// same bits decoded alone or inside a prompt. f32 and bf16 decode and prompts round differently;
/// on the streaming path a token's result does not depend on the other tokens of the call (int8
/// included: there each token's outlier columns are its own; longer calls pick them over every
/// token, as LLM.int8() does).
void matmul(const float* x, std::int64_t n, const WeightView& w, float* y);

/// Same, with an explicit CPU level (tests compare the levels with each other).
void matmul(const float* x, std::int64_t n, const WeightView& w, float* y, CpuIsa isa);

/// Several products of the same activations: ys[i][n, ws[i].rows] = x[n, cols] · ws[i]ᵀ, every
/// ws[i] with the same cols. When the matrices share a dtype (and, for int8, an outlier
/// threshold) they run as one parallel pass over all their rows, with one quantization of x for
/// int8: a block's q/k/v or gate/up projections at the cost of one product. Every output is
/// bit for bit what matmul() gives for its matrix alone. ws and ys have the same length.
void matmul_many(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys);
void matmul_many(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys,
                 CpuIsa isa);

/// matmul_many where every row's result is the bits it gets alone (decoded by itself, or in any
/// call of up to kStreamingMaxTokens rows), for any n: the rows run in groups of
/// kStreamingMaxTokens on the streaming path, all groups over one cache-sized tile of weight rows
/// before the next, so the weights are read from memory once for all of them. For rows that do
/// not share a prompt: the steps of several sessions batched together, a token tree's nodes.
void matmul_many_alone(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys);
void matmul_many_alone(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys,
                       CpuIsa isa);

}  // namespace sepal

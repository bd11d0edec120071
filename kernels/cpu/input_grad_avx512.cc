// matmul_input_grad with AVX-512 F: a strip of 64 input columns, its weight rows widened (bf16,
// dequantized int8) and packed 512 at a time, then register tiles of 6 tokens x 64 columns in 24
// zmm accumulators, each packed row meeting 6 broadcast gradients.
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/input_grad.h"

namespace sepal::cpu {
namespace {

// Lanes of the 4 vectors of a 64-column tile that hold columns below `width`.
inline __mmask16 lanes(std::int64_t width, int j) {
  const std::int64_t n = width - 16 * j;
  return n >= 16 ? static_cast<__mmask16>(0xffff) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1);
}

// Widens weight row r's 64 columns from c0 into the packed row `out` (zeros past the width).
template <DType D>
inline void pack_row(const WeightView& w, std::int64_t r, std::int64_t c0, const __mmask16 (&m)[4], float* out) {
  for (int j = 0; j < 4; ++j) {
    __m512 v;
    if constexpr (D == DType::kF32) {
      v = _mm512_maskz_loadu_ps(m[j], static_cast<const float*>(w.data) + r * w.cols + c0 + 16 * j);
    } else if constexpr (D == DType::kBF16) {
      const __m256i bits =
          _mm256_maskz_loadu_epi16(m[j], static_cast<const std::uint16_t*>(w.data) + r * w.cols + c0 + 16 * j);
      v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
    } else {
      const __m128i bytes =
          _mm_maskz_loadu_epi8(m[j], static_cast<const std::int8_t*>(w.data) + r * w.cols + c0 + 16 * j);
      v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)), _mm512_set1_ps(w.scales[r]));
    }
    _mm512_store_ps(out + 16 * j, v);
  }
}

// Rows [r0, r1) of the strip, packed [r1 - r0][64], into the tile's sums: zero-based when r0 is
// 0, else continuing from what dx holds (the earlier rows' sums, stored exactly), so the chunking
// does not change a result. The accumulators stay in registers.
template <int Tokens>
void tile(const float* dy, std::int64_t rows, std::int64_t r0, std::int64_t r1, const float* packed,
          const __mmask16 (&m)[4], std::int64_t cols, std::int64_t c0, float* dx) {
  __m512 acc[Tokens][4];
#pragma GCC unroll 8
  for (int t = 0; t < Tokens; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      acc[t][j] = r0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m[j], dx + t * cols + c0 + 16 * j);
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* v = packed + (r - r0) * kInputGradCols;
    const __m512 v0 = _mm512_load_ps(v), v1 = _mm512_load_ps(v + 16), v2 = _mm512_load_ps(v + 32),
                 v3 = _mm512_load_ps(v + 48);
#pragma GCC unroll 8
    for (int t = 0; t < Tokens; ++t) {
      const __m512 g = _mm512_set1_ps(dy[t * rows + r]);
      acc[t][0] = _mm512_fmadd_ps(g, v0, acc[t][0]);
      acc[t][1] = _mm512_fmadd_ps(g, v1, acc[t][1]);
      acc[t][2] = _mm512_fmadd_ps(g, v2, acc[t][2]);
      acc[t][3] = _mm512_fmadd_ps(g, v3, acc[t][3]);
    }
  }
  for (int t = 0; t < Tokens; ++t)
    for (int j = 0; j < 4; ++j) _mm512_mask_storeu_ps(dx + t * cols + c0 + 16 * j, m[j], acc[t][j]);
}

void tile_of(const float* dy, std::int64_t tokens, std::int64_t rows, std::int64_t r0, std::int64_t r1,
             const float* packed, const __mmask16 (&m)[4], std::int64_t cols, std::int64_t c0, float* dx) {
  switch (tokens) {
    case 1: return tile<1>(dy, rows, r0, r1, packed, m, cols, c0, dx);
    case 2: return tile<2>(dy, rows, r0, r1, packed, m, cols, c0, dx);
    case 3: return tile<3>(dy, rows, r0, r1, packed, m, cols, c0, dx);
    case 4: return tile<4>(dy, rows, r0, r1, packed, m, cols, c0, dx);
    case 5: return tile<5>(dy, rows, r0, r1, packed, m, cols, c0, dx);
    default: return tile<6>(dy, rows, r0, r1, packed, m, cols, c0, dx);
  }
}

template <DType D>
void strip(const float* dy, std::int64_t tokens, const WeightView& w, std::int64_t c0, std::int64_t width, float* dx) {
  // A chunk of rows packed contiguously (the rows of W are far apart: one page each, often) and
  // kept in cache while every tile of tokens passes over it.
  constexpr std::int64_t kChunkRows = 512;
  alignas(64) static thread_local float packed[kChunkRows * kInputGradCols];
  const __mmask16 m[4] = {lanes(width, 0), lanes(width, 1), lanes(width, 2), lanes(width, 3)};
  for (std::int64_t r0 = 0; r0 < w.rows; r0 += kChunkRows) {
    const std::int64_t r1 = std::min(w.rows, r0 + kChunkRows);
    for (std::int64_t r = r0; r < r1; ++r) pack_row<D>(w, r, c0, m, packed + (r - r0) * kInputGradCols);
    for (std::int64_t t0 = 0; t0 < tokens; t0 += kInputGradTokens) {
      tile_of(dy + t0 * w.rows, std::min(kInputGradTokens, tokens - t0), w.rows, r0, r1, packed, m, w.cols, c0,
              dx + t0 * w.cols);
    }
  }
}

}  // namespace

void input_grad_strip_avx512(const float* dy, std::int64_t tokens, const WeightView& w, std::int64_t c0,
                             std::int64_t width, float* dx) {
  if (w.dtype == DType::kF32) return strip<DType::kF32>(dy, tokens, w, c0, width, dx);
  if (w.dtype == DType::kBF16) return strip<DType::kBF16>(dy, tokens, w, c0, width, dx);
  strip<DType::kI8>(dy, tokens, w, c0, width, dx);
}

}  // namespace sepal::cpu

// Compiled with -mamx-tile -mamx-bf16 -mavx512bf16 and AVX-512 F/BW/VL. matmul_input_grad for
// bf16 and int8 weights on AMX tiles (amx_tiles.h), dx = dy · W: the output gradients are the
// tiles' first operand (16 tokens by 32 rows of W), the weights the second (32 rows by 16
// columns, rows in pairs), and the results land as dx's rows. As for bf16 prompts
// (gemm_bf16_amx.cc), the gradients are split into three bf16 parts that add up to them exactly
// and the tiles add the products of each part in turn; int8 weights are exact in bf16 and their
// row scales go into the gradients first (dy[t, r] · scale[r], one rounding). Every result is one
// fixed sequence of f32 additions over the rows of W, so it depends on neither the other tokens
// nor the tiling.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/cpu/amx_bf16_parts.h"
#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/input_grad.h"
#include "kernels/cpu/lanes_avx512.h"

namespace sepal::cpu {
namespace {

using amx::kTile;
using amx::kTileBytes;
using amx::kTileTokens;
using amx::from_bf16;
using amx::kBf16Parts;
using amx::to_bf16;

constexpr std::int64_t kStepRows = amx::kBf16StepValues;  // rows of W (bf16 pairs) per step

// 16 columns of row r of W from column c as bf16 in the low halves of 16 dwords (zero past
// `count` columns): exact for bf16 weights and for int8 ones (|q| <= 127).
inline __m512i row_bf16(const WeightView& w, std::int64_t r, std::int64_t c, std::int64_t count) {
  const __mmask16 m = first_lanes(std::max<std::int64_t>(0, count));
  if (w.dtype == DType::kBF16)
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, static_cast<const std::uint16_t*>(w.data) + r * w.cols + c));
  const __m128i bytes = _mm_maskz_loadu_epi8(m, static_cast<const std::int8_t*>(w.data) + r * w.cols + c);
  return _mm512_srli_epi32(_mm512_castps_si512(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))), 16);
}

// Columns [c0, c0 + 32) of W in the tiles' order: per step s, a tile for columns c0.. and one for
// c0 + 16.., line p holding rows 32 s + 2 p and 32 s + 2 p + 1 of each column (zero past the
// rows and columns W has).
void pack_columns(const WeightView& w, std::int64_t c0, std::int64_t steps, std::uint8_t* packed) {
  for (std::int64_t s = 0; s < steps; ++s) {
    for (int half = 0; half < 2; ++half) {
      const std::int64_t c = c0 + 16 * half, count = std::min<std::int64_t>(16, w.cols - c);
      std::uint8_t* tile = packed + (2 * s + half) * kTile;
      for (int p = 0; p < 16; ++p) {
        const std::int64_t r = s * kStepRows + 2 * p;
        const __m512i even = r < w.rows ? row_bf16(w, r, c, count) : _mm512_setzero_si512();
        const __m512i odd = r + 1 < w.rows ? row_bf16(w, r + 1, c, count) : _mm512_setzero_si512();
        _mm512_store_si512(tile + p * kTileBytes, _mm512_or_si512(even, _mm512_slli_epi32(odd, 16)));
      }
    }
  }
}

// Tiles 0..3 += the products of tiles 6, 7 (gradients of tokens 0..15, 16..31) and 4, 5 (columns
// 0..15, 16..31): tile 2 h + u for column half h and token half u.
inline void multiply() {
  _tile_dpbf16ps(0, 6, 4);
  _tile_dpbf16ps(1, 7, 4);
  _tile_dpbf16ps(2, 6, 5);
  _tile_dpbf16ps(3, 7, 5);
}

}  // namespace

std::int64_t input_grad_amx_bytes(std::int64_t n, std::int64_t rows) {
  return kBf16Parts * amx::token_blocks(n) * ((rows + kStepRows - 1) / kStepRows) * kTile;
}

void split_input_grads_amx(const float* dy, std::int64_t n, const WeightView& w, std::uint8_t* split) {
  const std::int64_t steps = (w.rows + kStepRows - 1) / kStepRows, blocks = amx::token_blocks(n);
  const std::int64_t part_bytes = blocks * steps * kTile;
  parallel_for(blocks, [&](std::int64_t b) {
    for (std::int64_t t = b * kTileTokens; t < (b + 1) * kTileTokens; ++t) {
      for (std::int64_t s = 0; s < steps; ++s) {
        for (std::int64_t h = 0; h < 2; ++h) {  // 16 rows of W at a time
          const std::int64_t r = s * kStepRows + 16 * h;
          const __mmask16 m = first_lanes(t < n ? std::max<std::int64_t>(0, w.rows - r) : 0);
          __m512 rest = _mm512_maskz_loadu_ps(m, dy + t * w.rows + r);
          if (w.dtype == DType::kI8) rest = _mm512_mul_ps(rest, _mm512_maskz_loadu_ps(m, w.scales + r));
          for (int p = 0; p < kBf16Parts; ++p) {
            const __m256i part = to_bf16(rest);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(split + p * part_bytes + (b * steps + s) * kTile +
                                                           (t - b * kTileTokens) * kTileBytes + 32 * h),
                                part);
            rest = _mm512_sub_ps(rest, from_bf16(part));  // exact, as in gemm_bf16_amx.cc
          }
        }
      }
    }
  });
}

void input_grad_strip_amx(const std::uint8_t* split, std::int64_t n, std::int64_t t0, std::int64_t tokens,
                          const WeightView& w, std::int64_t c0, std::int64_t width, float* dx) {
  const std::int64_t steps = (w.rows + kStepRows - 1) / kStepRows, part_bytes = amx::token_blocks(n) * steps * kTile;
  const std::uint8_t* const parts[kBf16Parts] = {split, split + part_bytes, split + 2 * part_bytes};
  thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> packing;
  packing.resize(static_cast<std::size_t>(2 * steps * kTile));
  amx::configure_tiles();
  for (std::int64_t c = c0; c < c0 + width; c += 32) {
    pack_columns(w, c, steps, packing.data());
    const __mmask16 valid[2] = {first_lanes(std::min<std::int64_t>(16, c0 + width - c)),
                                first_lanes(std::max<std::int64_t>(0, c0 + width - c - 16))};
    for (std::int64_t b = t0 / kTileTokens; b * kTileTokens < t0 + tokens; b += 2) {
      alignas(64) float out[4][16][16];
      amx::block_tiles<kBf16Parts>(packing.data(), parts, b, steps, out, multiply);
      for (int half = 0; half < 2; ++half) {
        for (int u = 0; u < 2; ++u) {
          for (int i = 0; i < 16; ++i) {
            const std::int64_t t = (b + u) * kTileTokens + i;
            if (t >= t0 + tokens) break;
            _mm512_mask_storeu_ps(dx + t * w.cols + c + 16 * half, valid[half], _mm512_load_ps(out[2 * half + u][i]));
          }
        }
      }
    }
  }
  _tile_release();
}

}  // namespace sepal::cpu

// Compiled with -mamx-tile -mamx-int8 -mamx-bf16 -mavx512bf16 and AVX-512 F/BW/VL/VNNI. The
// LLM.int8() product for prompts on AMX tiles (amx_tiles.h): TDPBSSD adds a weight tile times an
// activation tile into 16 x 16 int32 sums. The int32 sums are the exact Σ w q that the VNNI
// kernels compute, and the same inline steps (i8_rows_avx512.h) turn them into floats, so without
// outlier columns every output has the bits gemv_i8_avx512vnni gives its token alone. The outlier
// part Σ w x over the outlier columns runs on bf16 tiles too: the int8 weights are exact in bf16
// and the activations are split into three bf16 parts that add up to them (amx_bf16_parts.h), so
// every product is exact in f32, as in the VNNI kernels' chain of fused multiply-adds; the sums
// are added in the tile unit's order instead, so with outlier columns the outputs round
// differently from VNNI's (an int8 host on AMX announces its own numerics; cpu_isa.h) and are as
// accurate. A prompt's outlier columns are those of all its tokens (LLM.int8()), and in a
// projection whose input has large values in many places, such as an MLP's down projection, they
// can be a third of its columns or more: on f32 vectors that part took most of the prompt's time.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/cpu/amx_bf16_parts.h"
#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/i8_rows_avx512.h"
#include "kernels/parallel.h"

namespace sepal::cpu {
namespace {

using amx::kBlockTokens;
using amx::kTile;
using amx::kTileBytes;
using amx::kTileTokens;

static_assert(kI8RowAlign % kTileBytes == 0, "quantized rows hold whole steps");

// Tiles 0..3 += the int8 products of tiles 4, 5 (weights) and 6, 7 (activations).
inline void multiply_i8() {
  _tile_dpbssd(0, 4, 6);
  _tile_dpbssd(1, 4, 7);
  _tile_dpbssd(2, 5, 6);
  _tile_dpbssd(3, 5, 7);
}

}  // namespace

void gemm_i8_amx(const I8Activations& x, std::int64_t n, std::span<const WeightView> ws,
                 std::span<float* const> ys) {
  const std::int64_t cols = ws[0].cols;
  const std::int64_t steps = x.ldq / kTileBytes;
  const std::int64_t blocks = amx::token_blocks(n);
  thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> packing;
  packing.resize(static_cast<std::size_t>(blocks * steps * kTile));
  std::uint8_t* const packed = packing.data();  // the workers see their own thread_local
  amx::pack_tokens(reinterpret_cast<const std::uint8_t*>(x.q), x.ldq, n, blocks, steps, packed);

  // The outlier activations [n, k] in three bf16 parts, packed as tiles of 32 values a step.
  const std::int64_t k = x.outliers;
  const std::int64_t ldk = (k + amx::kBf16StepValues - 1) / amx::kBf16StepValues * amx::kBf16StepValues;
  const std::int64_t outlier_steps = ldk / amx::kBf16StepValues;
  thread_local std::vector<std::uint16_t, CacheLineAllocator<std::uint16_t>> outlier_split;
  thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> outlier_packing;
  const std::uint8_t* outlier_packed[amx::kBf16Parts] = {};
  // Each strip gathers its rows' outlier weights by compressing each 64 columns of a row with the
  // mask of the outlier columns among them (VBMI2, which the AMX level requires).
  std::vector<std::uint64_t> chunk_masks;
  if (k > 0) {
    chunk_masks.assign(static_cast<std::size_t>((cols + 63) / 64), 0);
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t c = x.outlier_cols[j];
      chunk_masks[static_cast<std::size_t>(c / 64)] |= std::uint64_t{1} << (c % 64);
    }
    outlier_split.resize(static_cast<std::size_t>(amx::kBf16Parts * n * ldk));
    outlier_packing.resize(static_cast<std::size_t>(amx::kBf16Parts * blocks * outlier_steps * kTile));
    std::uint16_t* const parts[amx::kBf16Parts] = {outlier_split.data(), outlier_split.data() + n * ldk,
                                                   outlier_split.data() + 2 * n * ldk};
    parallel_for((n + kTileTokens - 1) / kTileTokens, [&](std::int64_t b) {
      amx::split_bf16_parts(x.outlier_x, k, ldk, b * kTileTokens, std::min(n, (b + 1) * kTileTokens), parts);
    });
    for (int p = 0; p < amx::kBf16Parts; ++p) {
      std::uint8_t* const to = outlier_packing.data() + p * blocks * outlier_steps * kTile;
      amx::pack_tokens(reinterpret_cast<const std::uint8_t*>(parts[p]), 2 * ldk, n, blocks, outlier_steps, to);
      outlier_packed[p] = to;
    }
  }

  const StripTasks tasks(ws);
  parallel_for(tasks.count(), [&](std::int64_t task) {
    const auto [i, s] = tasks.at(task);
    const WeightView& w = ws[i];
    float* y = ys[i];
    const auto* data = static_cast<const std::int8_t*>(w.data);
    const std::int64_t r0 = s * kGemmStripRows, rows = std::min(kGemmStripRows, w.rows - r0);
    thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> strip;
    strip.resize(static_cast<std::size_t>(steps * kGemmStripRows * kTileBytes));
    amx::pack_strip(reinterpret_cast<const std::uint8_t*>(data + r0 * cols), cols, rows, steps, strip.data());
    // The strip's weights in the outlier columns, as bf16 (exact), packed as its int8 rows are.
    thread_local std::vector<std::uint16_t, CacheLineAllocator<std::uint16_t>> outlier_w;
    thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> outlier_strip;
    if (k > 0) {
      outlier_w.resize(static_cast<std::size_t>(rows * ldk));
      thread_local std::vector<std::int8_t> gathered;
      gathered.resize(static_cast<std::size_t>(ldk + 64));
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int8_t* row = data + (r0 + r) * cols;
        // The row's outlier columns in order (each 64 columns compressed by their mask), then zeros.
        std::int64_t at = 0;
        for (std::size_t c = 0; c < chunk_masks.size(); ++c) {
          const std::uint64_t mask = chunk_masks[c];
          if (mask == 0) continue;
          const std::int64_t left = cols - 64 * static_cast<std::int64_t>(c);
          const __mmask64 valid = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
          const __m512i bytes = _mm512_maskz_loadu_epi8(valid, row + 64 * c);
          _mm512_storeu_si512(gathered.data() + at, _mm512_maskz_compress_epi8(mask, bytes));
          at += std::popcount(mask);
        }
        std::fill(gathered.begin() + at, gathered.end(), 0);
        std::uint16_t* to = outlier_w.data() + r * ldk;
        for (std::int64_t j = 0; j < ldk; j += 16) {  // |w| <= 127: exact in bf16
          const __m128i w16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(gathered.data() + j));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(to + j),
                              amx::to_bf16(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(w16))));
        }
      }
      outlier_strip.resize(static_cast<std::size_t>(outlier_steps * kGemmStripRows * kTileBytes));
      amx::pack_strip(reinterpret_cast<const std::uint8_t*>(outlier_w.data()), 2 * ldk, rows, outlier_steps,
                      outlier_strip.data());
    }
    const std::int64_t counts[2] = {std::min<std::int64_t>(16, rows), std::max<std::int64_t>(0, rows - 16)};
    amx::configure_tiles();
    for (std::int64_t b = 0; b < blocks; b += 2) {
      const std::int64_t t0 = b * kTileTokens, tokens = std::min(kBlockTokens, n - t0);
      alignas(64) std::int32_t sums[4][16][16];
      const std::uint8_t* const parts[1] = {packed};
      amx::block_tiles<1>(strip.data(), parts, b, steps, sums, multiply_i8);
      alignas(64) float outlier_sums[4][16][16];
      if (k > 0) amx::block_tiles<amx::kBf16Parts>(outlier_strip.data(), outlier_packed, b, outlier_steps, outlier_sums,
                                                   amx::multiply_bf16);
      for (int half = 0; half < 2; ++half) {
        if (counts[half] == 0) continue;
        const std::int64_t r = r0 + 16 * half;
        const __mmask16 valid = first_lanes(counts[half]);
        for (int token_half = 0; token_half < 2; ++token_half) {
          __m512 by_token[16], outliers_by_token[16];
          amx::tile_by_token(sums[2 * half + token_half], by_token);
          if (k > 0) amx::tile_by_token(outlier_sums[2 * half + token_half], outliers_by_token);
          for (std::int64_t t = 0; t < 16; ++t) {
            const std::int64_t u = token_half * kTileTokens + t;
            if (u >= tokens) break;
            const __m512i dots = _mm512_castps_si512(by_token[t]);
            const __m512 outlier_part = k > 0 ? outliers_by_token[t] : _mm512_setzero_ps();
            const __m512 out = finish_i8_dots16(x, t0 + u, dots, outlier_part, w.scales + r, valid);
            _mm512_mask_storeu_ps(y + (t0 + u) * w.rows + r, valid, out);
          }
        }
      }
    }
    _tile_release();
  });
}

}  // namespace sepal::cpu

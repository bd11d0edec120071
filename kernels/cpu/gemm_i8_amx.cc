// Compiled with -mamx-tile -mamx-int8 and AVX-512 F/BW/VL/VNNI. The LLM.int8() product for
// prompts on AMX tiles (amx_tiles.h): TDPBSSD adds a weight tile times an activation tile into
// 16 x 16 int32 sums. The int32 sums are the exact Σ w q that the VNNI kernels compute, and the
// same inline steps (i8_rows_avx512.h) turn them into floats, so every output has the bits
// gemv_i8_avx512vnni gives its token alone.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/aligned_vector.h"
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

constexpr int kOutlierTileTokens = 12;  // gemm_f32_tile's most tokens

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
    thread_local std::vector<float> outlier_w;  // the strip's outlier columns, as gemm_f32_tile reads them
    if (x.outliers > 0) {
      outlier_w.resize(static_cast<std::size_t>(kGemmStripRows * x.outliers));
      gather_outlier_weights(x, data, cols, r0, rows, kGemmStripRows, outlier_w.data());
    }
    const std::int64_t counts[2] = {std::min<std::int64_t>(16, rows), std::max<std::int64_t>(0, rows - 16)};
    amx::configure_tiles();
    for (std::int64_t b = 0; b < blocks; b += 2) {
      const std::int64_t t0 = b * kTileTokens, tokens = std::min(kBlockTokens, n - t0);
      alignas(64) std::int32_t sums[4][16][16];
      const std::uint8_t* const parts[1] = {packed};
      amx::block_tiles<1>(strip.data(), parts, b, steps, sums, multiply_i8);
      alignas(64) float outliers[kBlockTokens][kGemmStripRows];
      for (std::int64_t u = 0; x.outliers > 0 && u < tokens; u += kOutlierTileTokens) {
        gemm_f32_tile(x.outlier_x + (t0 + u) * x.outliers,
                      static_cast<int>(std::min<std::int64_t>(kOutlierTileTokens, tokens - u)), x.outliers,
                      outlier_w.data(), &outliers[u][0], kGemmStripRows, 0xffff, 0xffff);
      }
      for (int half = 0; half < 2; ++half) {
        if (counts[half] == 0) continue;
        const std::int64_t r = r0 + 16 * half;
        const __mmask16 valid = first_lanes(counts[half]);
        for (int token_half = 0; token_half < 2; ++token_half) {
          __m512 by_token[16];
          amx::tile_by_token(sums[2 * half + token_half], by_token);
          for (std::int64_t t = 0; t < 16; ++t) {
            const std::int64_t u = token_half * kTileTokens + t;
            if (u >= tokens) break;
            const __m512i dots = _mm512_castps_si512(by_token[t]);
            const __m512 outlier_part = x.outliers > 0 ? _mm512_load_ps(&outliers[u][16 * half]) : _mm512_setzero_ps();
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

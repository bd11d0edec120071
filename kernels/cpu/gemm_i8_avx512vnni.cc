// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni. The int8 product for prompts: a
// strip of 32 weight rows is packed as 4-byte groups of the input dimension, row after row
// (p[(g * 32 + j) * 4 + b] = w[j, 4g + b] + 128), so one VPDPBUSD multiplies 16 rows' groups by
// one token's group broadcast; tiles of up to 12 tokens keep 24 accumulators in registers.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/i8_rows_avx512.h"
#include "kernels/cpu/transpose_avx512.h"
#include "kernels/parallel.h"

namespace sepal::cpu {
namespace {

constexpr int kTileTokens = 12;
constexpr std::int64_t kPackPrefetchBytes = 512;

// Packs rows [0, rows) of the strip (rows <= 32); groups past cols hold 128 (w = 0), which the
// zero padding of the activations multiplies away anyway.
void pack_strip(const std::int8_t* w, std::int64_t cols, std::int64_t rows, std::int64_t groups,
                std::uint8_t* p) {
  for (int half = 0; half < 2; ++half) {
    const std::int64_t first_row = 16 * half;
    for (std::int64_t k0 = 0; k0 < groups * 4; k0 += 64) {
      const std::int64_t left = cols - k0;
      const __mmask64 m = left >= 64 ? ~__mmask64{0} : left <= 0 ? 0 : (__mmask64{1} << left) - 1;
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        const std::int8_t* row = w + (first_row + i) * cols + k0;
        __m512i v = _mm512_setzero_si512();
        if (first_row + i < rows) {
          // 16 rows read side by side are 16 short streams: fetch ahead of each.
          _mm_prefetch(reinterpret_cast<const char*>(row) + kPackPrefetchBytes, _MM_HINT_T0);
          v = _mm512_maskz_loadu_epi8(m, row);
        }
        r[i] = _mm512_castsi512_ps(flip_sign_bits(v));
      }
      transpose16x16(r);  // r[c]: group k0 / 4 + c of the 16 rows
      const std::int64_t count = std::min<std::int64_t>(16, groups - k0 / 4);
      for (std::int64_t c = 0; c < count; ++c)
        _mm512_storeu_ps(p + ((k0 / 4 + c) * 32 + first_row) * 4, r[c]);
    }
  }
}

// 32-row sums Σ (w + 128) q for T tokens, as two vectors per token.
template <int T>
void tile(const std::int8_t* q, std::int64_t ldq, std::int64_t groups, const std::uint8_t* p,
          __m512i out[][2]) {
  __m512i acc[T][2];
#pragma GCC unroll 12
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
  for (std::int64_t g = 0; g < groups; ++g) {
    const __m512i w0 = _mm512_loadu_si512(p + g * 128), w1 = _mm512_loadu_si512(p + g * 128 + 64);
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      std::int32_t group;
      std::memcpy(&group, q + t * ldq + 4 * g, 4);
      const __m512i b = _mm512_set1_epi32(group);
      acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], w0, b);
      acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], w1, b);
    }
  }
#pragma GCC unroll 12
  for (int t = 0; t < T; ++t) {
    out[t][0] = acc[t][0];
    out[t][1] = acc[t][1];
  }
}

using TileFn = void (*)(const std::int8_t*, std::int64_t, std::int64_t, const std::uint8_t*,
                        __m512i[][2]);
constexpr TileFn kTiles[kTileTokens + 1] = {nullptr,  tile<1>,  tile<2>, tile<3>, tile<4>,
                                            tile<5>,  tile<6>,  tile<7>, tile<8>, tile<9>,
                                            tile<10>, tile<11>, tile<12>};

}  // namespace

void gemm_i8_avx512vnni(const I8Activations& x, std::int64_t n, std::span<const WeightView> ws,
                        std::span<float* const> ys) {
  const StripTasks tasks(ws);
  parallel_for(tasks.count(), [&](std::int64_t task) {
    const auto [i, s] = tasks.at(task);
    const WeightView& w = ws[i];
    float* y = ys[i];
    const auto* data = static_cast<const std::int8_t*>(w.data);
    const std::int64_t groups = (w.cols + 3) / 4;
    thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> packed;
    thread_local std::vector<float>
        outlier_w;  // the strip's outlier columns, packed as an f32 strip
    packed.resize(static_cast<std::size_t>(groups * kGemmStripRows * 4));
    const std::int64_t r0 = s * kGemmStripRows, rows = std::min(kGemmStripRows, w.rows - r0);
    pack_strip(data + r0 * w.cols, w.cols, rows, groups, packed.data());
    if (x.outliers > 0) {
      outlier_w.resize(static_cast<std::size_t>(kGemmStripRows * x.outliers));
      gather_outlier_weights(x, data, w.cols, r0, rows, kGemmStripRows, outlier_w.data());
    }
    const std::int64_t counts[2] = {std::min<std::int64_t>(16, rows),
                                    std::max<std::int64_t>(0, rows - 16)};
    for (std::int64_t t0 = 0; t0 < n; t0 += kTileTokens) {
      const auto tokens = static_cast<int>(std::min<std::int64_t>(kTileTokens, n - t0));
      __m512i sums[kTileTokens][2];
      kTiles[tokens](x.q + t0 * x.ldq, x.ldq, groups, packed.data(), sums);
      // The outlier part of the tile: a float product over the outlier columns, in the f32 tile.
      alignas(64) float outliers[kTileTokens][kGemmStripRows] = {};
      if (x.outliers > 0)
        gemm_f32_tile(x.outlier_x + t0 * x.outliers, tokens, x.outliers, outlier_w.data(),
                      &outliers[0][0], kGemmStripRows, 0xffff, 0xffff);
      for (int t = 0; t < tokens; ++t) {
        for (int half = 0; half < 2; ++half) {
          if (counts[half] == 0) continue;
          const std::int64_t r = r0 + 16 * half;
          const __mmask16 valid = first_lanes(counts[half]);
          const __m512 out =
              finish_i8_rows16(x, t0 + t, sums[t][half], _mm512_load_ps(&outliers[t][16 * half]),
                               w.scales + r, valid);
          _mm512_mask_storeu_ps(y + (t0 + t) * w.rows + r, valid, out);
        }
      }
    }
  });
}

}  // namespace sepal::cpu

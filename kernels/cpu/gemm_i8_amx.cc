// Compiled with -mamx-tile -mamx-int8 and AVX-512 F/BW/VL/VNNI. The LLM.int8() product for
// prompts on AMX tiles: TDPBSSD adds W[16 rows, 64 bytes] · Q[64 bytes, 16 tokens] into an int32
// tile of 16 rows by 16 tokens. The weights are read in place, 64 bytes of each of a strip's 32
// rows at a time; the activations are packed once per call into the tiles' 4-byte groups. The
// int32 sums are the exact Σ w q that the VNNI kernels compute, and the same inline steps
// (i8_rows_avx512.h) turn them into floats, so every output has the bits gemv_i8_avx512vnni
// gives its token alone.
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

constexpr std::int64_t kTileTokens = 16;  // tokens per activation tile (its columns)
constexpr std::int64_t kTileBytes = 64;   // bytes of the input dimension per tile step
constexpr std::int64_t kBlockTokens = 2 * kTileTokens;
constexpr int kOutlierTileTokens = 12;    // gemm_f32_tile's most tokens

static_assert(kGemmStripRows == 32, "a strip is two weight tiles of 16 rows");
static_assert(kI8RowAlign % kTileBytes == 0, "quantized rows hold whole tile steps");

// Palette 1: tiles 0..3 the sums of a 32 x 32 block (rows half h, tokens half b at 2h + b),
// tiles 4 and 5 the weights of the two row halves, 6 and 7 the activations of the two token
// halves; every tile 16 lines of 64 bytes.
struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t bytes_per_line[16] = {};
  std::uint8_t lines[16] = {};
};

void configure_tiles() {
  TileConfig config;
  for (int i = 0; i < 8; ++i) {
    config.bytes_per_line[i] = kTileBytes;
    config.lines[i] = 16;
  }
  _tile_loadconfig(&config);
}

// packed[((b * steps + s) * 16 + g) * 64 + 4 t + i] = q[16 b + t, 64 s + 4 g + i], zero for
// tokens past n: one 1 KiB tile per block b of 16 tokens and step s of 64 bytes.
void pack_activations(const I8Activations& x, std::int64_t n, std::int64_t blocks, std::int64_t steps,
                      std::int8_t* packed) {
  parallel_for(blocks, [&](std::int64_t b) {
    for (std::int64_t s = 0; s < steps; ++s) {
      __m512 r[16];
      for (std::int64_t t = 0; t < 16; ++t) {
        const std::int64_t token = b * kTileTokens + t;
        r[t] = token < n ? _mm512_loadu_ps(x.q + token * x.ldq + s * kTileBytes) : _mm512_setzero_ps();
      }
      transpose16x16(r);  // r[g]: group g of the 16 tokens
      std::int8_t* tile = packed + (b * steps + s) * kTileTokens * kTileBytes;
      for (int g = 0; g < 16; ++g) _mm512_storeu_ps(tile + g * kTileBytes, r[g]);
    }
  });
}

// The strip's rows [0, rows) of w in the tiles' order: packed[(s * 32 + r) * 64 + i] =
// w[r, 64 s + i], zero past cols and for rows past `rows`. Each tile then reads 1 KiB in a row
// (rows of a power-of-two width read in place would fall into a few of the cache's sets).
void pack_strip(const std::int8_t* w, std::int64_t cols, std::int64_t rows, std::int64_t steps,
                std::int8_t* packed) {
  for (std::int64_t r = 0; r < kGemmStripRows; ++r) {  // each row read front to back: one stream
    for (std::int64_t s = 0; s < steps; ++s) {
      const std::int64_t left = cols - s * kTileBytes;
      const __mmask64 m = left >= kTileBytes ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
      const __m512i v = r < rows ? _mm512_maskz_loadu_epi8(m, w + r * cols + s * kTileBytes) : _mm512_setzero_si512();
      _mm512_store_si512(packed + (s * kGemmStripRows + r) * kTileBytes, v);
    }
  }
}

// The 32 x 32 block of sums for the strip's rows and the tokens from block b on (16 b), over
// every step: sums[2 h + u] is the tile of rows 16 h.. and tokens 16 (b + u).. . The strip and
// the activations are in the second-level cache; each step fetches the next step's activations
// into the first while it computes (measured: 1.2 times as fast; fetching the weights too gains
// nothing, nor does passing every block over a chunk of the strip that stays in the first level).
void block_sums(const std::int8_t* w, const std::int8_t* packed, std::int64_t b, std::int64_t steps,
                std::int32_t sums[4][16][16]) {
  constexpr std::int64_t kTile = kTileTokens * kTileBytes;
  const std::int8_t* x0 = packed + b * steps * kTile;
  const std::int8_t* x1 = x0 + steps * kTile;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (std::int64_t s = 0; s < steps; ++s) {
    for (std::int64_t line = 0; line < kTile; line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(x0 + (s + 1) * kTile + line), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(x1 + (s + 1) * kTile + line), _MM_HINT_T0);
    }
    _tile_loadd(4, w + 2 * s * kTile, kTileBytes);
    _tile_loadd(5, w + (2 * s + 1) * kTile, kTileBytes);
    _tile_loadd(6, x0 + s * kTile, kTileBytes);
    _tile_loadd(7, x1 + s * kTile, kTileBytes);
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(2, 5, 6);
    _tile_dpbssd(3, 5, 7);
  }
  _tile_stored(0, sums[0], 64);
  _tile_stored(1, sums[1], 64);
  _tile_stored(2, sums[2], 64);
  _tile_stored(3, sums[3], 64);
}

}  // namespace

void gemm_i8_amx(const I8Activations& x, std::int64_t n, std::span<const WeightView> ws,
                 std::span<float* const> ys) {
  const std::int64_t cols = ws[0].cols;
  const std::int64_t steps = x.ldq / kTileBytes;
  const std::int64_t blocks = (n + kBlockTokens - 1) / kBlockTokens * 2;  // of 16 tokens, even
  thread_local std::vector<std::int8_t, CacheLineAllocator<std::int8_t>> packing;
  packing.resize(static_cast<std::size_t>(blocks * steps * kTileTokens * kTileBytes));
  std::int8_t* const packed = packing.data();  // the workers see their own thread_local
  pack_activations(x, n, blocks, steps, packed);

  const StripTasks tasks(ws);
  parallel_for(tasks.count(), [&](std::int64_t task) {
    const auto [i, s] = tasks.at(task);
    const WeightView& w = ws[i];
    float* y = ys[i];
    const auto* data = static_cast<const std::int8_t*>(w.data);
    const std::int64_t r0 = s * kGemmStripRows, rows = std::min(kGemmStripRows, w.rows - r0);
    thread_local std::vector<std::int8_t, CacheLineAllocator<std::int8_t>> strip;
    strip.resize(static_cast<std::size_t>(steps * kGemmStripRows * kTileBytes));
    pack_strip(data + r0 * cols, cols, rows, steps, strip.data());
    thread_local std::vector<float> outlier_w;  // the strip's outlier columns, as gemm_f32_tile reads them
    if (x.outliers > 0) {
      outlier_w.resize(static_cast<std::size_t>(kGemmStripRows * x.outliers));
      gather_outlier_weights(x, data, cols, r0, rows, kGemmStripRows, outlier_w.data());
    }
    const std::int64_t counts[2] = {std::min<std::int64_t>(16, rows), std::max<std::int64_t>(0, rows - 16)};
    configure_tiles();
    for (std::int64_t b = 0; b < blocks; b += 2) {
      const std::int64_t t0 = b * kTileTokens, tokens = std::min(kBlockTokens, n - t0);
      alignas(64) std::int32_t sums[4][16][16];
      block_sums(strip.data(), packed, b, steps, sums);
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
          __m512 by_token[16];  // sums[.][row][token] turned to by_token[token][row]
          for (int row = 0; row < 16; ++row)
            by_token[row] = _mm512_load_ps(reinterpret_cast<const float*>(sums[2 * half + token_half][row]));
          transpose16x16(by_token);
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

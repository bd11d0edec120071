#pragma once
// What the AMX prompt kernels (gemm_i8_amx.cc, gemm_bf16_amx.cc) share: the tile layout, the
// packing of a strip of 32 weight rows and of the activations into tiles, and the transposition
// of a block of results. Internal to kernels/cpu; include only from translation units compiled
// with -mamx-tile and AVX-512 F/BW.
//
// Both kernels add a weight tile W[16 rows, 64 bytes] times an activation tile X[64 bytes, 16
// tokens] into a 16 x 16 tile of results, four at a time: rows 16 h.. and tokens 16 u.. of a
// block of 32 rows by 32 tokens in tile 2 h + u, the two row halves' weights in tiles 4 and 5,
// the two token halves' activations in tiles 6 and 7. A step is 64 bytes of the input dimension
// (64 int8 values or 32 bf16 ones).

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/transpose_avx512.h"
#include "kernels/parallel.h"

namespace sepal::cpu::amx {

inline constexpr std::int64_t kTileTokens = 16;  // tokens per activation tile (its columns)
inline constexpr std::int64_t kTileBytes = 64;   // bytes of the input dimension per step
inline constexpr std::int64_t kTile = kTileTokens * kTileBytes;
inline constexpr std::int64_t kBlockTokens = 2 * kTileTokens;

static_assert(kGemmStripRows == 32, "a strip is two weight tiles of 16 rows");

/// Palette 1 with tiles 0..7 of 16 lines of 64 bytes, on the calling thread (release with
/// _tile_release() when done).
inline void configure_tiles() {
  struct alignas(64) {
    std::uint8_t palette = 1;
    std::uint8_t start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t bytes_per_line[16] = {};
    std::uint8_t lines[16] = {};
  } config;
  for (int i = 0; i < 8; ++i) {
    config.bytes_per_line[i] = kTileBytes;
    config.lines[i] = 16;
  }
  _tile_loadconfig(&config);
}

/// Blocks of 16 tokens for n tokens, rounded up to an even count (a block pair at a time).
inline std::int64_t token_blocks(std::int64_t n) { return (n + kBlockTokens - 1) / kBlockTokens * 2; }

/// Activations in tiles: packed[((b * steps + s) * 16 + g) * 64 + 4 t + i] = byte 64 s + 4 g + i
/// of token 16 b + t's row (rows[token * row_bytes ..], row_bytes >= 64 steps), zero for tokens
/// past n: one 1 KiB tile per block b of 16 tokens and step s.
inline void pack_tokens(const std::uint8_t* rows, std::int64_t row_bytes, std::int64_t n, std::int64_t blocks,
                        std::int64_t steps, std::uint8_t* packed) {
  parallel_for(blocks, [&](std::int64_t b) {
    for (std::int64_t s = 0; s < steps; ++s) {
      __m512 r[16];
      for (std::int64_t t = 0; t < 16; ++t) {
        const std::int64_t token = b * kTileTokens + t;
        r[t] = token < n ? _mm512_loadu_ps(rows + token * row_bytes + s * kTileBytes) : _mm512_setzero_ps();
      }
      transpose16x16(r);  // r[g]: the 4-byte group g of the 16 tokens
      std::uint8_t* tile = packed + (b * steps + s) * kTile;
      for (int g = 0; g < 16; ++g) _mm512_storeu_ps(tile + g * kTileBytes, r[g]);
    }
  });
}

/// A strip's rows [0, rows) (row_bytes each) in the tiles' order: packed[(s * 32 + r) * 64 + i]
/// = byte 64 s + i of row r, zero past row_bytes and for rows past `rows`. Each tile then reads
/// 1 KiB in a row (rows of a power-of-two width read in place would fall into a few of the
/// cache's sets); each row is read front to back, one stream.
inline void pack_strip(const std::uint8_t* w, std::int64_t row_bytes, std::int64_t rows, std::int64_t steps,
                       std::uint8_t* packed) {
  for (std::int64_t r = 0; r < kGemmStripRows; ++r) {
    for (std::int64_t s = 0; s < steps; ++s) {
      const std::int64_t left = row_bytes - s * kTileBytes;
      const __mmask64 m = left >= kTileBytes ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
      const __m512i v = r < rows ? _mm512_maskz_loadu_epi8(m, w + r * row_bytes + s * kTileBytes) : _mm512_setzero_si512();
      _mm512_store_si512(packed + (s * kGemmStripRows + r) * kTileBytes, v);
    }
  }
}

/// Fetches the tiles at x0 and x1 (1 KiB each) into the first-level cache.
inline void prefetch_tiles(const std::uint8_t* x0, const std::uint8_t* x1) {
  for (std::int64_t line = 0; line < kTile; line += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(x0 + line), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(x1 + line), _MM_HINT_T0);
  }
}

/// One 32 x 32 block of results (tiles 0..3, stored to out[2 h + u][16][16]) for a strip packed
/// by pack_strip and the tokens from block b on (16 b), from activations packed by pack_tokens in
/// `parts` buffers: for each step, the strip's two weight tiles (4, 5) times each part's two
/// activation tiles (6, 7) in turn, `multiply()` adding the four products into tiles 0..3 (TDPBSSD
/// or TDPBF16PS: the tile numbers must be constants where it is written). The strip and the
/// activations are in the second-level cache; each step fetches the next step's activations into
/// the first while it computes (measured with int8: 1.2 times as fast; fetching the weights too
/// gains nothing, nor does passing every block over a chunk of the strip that stays in the first
/// level).
template <int kParts, typename Multiply>
void block_tiles(const std::uint8_t* w, const std::uint8_t* const packed[kParts], std::int64_t b, std::int64_t steps,
                 void* out, Multiply multiply) {
  const std::int64_t first = b * steps * kTile, second = first + steps * kTile;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (std::int64_t s = 0; s < steps; ++s) {
    for (int p = 0; p < kParts; ++p) prefetch_tiles(packed[p] + first + (s + 1) * kTile, packed[p] + second + (s + 1) * kTile);
    _tile_loadd(4, w + 2 * s * kTile, kTileBytes);
    _tile_loadd(5, w + (2 * s + 1) * kTile, kTileBytes);
    for (int p = 0; p < kParts; ++p) {
      _tile_loadd(6, packed[p] + first + s * kTile, kTileBytes);
      _tile_loadd(7, packed[p] + second + s * kTile, kTileBytes);
      multiply();
    }
  }
  auto* tiles = static_cast<std::uint8_t*>(out);
  _tile_stored(0, tiles, 64);
  _tile_stored(1, tiles + kTile, 64);
  _tile_stored(2, tiles + 2 * kTile, 64);
  _tile_stored(3, tiles + 3 * kTile, 64);
}

/// by_token[t] = lane t of every line of a 16 x 16 tile of 32-bit results stored line by line
/// (tile[row][token]): the 16 rows' results for token t.
inline void tile_by_token(const void* tile, __m512 by_token[16]) {
  const auto* lines = static_cast<const float*>(tile);
  for (int row = 0; row < 16; ++row) by_token[row] = _mm512_load_ps(lines + 16 * row);
  transpose16x16(by_token);
}

}  // namespace sepal::cpu::amx

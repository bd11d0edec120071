#pragma once
// f32 values on bf16 AMX tiles without loss: a value is split into three bf16 parts whose sum is
// the value exactly (each part takes the next 8 bits of its 24-bit significand; rounding to
// nearest leaves a remainder the next part holds exactly), and TDPBF16PS adds the products of
// each part in turn, every one of them exact in f32. For the AMX kernels (gemm_bf16_amx.cc,
// gemm_i8_amx.cc, input_grad_amx.cc); include only from translation units compiled with
// -mamx-tile -mamx-bf16 -mavx512bf16 and AVX-512 F/BW/VL. Inputs below 2^-126 count as zero in
// the tile unit, as do results there.

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/lanes_avx512.h"

namespace sepal::cpu::amx {

inline constexpr int kBf16Parts = 3;                               // bf16 parts of an f32 value
inline constexpr std::int64_t kBf16StepValues = kTileBytes / 2;  // bf16 values per step

inline __m256i to_bf16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }
inline __m512 from_bf16(__m256i bits) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)); }

/// parts[p][t * ld + k]: part p of x[t, k] (rows of `cols` values) as bf16, zero for cols <= k <
/// ld (a multiple of 16), for tokens [t0, t1).
inline void split_bf16_parts(const float* x, std::int64_t cols, std::int64_t ld, std::int64_t t0, std::int64_t t1,
                             std::uint16_t* const parts[kBf16Parts]) {
  for (std::int64_t t = t0; t < t1; ++t) {
    for (std::int64_t k = 0; k < ld; k += 16) {
      __m512 rest = _mm512_maskz_loadu_ps(first_lanes(std::max<std::int64_t>(0, cols - k)), x + t * cols + k);
      for (int p = 0; p < kBf16Parts; ++p) {
        const __m256i part = to_bf16(rest);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(parts[p] + t * ld + k), part);
        rest = _mm512_sub_ps(rest, from_bf16(part));  // exact: the part is rest rounded to 8 bits
      }
    }
  }
}

/// Tiles 0..3 += the bf16 products of tiles 4, 5 (weights) and 6, 7 (one part of the activations).
inline void multiply_bf16() {
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(1, 4, 7);
  _tile_dpbf16ps(2, 5, 6);
  _tile_dpbf16ps(3, 5, 7);
}

}  // namespace sepal::cpu::amx

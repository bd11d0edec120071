// Compiled with -mamx-tile -mamx-bf16 -mavx512bf16 and AVX-512 F/BW/VL. Prompt products with
// bf16 weights on AMX tiles (amx_tiles.h). TDPBF16PS multiplies bf16 by bf16, so each token's
// f32 activations are split into three bf16 parts whose sum is the activation exactly (each
// part takes the next 8 bits of its 24-bit significand; rounding to nearest leaves a remainder
// the next part holds exactly), and the tiles add the weights times each part in turn: every
// product of a weight and a part is exact in f32, and every output is one fixed sequence of f32
// additions over the input dimension (step by step; within a step the three parts, each in the
// tile unit's own order), so a token's result does not depend on the other tokens of the call,
// its block, or the thread count. The sums round differently from the AVX-512 kernels' chain of
// fused multiply-adds (hosts on AMX announce their own numerics for bf16 weights) and are as
// accurate (tests/kernels/kernels_test.cc checks both against a double reference). Inputs below
// 2^-126 count as zero in the tile unit, as do results there.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/cpu/amx_bf16_parts.h"
#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/lanes_avx512.h"
#include "kernels/parallel.h"

namespace sepal::cpu {
namespace {

using amx::kBlockTokens;
using amx::kTile;
using amx::kTileBytes;
using amx::kTileTokens;
using amx::kBf16Parts;
using amx::kBf16StepValues;

}  // namespace

void gemm_bf16_amx(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys) {
  const std::int64_t cols = ws[0].cols;
  const std::int64_t ld = (cols + kBf16StepValues - 1) / kBf16StepValues * kBf16StepValues;
  const std::int64_t steps = ld / kBf16StepValues;
  const std::int64_t blocks = amx::token_blocks(n);
  thread_local std::vector<std::uint16_t, CacheLineAllocator<std::uint16_t>> split;
  thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> packing;
  split.resize(static_cast<std::size_t>(kBf16Parts * n * ld));
  packing.resize(static_cast<std::size_t>(kBf16Parts * blocks * steps * kTile));
  // The workers see their own thread_locals: the lambdas reach the caller's through pointers.
  std::uint16_t* const parts[kBf16Parts] = {split.data(), split.data() + n * ld, split.data() + 2 * n * ld};
  const std::uint8_t* packed[kBf16Parts];
  for (int p = 0; p < kBf16Parts; ++p) packed[p] = packing.data() + p * blocks * steps * kTile;
  parallel_for((n + kTileTokens - 1) / kTileTokens, [&](std::int64_t b) {
    amx::split_bf16_parts(x, cols, ld, b * kTileTokens, std::min(n, (b + 1) * kTileTokens), parts);
  });
  for (int p = 0; p < kBf16Parts; ++p)
    amx::pack_tokens(reinterpret_cast<const std::uint8_t*>(parts[p]), 2 * ld, n, blocks, steps,
                     packing.data() + p * blocks * steps * kTile);

  const StripTasks tasks(ws);
  parallel_for(tasks.count(), [&](std::int64_t task) {
    const auto [i, s] = tasks.at(task);
    const WeightView& w = ws[i];
    float* y = ys[i];
    const auto* data = static_cast<const std::uint16_t*>(w.data);
    const std::int64_t r0 = s * kGemmStripRows, rows = std::min(kGemmStripRows, w.rows - r0);
    thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> strip;
    strip.resize(static_cast<std::size_t>(steps * kGemmStripRows * kTileBytes));
    amx::pack_strip(reinterpret_cast<const std::uint8_t*>(data + r0 * cols), 2 * cols, rows, steps, strip.data());
    const std::int64_t counts[2] = {std::min<std::int64_t>(16, rows), std::max<std::int64_t>(0, rows - 16)};
    amx::configure_tiles();
    for (std::int64_t b = 0; b < blocks; b += 2) {
      const std::int64_t t0 = b * kTileTokens, tokens = std::min(kBlockTokens, n - t0);
      alignas(64) float out[4][16][16];
      amx::block_tiles<kBf16Parts>(strip.data(), packed, b, steps, out, amx::multiply_bf16);
      for (int half = 0; half < 2; ++half) {
        if (counts[half] == 0) continue;
        const __mmask16 valid = first_lanes(counts[half]);
        for (int token_half = 0; token_half < 2; ++token_half) {
          __m512 by_token[16];
          amx::tile_by_token(out[2 * half + token_half], by_token);
          for (std::int64_t t = 0; t < 16; ++t) {
            const std::int64_t u = token_half * kTileTokens + t;
            if (u >= tokens) break;
            _mm512_mask_storeu_ps(y + (t0 + u) * w.rows + r0 + 16 * half, valid, by_token[t]);
          }
        }
      }
    }
    _tile_release();
  });
}

}  // namespace sepal::cpu

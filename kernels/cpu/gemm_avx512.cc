// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/lanes_avx512.h"
#include "kernels/cpu/transpose_avx512.h"
#include "kernels/parallel.h"

namespace sepal::cpu {
namespace {

constexpr int kTileTokens = 12;
constexpr std::int64_t kPackPrefetchBytes = 512;  // 12 tokens x 2 vectors = 24 accumulators of 32

inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const std::uint16_t* p, __mmask16 m) {
  const __m256i bits = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// p[k * 32 + j] = w[j, k] as f32 for the strip's `rows` rows (zero for j >= rows), k < cols.
template <typename T>
void pack_strip(const T* w, std::int64_t cols, std::int64_t rows, float* p) {
  for (int half = 0; half < 2; ++half) {
    const std::int64_t first_row = 16 * half;
    for (std::int64_t k0 = 0; k0 < cols; k0 += 16) {
      const __mmask16 m = first_lanes(cols - k0);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        const T* row = w + (first_row + i) * cols + k0;
        if (first_row + i < rows) {
          // 16 rows read side by side are 16 short streams: fetch ahead of each.
          _mm_prefetch(reinterpret_cast<const char*>(row) + kPackPrefetchBytes, _MM_HINT_T0);
          r[i] = load16(row, m);
        } else {
          r[i] = _mm512_setzero_ps();
        }
      }
      transpose16x16(r);
      const std::int64_t ks = std::min<std::int64_t>(16, cols - k0);
      for (std::int64_t c = 0; c < ks; ++c) _mm512_storeu_ps(p + (k0 + c) * 32 + first_row, r[c]);
    }
  }
}

// y[t, 0..32) for T tokens against a packed strip; m0/m1 mask the rows that exist.
template <int T>
void tile(const float* x, std::int64_t cols, const float* p, float* y, std::int64_t ldy,
          __mmask16 m0, __mmask16 m1) {
  __m512 acc[T][2];
#pragma GCC unroll 12
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  for (std::int64_t k = 0; k < cols; ++k) {
    const __m512 w0 = _mm512_loadu_ps(p + k * 32), w1 = _mm512_loadu_ps(p + k * 32 + 16);
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      const __m512 b = _mm512_set1_ps(x[t * cols + k]);
      acc[t][0] = _mm512_fmadd_ps(w0, b, acc[t][0]);
      acc[t][1] = _mm512_fmadd_ps(w1, b, acc[t][1]);
    }
  }
#pragma GCC unroll 12
  for (int t = 0; t < T; ++t) {
    _mm512_mask_storeu_ps(y + t * ldy, m0, acc[t][0]);
    _mm512_mask_storeu_ps(y + t * ldy + 16, m1, acc[t][1]);
  }
}

using TileFn = void (*)(const float*, std::int64_t, const float*, float*, std::int64_t, __mmask16,
                        __mmask16);
constexpr TileFn kTiles[kTileTokens + 1] = {nullptr,  tile<1>,  tile<2>, tile<3>, tile<4>,
                                            tile<5>,  tile<6>,  tile<7>, tile<8>, tile<9>,
                                            tile<10>, tile<11>, tile<12>};

template <typename T>
void gemm_strip(const float* x, std::int64_t n, const WeightView& w, float* y, std::int64_t s) {
  const T* data = static_cast<const T*>(w.data);
  thread_local AlignedFloats packed;
  packed.resize(static_cast<std::size_t>(w.cols * kGemmStripRows));
  const std::int64_t r0 = s * kGemmStripRows, rows = std::min(kGemmStripRows, w.rows - r0);
  pack_strip(data + r0 * w.cols, w.cols, rows, packed.data());
  const __mmask16 m0 = first_lanes(rows), m1 = first_lanes(std::max<std::int64_t>(0, rows - 16));
  for (std::int64_t t0 = 0; t0 < n; t0 += kTileTokens) {
    const auto tokens = static_cast<int>(std::min<std::int64_t>(kTileTokens, n - t0));
    kTiles[tokens](x + t0 * w.cols, w.cols, packed.data(), y + t0 * w.rows + r0, w.rows, m0, m1);
  }
}

}  // namespace

void gemm_f32_tile(const float* x, int tokens, std::int64_t k, const float* packed, float* y,
                   std::int64_t ldy, std::uint16_t rows_lo, std::uint16_t rows_hi) {
  kTiles[tokens](x, k, packed, y, ldy, rows_lo, rows_hi);
}

void gemm_avx512(const float* x, std::int64_t n, std::span<const WeightView> ws,
                 std::span<float* const> ys) {
  const StripTasks tasks(ws);
  parallel_for(tasks.count(), [&](std::int64_t task) {
    const auto [i, strip] = tasks.at(task);
    if (ws[i].dtype == DType::kF32) {
      gemm_strip<float>(x, n, ws[i], ys[i], strip);
    } else {
      gemm_strip<std::uint16_t>(x, n, ws[i], ys[i], strip);
    }
  });
}

}  // namespace sepal::cpu

// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma. f32 rows, and bf16 rows widened
// to f32 (exact: a bf16 is the top half of an f32). Blocks of 16 rows, each row read from start to
// end, so a thread's slice is one stream in memory order, which the hardware prefetcher follows;
// four accumulators per token against the FMA latency; the 16 rows' accumulators are reduced
// together into one vector of outputs.
// bf16 rows also get a software prefetch 2 KiB ahead: a bf16 load brings in 32 bytes where an f32
// one brings 64, so the instructions in flight cover half the bytes and the demand misses alone
// kept fewer lines coming (decode on the 110M shape 0.51 to 0.57 of the roofline without it, 0.66
// to 0.75 with it; 1.3 to 1.7 times the tokens/s on the 1.1B shape). For f32 it changed nothing
// measurable (1.1B shape, same run) or was slower (0.86 of the bandwidth, an earlier run).
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "kernels/cpu/gemv.h"
#include "kernels/cpu/lanes_avx512.h"

namespace sepal::cpu {
namespace {

inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const std::uint16_t* p, __mmask16 m) {
  const __m256i bits = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// Accumulators per token, interleaved steps (FMA latency 4, two units). The same for every token
// count: a token's sum is then added in the same order whether it is decoded alone or with up to
// three others (a tree step of speculative decoding gives exactly the bits of decoding).
template <int N>
constexpr int kChains = 4;

// One step of 16 columns from k into chain C.
template <typename T, int N, int C>
inline void step(const T* row, const float* x, std::int64_t cols, std::int64_t k, __mmask16 m,
                 __m512 (&acc)[N][kChains<N>]) {
  const __m512 wv = load16(row + k, m);
  for (int t = 0; t < N; ++t)
    acc[t][C] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + t * cols + k), acc[t][C]);
}

constexpr std::int64_t kBf16PrefetchBytes = 2048;

// kChains<N> steps of 16 columns from k (64 columns: two cache lines of bf16, four of f32).
template <typename T, int N, int... C>
inline void steps(const T* row, const float* x, std::int64_t cols, std::int64_t k,
                  __m512 (&acc)[N][kChains<N>], std::integer_sequence<int, C...>) {
  if constexpr (sizeof(T) == 2) {
    static_assert(sizeof...(C) * 16 * sizeof(T) == 128, "the two prefetches cover one call's two lines");
    const char* ahead = reinterpret_cast<const char*>(row + k) + kBf16PrefetchBytes;
    _mm_prefetch(ahead, _MM_HINT_T0);
    _mm_prefetch(ahead + 64, _MM_HINT_T0);
  }
  (step<T, N, C>(row, x, cols, k + 16 * C, static_cast<__mmask16>(0xffff), acc), ...);
}

// Rows r0 .. r0 + count (count <= 16) for N tokens.
template <typename T, int N>
void block16(const float* x, const WeightView& w, std::int64_t r0, std::int64_t count, float* y) {
  constexpr int kC = kChains<N>;
  const std::int64_t cols = w.cols;
  const T* rows = static_cast<const T*>(w.data) + r0 * cols;
  __m512 sums[N][16];
  for (std::int64_t i = 0; i < 16; ++i) {
    __m512 acc[N][kC];
    for (int t = 0; t < N; ++t)
      for (int c = 0; c < kC; ++c) acc[t][c] = _mm512_setzero_ps();
    if (i < count) {
      const T* row = rows + i * cols;
      std::int64_t k = 0;
      for (; k + 16 * kC <= cols; k += 16 * kC)
        steps<T, N>(row, x, cols, k, acc, std::make_integer_sequence<int, kC>());
      for (; k < cols; k += 16) {
        const std::int64_t left = cols - k;
        step<T, N, 0>(
            row, x, cols, k,
            left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u),
            acc);
      }
    }
    for (int t = 0; t < N; ++t) {
      __m512 sum = acc[t][0];
      for (int c = 1; c < kC; ++c) sum = _mm512_add_ps(sum, acc[t][c]);
      sums[t][i] = sum;
    }
  }
  const __mmask16 valid = first_lanes(count);
  for (int t = 0; t < N; ++t)
    _mm512_mask_storeu_ps(y + t * w.rows + r0, valid, reduce16_ps(sums[t]));
}

template <typename T, int N>
void gemv_n(const float* x, const WeightView& w, std::int64_t r0, std::int64_t r1, float* y) {
  for (std::int64_t r = r0; r < r1; r += 16)
    block16<T, N>(x, w, r, std::min<std::int64_t>(16, r1 - r), y);
}

template <typename T>
void gemv_typed(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                std::int64_t r1, float* y) {
  switch (n) {
    case 1:
      return gemv_n<T, 1>(x, w, r0, r1, y);
    case 2:
      return gemv_n<T, 2>(x, w, r0, r1, y);
    case 3:
      return gemv_n<T, 3>(x, w, r0, r1, y);
    default:
      return gemv_n<T, 4>(x, w, r0, r1, y);
  }
}

}  // namespace

void gemv_avx512(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                 std::int64_t r1, float* y) {
  if (w.dtype == DType::kF32) {
    gemv_typed<float>(x, n, w, r0, r1, y);
  } else {
    gemv_typed<std::uint16_t>(x, n, w, r0, r1, y);
  }
}

}  // namespace sepal::cpu

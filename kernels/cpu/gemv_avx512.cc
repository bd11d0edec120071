// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma. f32 rows, and bf16 rows widened
// to f32 (exact: a bf16 is the top half of an f32). Blocks of 16 rows, each row read from start to
// end, so a thread's slice is one stream in memory order; four accumulators per token against the
// FMA latency; the 16 rows' accumulators are reduced together into one vector of outputs.
//
// Both are bound by how many lines are on their way from memory, not by arithmetic:
// - Every step prefetches its lines ahead, as far and into the cache kernels/cpu/stream_prefetch.h
//   picks for the CPU's make. The hardware prefetcher alone kept too few in flight: on the Xeon
//   two threads streaming 256 MiB of rows (bench: a standalone loop of this kernel's shape,
//   medians of 6 rounds alternated with a plain read of 59-62 GB/s) read f32 rows at 32 to 38
//   GB/s without it, 47 to 58 with 2 KiB, 58 to 64 with 4 KiB and 60 to 67 with 8 KiB. There, into the
//   second level: over 2 GiB (memory, not its 300 MiB L3) bf16 rows read 33.9 GB/s against 31.4
//   into the first (a plain read 36.6), f32 and int8 the same or faster; decode on the 1.1B shape
//   1.01 to 1.06 times as fast (f32, bf16; alternated runs), on the 110M shape, whose bf16
//   weights sit in that L3, bf16 0.97 times.
// - bf16 rows are read 64 bytes at a time (one load per line, as f32's): a line's 32 values are
//   split into its even values (shifted up 16 bits) and odd ones (the low half masked off), each
//   multiplied by the activations' matching half, laid out so once per product
//   (lay_out_bf16_activations_avx512; matmul_streaming calls it once for all its chunks of
//   rows). Loading 32 bytes and widening them (two loads and two port-5 widenings per line, 2 KiB
//   prefetch) read 36 to 47 GB/s in the loop above where this reads 49 to 60; the 1.1B shape's
//   bf16 decode is 1.11 to 1.13 times as fast.
// Columns past the last whole 32 (bf16) take the widening loads, masked, on the activations as
// they are.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/lanes_avx512.h"
#include "kernels/cpu/stream_prefetch.h"

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

template <typename T>
inline void prefetch_ahead(const T* p, int lines, const StreamPrefetch& how) {
  const char* at = reinterpret_cast<const char*>(p);
  for (int l = 0; l < lines; ++l) prefetch_ahead_of(at + 64 * l, how);
}

// One step of 16 columns from k into chain C.
template <typename T, int N, int C>
inline void step(const T* row, const float* x, std::int64_t cols, std::int64_t k, __mmask16 m,
                 __m512 (&acc)[N][kChains<N>]) {
  const __m512 wv = load16(row + k, m);
  for (int t = 0; t < N; ++t)
    acc[t][C] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + t * cols + k), acc[t][C]);
}

// 64 f32 columns from k: four lines, one step into each chain.
template <int N>
inline void steps64(const float* row, const float* x, std::int64_t cols, std::int64_t k,
                    const StreamPrefetch& how, __m512 (&acc)[N][kChains<N>]) {
  prefetch_ahead(row + k, 4, how);
  constexpr auto all = static_cast<__mmask16>(0xffff);
  step<float, N, 0>(row, x, cols, k, all, acc);
  step<float, N, 1>(row, x, cols, k + 16, all, acc);
  step<float, N, 2>(row, x, cols, k + 32, all, acc);
  step<float, N, 3>(row, x, cols, k + 48, all, acc);
}

// Activations laid out by lay_out_bf16_activations_avx512 (`whole`: the columns in whole 32s, the
// layout's leading dimension).
struct EvenOdd {
  const float* data;
  std::int64_t whole;
};

// 32 bf16 columns from k (one line) into chains C (even columns) and C + 1 (odd ones).
template <int N, int C>
inline void line32(const std::uint16_t* row, const EvenOdd& xs, std::int64_t k,
                   __m512 (&acc)[N][kChains<N>]) {
  const __m512i bits = _mm512_loadu_si512(row + k);
  const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
  const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(-65536)));
  for (int t = 0; t < N; ++t) {
    const float* x = xs.data + t * xs.whole + k;
    acc[t][C] = _mm512_fmadd_ps(even, _mm512_loadu_ps(x), acc[t][C]);
    acc[t][C + 1] = _mm512_fmadd_ps(odd, _mm512_loadu_ps(x + 16), acc[t][C + 1]);
  }
}

// One row into acc (zeroed by the caller).
template <int N>
inline void row_sums(const float* row, const float* x, const EvenOdd*, std::int64_t cols,
                     const StreamPrefetch& how, __m512 (&acc)[N][kChains<N>]) {
  std::int64_t k = 0;
  for (; k + 64 <= cols; k += 64) steps64<N>(row, x, cols, k, how, acc);
  for (; k < cols; k += 16) step<float, N, 0>(row, x, cols, k, first_lanes(cols - k), acc);
}

template <int N>
inline void row_sums(const std::uint16_t* row, const float* x, const EvenOdd* xs,
                     std::int64_t cols, const StreamPrefetch& how, __m512 (&acc)[N][kChains<N>]) {
  std::int64_t k = 0;
  for (; k + 64 <= xs->whole; k += 64) {
    prefetch_ahead(row + k, 2, how);
    line32<N, 0>(row, *xs, k, acc);
    line32<N, 2>(row, *xs, k + 32, acc);
  }
  if (k < xs->whole) {
    prefetch_ahead(row + k, 1, how);
    line32<N, 0>(row, *xs, k, acc);
    k += 32;
  }
  for (; k < cols; k += 16) step<std::uint16_t, N, 0>(row, x, cols, k, first_lanes(cols - k), acc);
}

// Rows r0 .. r0 + count (count <= 16) for N tokens.
template <typename T, int N>
void block16(const float* x, const EvenOdd* xs, const WeightView& w, std::int64_t r0,
             std::int64_t count, float* y) {
  constexpr int kC = kChains<N>;
  const std::int64_t cols = w.cols;
  const T* rows = static_cast<const T*>(w.data) + r0 * cols;
  const StreamPrefetch how = stream_prefetch();
  __m512 sums[N][16];
  for (std::int64_t i = 0; i < 16; ++i) {
    __m512 acc[N][kC];
    for (int t = 0; t < N; ++t)
      for (int c = 0; c < kC; ++c) acc[t][c] = _mm512_setzero_ps();
    if (i < count) row_sums<N>(rows + i * cols, x, xs, cols, how, acc);
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
void gemv_n(const float* x, const EvenOdd* xs, const WeightView& w, std::int64_t r0,
            std::int64_t r1, float* y) {
  for (std::int64_t r = r0; r < r1; r += 16)
    block16<T, N>(x, xs, w, r, std::min<std::int64_t>(16, r1 - r), y);
}

template <typename T>
void gemv_typed(const float* x, const EvenOdd* xs, std::int64_t n, const WeightView& w,
                std::int64_t r0, std::int64_t r1, float* y) {
  switch (n) {
    case 1:
      return gemv_n<T, 1>(x, xs, w, r0, r1, y);
    case 2:
      return gemv_n<T, 2>(x, xs, w, r0, r1, y);
    case 3:
      return gemv_n<T, 3>(x, xs, w, r0, r1, y);
    default:
      return gemv_n<T, 4>(x, xs, w, r0, r1, y);
  }
}

}  // namespace

void lay_out_bf16_activations_avx512(const float* x, std::int64_t n, std::int64_t cols,
                                     float* split) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const std::int64_t whole = cols / 32 * 32;
  for (std::int64_t t = 0; t < n; ++t) {
    const float* from = x + t * cols;
    float* to = split + t * whole;
    for (std::int64_t k = 0; k < whole; k += 32) {
      const __m512 a = _mm512_loadu_ps(from + k), b = _mm512_loadu_ps(from + k + 16);
      _mm512_storeu_ps(to + k, _mm512_permutex2var_ps(a, even, b));
      _mm512_storeu_ps(to + k + 16, _mm512_permutex2var_ps(a, odd, b));
    }
  }
}

void gemv_bf16_avx512(const float* x, const float* split, std::int64_t n, const WeightView& w,
                      std::int64_t r0, std::int64_t r1, float* y) {
  const EvenOdd xs{split, w.cols / 32 * 32};
  gemv_typed<std::uint16_t>(x, &xs, n, w, r0, r1, y);
}

void gemv_avx512(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                 std::int64_t r1, float* y) {
  if (w.dtype == DType::kF32) return gemv_typed<float>(x, nullptr, n, w, r0, r1, y);
  thread_local AlignedFloats split;  // on a cache line, as matmul_streaming's
  split.resize(static_cast<std::size_t>(n * (w.cols / 32 * 32)));
  lay_out_bf16_activations_avx512(x, n, w.cols, split.data());
  gemv_bf16_avx512(x, split.data(), n, w, r0, r1, y);
}

}  // namespace sepal::cpu

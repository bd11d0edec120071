// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16. bf16 rows with the CPU's
// BF16 dot products (VDPBF16PS: 32 products per instruction, exact in f32, summed in f32). The
// activations are split into three bf16 parts, x = p0 + p1 + p2 with p0 = bf16(x),
// p1 = bf16(x - p0), p2 = bf16(x - p0 - p1): 24 significant bits, all of an f32, so the result is
// as accurate as widening the weights to f32. Two parts (16 bits) measured errors up to 2e-5 of
// a dot product with cancellation; the third part costs nothing measurable at memory bandwidth.
#include <immintrin.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "kernels/cpu/gemv.h"

namespace sepal::cpu {
namespace {

constexpr int kParts = 3;
// Rows are read in memory order with a software prefetch this far ahead (one stream).
constexpr std::int64_t kPrefetchBytes = 2048;

// x[t, :] as kParts bf16 vectors, each token's padded with zeros to a multiple of 32:
// part p of token t starts at parts + (p * n + t) * ld.
struct SplitActivations {
  std::vector<std::uint16_t> parts;
  std::int64_t n = 0, ld = 0;
  const std::uint16_t* part(int p, std::int64_t t) const { return parts.data() + (p * n + t) * ld; }
};

void split(const float* x, std::int64_t n, std::int64_t cols, SplitActivations& s) {
  s.n = n;
  s.ld = (cols + 31) / 32 * 32;
  s.parts.assign(static_cast<std::size_t>(kParts * n * s.ld), 0);
  for (std::int64_t t = 0; t < n; ++t) {
    for (std::int64_t k = 0; k < cols; k += 16) {
      const std::int64_t left = cols - k;
      const __mmask16 m =
          left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
      __m512 rest = _mm512_maskz_loadu_ps(m, x + t * cols + k);
      for (int p = 0; p < kParts; ++p) {
        const __m256bh part = _mm512_cvtneps_pbh(rest);
        rest = _mm512_sub_ps(rest, _mm512_cvtpbh_ps(part));
        _mm256_mask_storeu_epi16(s.parts.data() + (p * n + t) * s.ld + k, m,
                                 reinterpret_cast<const __m256i&>(part));
      }
    }
  }
}

// Sixteen accumulators to one vector: lane i = the sum of acc[i]'s lanes.
inline __m512 reduce16_ps(const __m512 acc[16]) {
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i)
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(acc[2 * i], acc[2 * i + 1]),
                             _mm512_unpackhi_ps(acc[2 * i], acc[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(pairs[2 * i]), b = _mm512_castps_pd(pairs[2 * i + 1]);
    quads[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  const __m512 a = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_f32x4(quads[0], quads[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 b = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_f32x4(quads[2], quads[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Where each token's parts start (plain pointers: the split activations are thread-local, and
// the compiler would look their address up again at every step).
template <int N>
using PartPointers = const std::uint16_t* [N][kParts];

// Per token and part, accumulators for kChains<N> interleaved steps: VDPBF16PS has a latency of
// 6 cycles here, and one token's three parts alone would leave the units idle.
template <int N>
constexpr int kChains = N == 1   ? 4
                        : N == 2 ? 2
                                 : 1;
template <int N>
using Accumulators = __m512[N][kParts][kChains<N>];

// One step of 32 columns from k, into the accumulators of chain C.
template <int N, int C>
inline void step(const std::uint16_t* row, std::int64_t k, __mmask32 m, const PartPointers<N>& x,
                 Accumulators<N>& acc) {
  _mm_prefetch(reinterpret_cast<const char*>(row + k) + kPrefetchBytes, _MM_HINT_T0);
  const auto wv = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(m, row + k));
  for (int t = 0; t < N; ++t) {
    for (int p = 0; p < kParts; ++p) {
      const auto xv = reinterpret_cast<__m512bh>(_mm512_loadu_si512(x[t][p] + k));
      acc[t][p][C] = _mm512_dpbf16_ps(acc[t][p][C], wv, xv);
    }
  }
}

// kChains<N> full steps from k, one per chain.
template <int N, int... C>
inline void steps(const std::uint16_t* row, std::int64_t k, const PartPointers<N>& x,
                  Accumulators<N>& acc, std::integer_sequence<int, C...>) {
  (step<N, C>(row, k + 32 * C, ~__mmask32{0}, x, acc), ...);
}

// Rows r0 .. r0 + count (count <= 16) for N tokens.
template <int N>
void block16(const PartPointers<N>& x, const WeightView& w, std::int64_t r0, std::int64_t count,
             float* y) {
  constexpr int kC = kChains<N>;
  const std::int64_t cols = w.cols;
  const auto* rows = static_cast<const std::uint16_t*>(w.data) + r0 * cols;
  __m512 sums[N][16];
  for (std::int64_t i = 0; i < 16; ++i) {
    Accumulators<N> acc;
    for (int t = 0; t < N; ++t)
      for (int p = 0; p < kParts; ++p)
        for (int c = 0; c < kC; ++c) acc[t][p][c] = _mm512_setzero_ps();
    if (i < count) {
      const std::uint16_t* row = rows + i * cols;
      std::int64_t k = 0;
      for (; k + 32 * kC <= cols; k += 32 * kC)
        steps<N>(row, k, x, acc, std::make_integer_sequence<int, kC>());
      for (; k + 32 <= cols; k += 32) step<N, 0>(row, k, ~__mmask32{0}, x, acc);
      if (k < cols) step<N, 0>(row, k, (__mmask32{1} << (cols - k)) - 1, x, acc);
    }
    for (int t = 0; t < N; ++t) {
      __m512 part_sums[kParts];
      for (int p = 0; p < kParts; ++p) {
        part_sums[p] = acc[t][p][0];
        for (int c = 1; c < kC; ++c) part_sums[p] = _mm512_add_ps(part_sums[p], acc[t][p][c]);
      }
      // The small parts first, so that their sum is not lost against the large one.
      __m512 sum = part_sums[kParts - 1];
      for (int p = kParts - 2; p >= 0; --p) sum = _mm512_add_ps(sum, part_sums[p]);
      sums[t][i] = sum;
    }
  }
  const __mmask16 valid =
      count >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << count) - 1u);
  for (int t = 0; t < N; ++t)
    _mm512_mask_storeu_ps(y + t * w.rows + r0, valid, reduce16_ps(sums[t]));
}

template <int N>
void gemv_n(const SplitActivations& split_x, const WeightView& w, std::int64_t r0, std::int64_t r1,
            float* y) {
  PartPointers<N> x;
  for (int t = 0; t < N; ++t)
    for (int p = 0; p < kParts; ++p) x[t][p] = split_x.part(p, t);
  for (std::int64_t r = r0; r < r1; r += 16)
    block16<N>(x, w, r, std::min<std::int64_t>(16, r1 - r), y);
}

}  // namespace

void gemv_avx512bf16(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                     std::int64_t r1, float* y) {
  if (w.dtype != DType::kBF16) {
    gemv_avx512(x, n, w, r0, r1, y);
    return;
  }
  thread_local SplitActivations split_x;
  split(x, n, w.cols, split_x);
  const SplitActivations& parts = split_x;  // one thread-local lookup, not one per step
  switch (n) {
    case 1:
      return gemv_n<1>(parts, w, r0, r1, y);
    case 2:
      return gemv_n<2>(parts, w, r0, r1, y);
    case 3:
      return gemv_n<3>(parts, w, r0, r1, y);
    default:
      return gemv_n<4>(parts, w, r0, r1, y);
  }
}

}  // namespace sepal::cpu

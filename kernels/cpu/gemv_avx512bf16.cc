// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16. bf16 rows with the CPU's
// BF16 dot products (VDPBF16PS: 32 products per instruction). The activations are split into two
// bf16 vectors, hi = bf16(x) and lo = bf16(x - hi), so that hi + lo carries x to 16 significant
// bits (relative error below 2^-17): the weights are exact in bf16, and the products are exact in
// f32, so the result stays as close to the f32 product as the widening kernel's.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemv.h"

namespace sepal::cpu {
namespace {

// Rows are read in memory order with a software prefetch this far ahead (one stream).
constexpr std::int64_t kPrefetchBytes = 2048;

// x[t, :] as hi and lo bf16 halves, each token's padded with zeros to a multiple of 32.
struct SplitActivations {
  std::vector<std::uint16_t> hi, lo;
  std::int64_t ld = 0;
};

void split(const float* x, std::int64_t n, std::int64_t cols, SplitActivations& s) {
  s.ld = (cols + 31) / 32 * 32;
  s.hi.assign(static_cast<std::size_t>(n * s.ld), 0);
  s.lo.assign(static_cast<std::size_t>(n * s.ld), 0);
  for (std::int64_t t = 0; t < n; ++t) {
    for (std::int64_t k = 0; k < cols; k += 16) {
      const std::int64_t left = cols - k;
      const __mmask16 m =
          left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
      const __m512 v = _mm512_maskz_loadu_ps(m, x + t * cols + k);
      const __m256bh hi = _mm512_cvtneps_pbh(v);
      const __m512 rest = _mm512_sub_ps(v, _mm512_cvtpbh_ps(hi));
      const __m256bh lo = _mm512_cvtneps_pbh(rest);
      _mm256_mask_storeu_epi16(s.hi.data() + t * s.ld + k, m, reinterpret_cast<const __m256i&>(hi));
      _mm256_mask_storeu_epi16(s.lo.data() + t * s.ld + k, m, reinterpret_cast<const __m256i&>(lo));
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

// One step of 32 columns from k for N tokens into accumulators `acc[t][hi]` and `acc[t][lo]`.
template <int N, int Hi, int Lo>
inline void step(const std::uint16_t* row, std::int64_t k, __mmask32 m, const std::uint16_t* xhi,
                 const std::uint16_t* xlo, std::int64_t ld, __m512 acc[][4]) {
  _mm_prefetch(reinterpret_cast<const char*>(row + k) + kPrefetchBytes, _MM_HINT_T0);
  const auto wv = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(m, row + k));
  for (int t = 0; t < N; ++t) {
    acc[t][Hi] = _mm512_dpbf16_ps(acc[t][Hi], wv,
                                  reinterpret_cast<__m512bh>(_mm512_loadu_si512(xhi + t * ld + k)));
    acc[t][Lo] = _mm512_dpbf16_ps(acc[t][Lo], wv,
                                  reinterpret_cast<__m512bh>(_mm512_loadu_si512(xlo + t * ld + k)));
  }
}

// Rows r0 .. r0 + count (count <= 16) for N tokens.
template <int N>
void block16(const std::uint16_t* xhi, const std::uint16_t* xlo, std::int64_t ld,
             const WeightView& w, std::int64_t r0, std::int64_t count, float* y) {
  const std::int64_t cols = w.cols;
  const auto* rows = static_cast<const std::uint16_t*>(w.data) + r0 * cols;
  __m512 sums[N][16];
  for (std::int64_t i = 0; i < 16; ++i) {
    // Per token: hi and lo parts, even and odd steps (four short dependency chains).
    __m512 acc[N][4];
    for (int t = 0; t < N; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = _mm512_setzero_ps();
    if (i < count) {
      const std::uint16_t* row = rows + i * cols;
      std::int64_t k = 0;
      for (; k + 64 <= cols; k += 64) {
        step<N, 0, 2>(row, k, ~__mmask32{0}, xhi, xlo, ld, acc);
        step<N, 1, 3>(row, k + 32, ~__mmask32{0}, xhi, xlo, ld, acc);
      }
      if (k + 32 <= cols) {
        step<N, 0, 2>(row, k, ~__mmask32{0}, xhi, xlo, ld, acc);
        k += 32;
      }
      if (k < cols) step<N, 1, 3>(row, k, (__mmask32{1} << (cols - k)) - 1, xhi, xlo, ld, acc);
    }
    for (int t = 0; t < N; ++t)
      sums[t][i] =
          _mm512_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]), _mm512_add_ps(acc[t][2], acc[t][3]));
  }
  const __mmask16 valid =
      count >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << count) - 1u);
  for (int t = 0; t < N; ++t)
    _mm512_mask_storeu_ps(y + t * w.rows + r0, valid, reduce16_ps(sums[t]));
}

template <int N>
void gemv_n(const SplitActivations& x, const WeightView& w, std::int64_t r0, std::int64_t r1,
            float* y) {
  const std::uint16_t* hi = x.hi.data();
  const std::uint16_t* lo = x.lo.data();
  for (std::int64_t r = r0; r < r1; r += 16)
    block16<N>(hi, lo, x.ld, w, r, std::min<std::int64_t>(16, r1 - r), y);
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
  switch (n) {
    case 1:
      return gemv_n<1>(split_x, w, r0, r1, y);
    case 2:
      return gemv_n<2>(split_x, w, r0, r1, y);
    case 3:
      return gemv_n<3>(split_x, w, r0, r1, y);
    default:
      return gemv_n<4>(split_x, w, r0, r1, y);
  }
}

}  // namespace sepal::cpu

// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni. Blocks of 16 rows: accumulators per
// row, the 16 rows' reduced together into one vector and finished 16 outputs at a time
// (kernels/cpu/i8_rows_avx512.h).
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemv_i8.h"
#include "kernels/cpu/i8_rows_avx512.h"
#include "kernels/cpu/stream_prefetch.h"

namespace sepal::cpu {
namespace {

// The block is read row after row, in memory order, with a software prefetch ahead: one stream
// the hardware prefetcher follows too (16 rows read side by side were 16 short streams, each
// missing at its start). How far ahead and into which cache: kernels/cpu/stream_prefetch.h (on
// the Xeon a standalone loop of this kernel's shape over 256 MiB read 56 GB/s with 2 KiB and 62
// with 4 or 8, medians of 6 rounds, a plain read 61; the 1.1B shape's decode 1.03 to 1.05 times
// as fast with 8 KiB as with 2).

// Rows r0 .. r0 + count (count <= 16) for N tokens.
// One step of 64 columns from k for N tokens into accumulators acc[t][A]; the activations are
// zero past cols (the padding).
template <int N, int A>
inline void step(const std::int8_t* row, std::int64_t k, __mmask64 m, const std::int8_t* q,
                 std::int64_t ldq, const StreamPrefetch& how, __m512i acc[][2]) {
  prefetch_ahead_of(row + k, how);
  const __m512i wv = flip_sign_bits(_mm512_maskz_loadu_epi8(m, row + k));
  for (int t = 0; t < N; ++t)
    acc[t][A] = _mm512_dpbusd_epi32(acc[t][A], wv, _mm512_loadu_si512(q + t * ldq + k));
}

template <int N>
void block16(const I8Activations& x, const WeightView& w, std::int64_t r0, std::int64_t count,
             std::int64_t ldy, float* y, float* outlier_w) {
  const std::int64_t cols = w.cols;
  const auto* rows = static_cast<const std::int8_t*>(w.data) + r0 * cols;
  const std::int8_t* q = x.q;
  const std::int64_t ldq = x.ldq;
  const StreamPrefetch how = stream_prefetch();
  __m512i sums[N][16];
  for (std::int64_t i = 0; i < 16; ++i) {
    // Two accumulators per token, for even and odd steps: half the dependency chain.
    __m512i acc[N][2];
    for (int t = 0; t < N; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
    if (i < count) {
      const std::int8_t* row = rows + i * cols;
      std::int64_t k = 0;
      for (; k + 128 <= cols; k += 128) {
        step<N, 0>(row, k, ~__mmask64{0}, q, ldq, how, acc);
        step<N, 1>(row, k + 64, ~__mmask64{0}, q, ldq, how, acc);
      }
      if (k + 64 <= cols) {
        step<N, 0>(row, k, ~__mmask64{0}, q, ldq, how, acc);
        k += 64;
      }
      if (k < cols) step<N, 1>(row, k, (__mmask64{1} << (cols - k)) - 1, q, ldq, how, acc);
    }
    // The row's outlier columns, read while its lines are in cache (gathered before the rows
    // were streamed, each was a miss to memory: a quarter of a decode step's int8 time).
    if (x.outliers > 0) gather_outlier_row(x, i < count ? rows + i * cols : nullptr, i, 16, outlier_w);
    for (int t = 0; t < N; ++t) sums[t][i] = _mm512_add_epi32(acc[t][0], acc[t][1]);
  }
  const __mmask16 valid = first_lanes(count);
  for (int t = 0; t < N; ++t) {
    const __m512 out = finish_i8_rows16(x, t, reduce16_epi32(sums[t]),
                                        outlier_sums16(x, t, outlier_w, 16), w.scales + r0, valid);
    _mm512_mask_storeu_ps(y + t * ldy + r0, valid, out);
  }
}

template <int N>
void gemv_n(const I8Activations& x, const WeightView& w, std::int64_t r0, std::int64_t r1,
            std::int64_t ldy, float* y, float* outlier_w) {
  for (std::int64_t r = r0; r < r1; r += 16)
    block16<N>(x, w, r, std::min<std::int64_t>(16, r1 - r), ldy, y, outlier_w);
}

}  // namespace

void gemv_i8_avx512vnni(const I8Activations& x, std::int64_t n, const WeightView& w,
                        std::int64_t r0, std::int64_t r1, std::int64_t ldy, float* y) {
  thread_local std::vector<float> outlier_w;
  outlier_w.resize(static_cast<std::size_t>(16 * x.outliers));
  switch (n) {
    case 1:
      return gemv_n<1>(x, w, r0, r1, ldy, y, outlier_w.data());
    case 2:
      return gemv_n<2>(x, w, r0, r1, ldy, y, outlier_w.data());
    case 3:
      return gemv_n<3>(x, w, r0, r1, ldy, y, outlier_w.data());
    default:
      return gemv_n<4>(x, w, r0, r1, ldy, y, outlier_w.data());
  }
}

}  // namespace sepal::cpu

// Compiled with -mavx2. Without VNNI, _mm256_maddubs_epi16 multiplies unsigned by signed bytes:
// |x| times w carrying x's sign stays within int16 because both magnitudes are at most 127.
#include <immintrin.h>

#include "kernels/cpu/gemv_i8.h"
#include "kernels/cpu/side_by_side_prefetch.h"
#include "kernels/cpu/stream_prefetch.h"

namespace sepal::cpu {
namespace {

constexpr int kRowsPerStep = 4;
// Every row's lines are prefetched this far ahead of the block's stream, into the cache
// stream_prefetch.h names (see gemv_avx2.cc).
constexpr std::int64_t kPrefetchBytes = 8192;

inline std::int32_t reduce(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i h = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1)));
}

template <int R, int N>
inline void dot_block(const I8Activations& x, std::int64_t cols, const std::int8_t* w, const float* scales,
                      std::int64_t ldy, float* y, const StreamPrefetch& how) {
  __m256i acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < N; ++t) acc[r][t] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  std::int64_t k = 0;
  for (; k + 32 <= cols; k += 32) {
    if (k % 64 == 0)
      for (int r = 0; r < R; ++r)
        prefetch_side_by_side_line(side_by_side_ahead(w + r * cols, k, cols, R, kPrefetchBytes / R), how);
    __m256i xv[N], xa[N];
    for (int t = 0; t < N; ++t) {
      xv[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + t * x.ldq + k));
      xa[t] = _mm256_abs_epi8(xv[t]);
    }
    for (int r = 0; r < R; ++r) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * cols + k));
      for (int t = 0; t < N; ++t) {
        const __m256i pairs = _mm256_maddubs_epi16(xa[t], _mm256_sign_epi8(wv, xv[t]));
        acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    const std::int8_t* row = w + r * cols;
    for (int t = 0; t < N; ++t) {
      std::int32_t dot = reduce(acc[r][t]);
      const std::int8_t* q = x.q + t * x.ldq;
      for (std::int64_t j = k; j < cols; ++j) dot += static_cast<std::int32_t>(q[j]) * row[j];
      y[t * ldy + r] = finish_i8_row(x, t, row, scales[r], dot);
    }
  }
}

template <int N>
void gemv_n(const I8Activations& x, const WeightView& w, std::int64_t r0, std::int64_t r1, std::int64_t ldy,
            float* y) {
  const auto* data = static_cast<const std::int8_t*>(w.data);
  const StreamPrefetch how = stream_prefetch();
  std::int64_t r = r0;
  for (; r + kRowsPerStep <= r1; r += kRowsPerStep)
    dot_block<kRowsPerStep, N>(x, w.cols, data + r * w.cols, w.scales + r, ldy, y + r, how);
  for (; r < r1; ++r) dot_block<1, N>(x, w.cols, data + r * w.cols, w.scales + r, ldy, y + r, how);
}

}  // namespace

void gemv_i8_avx2(const I8Activations& x, std::int64_t n, const WeightView& w, std::int64_t r0,
                  std::int64_t r1, std::int64_t ldy, float* y) {
  switch (n) {
    case 1: return gemv_n<1>(x, w, r0, r1, ldy, y);
    case 2: return gemv_n<2>(x, w, r0, r1, ldy, y);
    case 3: return gemv_n<3>(x, w, r0, r1, ldy, y);
    default: return gemv_n<4>(x, w, r0, r1, ldy, y);
  }
}

}  // namespace sepal::cpu

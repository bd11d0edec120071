// Compiled with -mavx512f -mavx512dq. The two loops of attention over a key/value cache, for head
// dimensions that are a multiple of 16 up to kMaxRowsDim: scores for 16 cached positions at a time
// (one accumulator each, reduced together), and the weighted sum of value rows with the output
// held in registers. Rows of f32 or of bf16 (a bf16 cache: each element widened exactly, then the
// same arithmetic).
#include <immintrin.h>

#include "kernels/cpu/lanes_avx512.h"
#include "kernels/cpu/vector_math.h"

namespace sepal::cpu {
namespace {

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const std::uint16_t* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

template <int V, typename T>  // V vectors of 16 per row
void dot_rows_v(const float* q, const T* rows, std::int64_t count, float scale, float* out) {
  constexpr std::int64_t dim = 16 * V;
  __m512 qv[V];
  for (int v = 0; v < V; ++v) qv[v] = _mm512_loadu_ps(q + 16 * v);
  const __m512 s = _mm512_set1_ps(scale);
  std::int64_t p = 0;
  for (; p + 16 <= count; p += 16) {
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) {
      const T* row = rows + (p + i) * dim;
      acc[i] = _mm512_mul_ps(qv[0], load16(row));
      for (int v = 1; v < V; ++v)
        acc[i] = _mm512_fmadd_ps(qv[v], load16(row + 16 * v), acc[i]);
    }
    _mm512_storeu_ps(out + p, _mm512_mul_ps(reduce16_ps(acc), s));
  }
  for (; p < count; ++p) {
    const T* row = rows + p * dim;
    __m512 acc = _mm512_mul_ps(qv[0], load16(row));
    for (int v = 1; v < V; ++v) acc = _mm512_fmadd_ps(qv[v], load16(row + 16 * v), acc);
    out[p] = _mm512_reduce_add_ps(acc) * scale;
  }
}

template <int V, typename T>
void add_weighted_rows_v(const float* weights, const T* rows, std::int64_t count, float* out) {
  constexpr std::int64_t dim = 16 * V;
  __m512 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = _mm512_loadu_ps(out + 16 * v);
  for (std::int64_t p = 0; p < count; ++p) {
    const __m512 w = _mm512_set1_ps(weights[p]);
    for (int v = 0; v < V; ++v)
      acc[v] = _mm512_fmadd_ps(w, load16(rows + p * dim + 16 * v), acc[v]);
  }
  for (int v = 0; v < V; ++v) _mm512_storeu_ps(out + 16 * v, acc[v]);
}

template <typename T>
bool dot_rows_any(const float* q, const T* rows, std::int64_t count, std::int64_t dim, float scale, float* out) {
  switch (dim) {
    case 32:
      return dot_rows_v<2>(q, rows, count, scale, out), true;
    case 64:
      return dot_rows_v<4>(q, rows, count, scale, out), true;
    case 80:
      return dot_rows_v<5>(q, rows, count, scale, out), true;
    case 96:
      return dot_rows_v<6>(q, rows, count, scale, out), true;
    case 128:
      return dot_rows_v<8>(q, rows, count, scale, out), true;
    case 256:
      return dot_rows_v<16>(q, rows, count, scale, out), true;
    default:
      return false;
  }
}

template <typename T>
bool add_weighted_rows_any(const float* weights, const T* rows, std::int64_t count, std::int64_t dim, float* out) {
  switch (dim) {
    case 32:
      return add_weighted_rows_v<2>(weights, rows, count, out), true;
    case 64:
      return add_weighted_rows_v<4>(weights, rows, count, out), true;
    case 80:
      return add_weighted_rows_v<5>(weights, rows, count, out), true;
    case 96:
      return add_weighted_rows_v<6>(weights, rows, count, out), true;
    case 128:
      return add_weighted_rows_v<8>(weights, rows, count, out), true;
    case 256:
      return add_weighted_rows_v<16>(weights, rows, count, out), true;
    default:
      return false;
  }
}

}  // namespace

bool dot_rows_avx512(const float* q, const float* rows, std::int64_t count, std::int64_t dim, float scale,
                     float* out) {
  return dot_rows_any(q, rows, count, dim, scale, out);
}
bool dot_rows_avx512(const float* q, const std::uint16_t* rows, std::int64_t count, std::int64_t dim, float scale,
                     float* out) {
  return dot_rows_any(q, rows, count, dim, scale, out);
}
bool add_weighted_rows_avx512(const float* weights, const float* rows, std::int64_t count, std::int64_t dim,
                              float* out) {
  return add_weighted_rows_any(weights, rows, count, dim, out);
}
bool add_weighted_rows_avx512(const float* weights, const std::uint16_t* rows, std::int64_t count, std::int64_t dim,
                              float* out) {
  return add_weighted_rows_any(weights, rows, count, dim, out);
}

}  // namespace sepal::cpu

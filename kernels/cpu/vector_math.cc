#include "kernels/cpu/vector_math.h"

#include <algorithm>
#include <vector>

#include "kernels/dtype.h"

#define SEPAL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace sepal::cpu {

SEPAL_CLONES void dot_rows(const float* q, const float* rows, std::int64_t count, std::int64_t dim,
                           float scale, float* out) {
  for (std::int64_t p = 0; p < count; ++p) {
    const float* row = rows + p * dim;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (std::int64_t i = 0; i < dim; ++i) sum += q[i] * row[i];
    out[p] = sum * scale;
  }
}

SEPAL_CLONES void add_weighted_rows(const float* weights, const float* rows, std::int64_t count,
                                    std::int64_t dim, float* out) {
  for (std::int64_t p = 0; p < count; ++p) {
    const float* row = rows + p * dim;
    const float weight = weights[p];
#pragma omp simd
    for (std::int64_t i = 0; i < dim; ++i) out[i] += weight * row[i];
  }
}

// The bf16 rows are widened, a few at a time, and run through the f32 loops above: the same
// arithmetic whatever each loop's vectorization, so a bf16 cache gives the f32 cache's bits for
// the rounded values.
namespace {
constexpr std::int64_t kWidenedRows = 16;
const float* widen_rows(const std::uint16_t* rows, std::int64_t count, std::int64_t dim) {
  thread_local std::vector<float> widened;
  widened.resize(static_cast<std::size_t>(count * dim));
  for (std::int64_t i = 0; i < count * dim; ++i) widened[static_cast<std::size_t>(i)] = bf16_to_f32(rows[i]);
  return widened.data();
}
}  // namespace

void dot_rows(const float* q, const std::uint16_t* rows, std::int64_t count, std::int64_t dim, float scale,
              float* out) {
  for (std::int64_t p = 0; p < count; p += kWidenedRows) {
    const std::int64_t n = std::min(kWidenedRows, count - p);
    dot_rows(q, widen_rows(rows + p * dim, n, dim), n, dim, scale, out + p);
  }
}

void add_weighted_rows(const float* weights, const std::uint16_t* rows, std::int64_t count, std::int64_t dim,
                       float* out) {
  for (std::int64_t p = 0; p < count; p += kWidenedRows) {
    const std::int64_t n = std::min(kWidenedRows, count - p);
    add_weighted_rows(weights + p, widen_rows(rows + p * dim, n, dim), n, dim, out);
  }
}

SEPAL_CLONES float max_value(const float* x, std::int64_t count) {
  float m = x[0];
#pragma omp simd reduction(max : m)
  for (std::int64_t i = 1; i < count; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

SEPAL_CLONES float sum_squares(const float* x, std::int64_t count) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t i = 0; i < count; ++i) sum += x[i] * x[i];
  return sum;
}

SEPAL_CLONES void scale_mul(const float* x, float scale, const float* w, float* y,
                            std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) y[i] = x[i] * scale * w[i];
}

}  // namespace sepal::cpu

#include "kernels/cpu/vector_math.h"

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

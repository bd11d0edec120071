#include "kernels/cpu/vector_math.h"

#define SEPAL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace sepal::cpu {

SEPAL_CLONES float dot(const float* a, const float* b, std::int64_t count) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t i = 0; i < count; ++i) sum += a[i] * b[i];
  return sum;
}

SEPAL_CLONES void axpy(float alpha, const float* x, float* y, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) y[i] += alpha * x[i];
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

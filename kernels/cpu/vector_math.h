#pragma once
// Small vector loops shared by the CPU ops. Each is compiled for several CPU levels
// (GCC target_clones) and the loader picks the best one for this machine.

#include <cstdint>

namespace sepal::cpu {

/// Sum of a[i] * b[i].
float dot(const float* a, const float* b, std::int64_t count);
/// y[i] += alpha * x[i].
void axpy(float alpha, const float* x, float* y, std::int64_t count);
/// Sum of x[i]².
float sum_squares(const float* x, std::int64_t count);
/// y[i] = x[i] * scale * w[i].
void scale_mul(const float* x, float scale, const float* w, float* y, std::int64_t count);

}  // namespace sepal::cpu

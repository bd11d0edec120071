#pragma once
// Root-mean-square layer normalisation, as Llama uses it.

#include <cstdint>

namespace sepal {

/// y[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) * weight, for t < n rows of `dim` values.
/// y may equal x. Uses the thread pool (kernels/parallel.h) over rows.
void rmsnorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
             float* y);

}  // namespace sepal

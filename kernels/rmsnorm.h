#pragma once
// Root-mean-square layer normalisation, as Llama uses it; layer normalisation, as BLOOM does.

#include <cstdint>

namespace sepal {

/// y[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) * weight, for t < n rows of `dim` values.
/// y may equal x. Uses the thread pool (kernels/parallel.h) over rows.
void rmsnorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
             float* y);

/// Layer normalisation, as BLOOM uses it: y[t, :] = (x[t, :] - mean) / sqrt(var + eps) * weight
/// + bias, mean and variance over the row (in double); bias may be null (none: Cohere). y may
/// equal x.
void layernorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, const float* bias, float eps,
               float* y);

}  // namespace sepal

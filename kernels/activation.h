#pragma once
// Element-wise activations.

#include <cstdint>

namespace sepal {

/// gate[i] = silu(gate[i]) * up[i] for i < count (the SwiGLU of Llama's MLP), in place.
void silu_mul(float* gate, const float* up, std::int64_t count);

/// y[i] += x[i] for i < count.
void add_in_place(float* y, const float* x, std::int64_t count);

/// x[i] = gelu(x[i]) with the tanh approximation (BLOOM's): x/2 (1 + tanh(0.79788456 x (1 +
/// 0.044715 x²))), in place.
void gelu_tanh(float* x, std::int64_t count);

/// rows[t, :] += bias for t < n rows of `dim` values.
void add_bias(float* rows, std::int64_t n, std::int64_t dim, const float* bias);

}  // namespace sepal

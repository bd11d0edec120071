#pragma once
// Element-wise activations.

#include <cstdint>

namespace sepal {

/// gate[i] = silu(gate[i]) * up[i] for i < count (the SwiGLU of Llama's MLP), in place.
void silu_mul(float* gate, const float* up, std::int64_t count);

/// y[i] += x[i] for i < count.
void add_in_place(float* y, const float* x, std::int64_t count);

}  // namespace sepal

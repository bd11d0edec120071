#pragma once
// Input gradients of the forward ops (kernels/matmul.h, rmsnorm.h, activation.h, rope.h,
// attention.h), for training passes over frozen weights: the gradient with respect to each op's
// input, and one weight gradient for adapters' small matrices.
//
// Every result is deterministic: each element is one sum in a fixed order, so it does not depend
// on the thread count, and a token's result does not depend on the other tokens of the call.
// Each op is checked against central finite differences of a float64 forward
// (tests/kernels/gradients_test.cc).
//
// Thread-safety: as the forward ops; they use the kernels' thread pool (kernels/parallel.h).

#include <cstdint>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"

namespace sepal {

/// dx[n, w.cols] = dy[n, w.rows] · w: the input gradient of y = x · wᵀ. int8 weights take part
/// dequantized (data[r, c] · scales[r]), the outlier columns included, as bitsandbytes does.
/// dx must not overlap dy.
void matmul_input_grad(const float* dy, std::int64_t n, const WeightView& w, float* dx);

/// dw[rows, cols] += Σ_t dy[t, :]ᵀ x[t, :] over n rows: the weight gradient of y = x · wᵀ, for
/// the small trainable matrices of adapters (model/block_adapters.h). Each element is one sum
/// in row order, so the result does not depend on the thread count.
void matmul_weight_grad(const float* dy, std::int64_t n, const float* x, std::int64_t rows, std::int64_t cols, float* dw);

/// sums[i] += Σ_t a[t, i] · b[t, i] over n rows of `dim` (each column's sum in double, in row
/// order, then rounded and added): PEQA's gradient of a row scale, from its rows' output gradient
/// and base product.
void add_column_dots(const float* a, const float* b, std::int64_t n, std::int64_t dim, float* sums);

/// The input gradient of rmsnorm(x, weight, eps) (kernels/rmsnorm.h), given its output's
/// gradient dy, for n rows of `dim`. dx may equal dy.
void rmsnorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                        const float* dy, float* dx);

/// The input gradient of layernorm(x, weight, bias, eps) (kernels/rmsnorm.h), given its output's
/// gradient dy, for n rows of `dim` (the bias does not take part). dx may equal dy.
void layernorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                          const float* dy, float* dx);

/// The input gradient of gelu_tanh (kernels/activation.h), given its input x and its output's
/// gradient dout. dx may equal dout.
void gelu_tanh_input_grad(const float* x, const float* dout, float* dx, std::int64_t count);

/// The input gradients of out = silu(gate) · up (kernels/activation.h), given gate and up as they
/// went in and out's gradient dout. dgate and dup may equal dout (not each other).
void silu_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                         std::int64_t count);
/// The same for out = gelu_tanh(gate) · up (gelu_tanh_mul).
void gelu_tanh_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                              std::int64_t count);
/// The same for clamped_swiglu_mul with `limit` (a clamped input's gradient is 0).
void clamped_swiglu_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                   std::int64_t count, float limit);
/// silu_mul_input_grad, gelu_tanh_mul_input_grad or clamped_swiglu_mul_input_grad, as
/// `activation` says.
void gate_mul_input_grad(GateActivation activation, const float* gate, const float* up, const float* dout,
                         float* dgate, float* dup, std::int64_t count, float limit = 0.0f);

/// The input gradient of rope_rotate_half (kernels/rope.h): the rotation by the opposite angle
/// times the magnitude, in place on dx[n, heads, head_dim].
void rope_rotate_half_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                 std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                 double magnitude);
/// The same for rope_rotate_adjacent.
void rope_rotate_adjacent_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                     std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                     double magnitude);

/// The input gradients of causal attention over one whole sequence of n positions (no cache
/// before it): q is [n, heads, head_dim]; keys and values are [kv_heads, n, head_dim] (the cache
/// layout of attention_causal with capacity n and start 0); dout is [n, heads * head_dim].
/// Writes dq [n, heads, head_dim], dkeys and dvalues [kv_heads, n, head_dim] (the gradients of
/// the query heads sharing a key/value head summed, in head order). `alibi` and `window` as for
/// attention_causal. Parallel over key/value heads.
void attention_causal_input_grad(const float* q, const float* keys, const float* values, std::int64_t n,
                                 const AttentionDims& dims, const float* dout, float* dq, float* dkeys,
                                 float* dvalues, const float* alibi = nullptr, std::int64_t window = 0);

}  // namespace sepal

#pragma once
// Element-wise activations.

#include <cstdint>

namespace sepal {

/// The activation applied to a gated MLP's gate before it multiplies the up projection.
enum class GateActivation {
  kSilu,      ///< SwiGLU (Llama, Mistral, Qwen, Phi-3)
  kGeluTanh,  ///< GeGLU with GELU's tanh approximation (Gemma)
  /// GPT-OSS's clamped SwiGLU: with g = min(gate, limit) and u = clamp(up, -limit, limit),
  /// g σ(1.702 g) (u + 1). Needs the limit (its config's swiglu_limit).
  kClampedSwiglu,
};

/// GPT-OSS's sigmoid slope (transformers' GptOssExperts.alpha).
inline constexpr float kClampedSwigluAlpha = 1.702f;

/// gate[i] = silu(gate[i]) * up[i] for i < count (the SwiGLU of Llama's MLP), in place.
void silu_mul(float* gate, const float* up, std::int64_t count);

/// gate[i] = gelu_tanh(gate[i]) * up[i] for i < count (Gemma's GeGLU), in place; gelu_tanh as
/// below, computed as x / (1 + e^(-2u)), which is x/2 (1 + tanh(u)).
void gelu_tanh_mul(float* gate, const float* up, std::int64_t count);

/// gate[i] = g σ(1.702 g) (u + 1) with g = min(gate[i], limit), u = clamp(up[i], -limit, limit)
/// (GPT-OSS), in place; limit > 0.
void clamped_swiglu_mul(float* gate, const float* up, std::int64_t count, float limit);

/// silu_mul, gelu_tanh_mul or clamped_swiglu_mul (with `limit`), as `activation` says.
void gate_mul(GateActivation activation, float* gate, const float* up, std::int64_t count, float limit = 0.0f);

/// y[i] += x[i] for i < count.
void add_in_place(float* y, const float* x, std::int64_t count);

/// y[i] += scale * x[i] for i < count (Granite's residual multiplier; a scale of 1 is add_in_place's bits).
void add_scaled_in_place(float* y, const float* x, float scale, std::int64_t count);

/// x[i] = gelu(x[i]) with the tanh approximation (BLOOM's): x/2 (1 + tanh(0.79788456 x (1 +
/// 0.044715 x²))), in place; computed as gelu_tanh_mul computes it, spread over the threads.
void gelu_tanh(float* x, std::int64_t count);

/// x[i] = cap · tanh(x[i] / cap) (Gemma 2's soft-capping of attention scores and logits) for
/// i < count, in place, and tanh_out[i] = tanh(x[i] / cap) when tanh_out is not null (for the
/// gradient); cap > 0. On one thread (attention calls it from its own).
void softcap(float* x, std::int64_t count, float cap, float* tanh_out = nullptr);

/// rows[t, :] += bias for t < n rows of `dim` values.
void add_bias(float* rows, std::int64_t n, std::int64_t dim, const float* bias);

/// x[i] *= scale for i < count.
void scale_in_place(float* x, float scale, std::int64_t count);

/// rows[t, i] *= 1 + offsets[i] for t < n rows of `dim` values (PEQA's tuned row scales).
void scale_by_one_plus(float* rows, std::int64_t n, std::int64_t dim, const float* offsets);

}  // namespace sepal

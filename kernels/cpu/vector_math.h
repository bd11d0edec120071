#pragma once
// Small vector loops shared by the CPU ops. Each is compiled for several CPU levels
// (GCC target_clones) and the loader picks the best one for this machine.

#include <cstdint>

namespace sepal::cpu {

/// out[p] = scale * Σ_i q[i] * rows[p * dim + i] for p < count (attention scores over a key cache).
void dot_rows(const float* q, const float* rows, std::int64_t count, std::int64_t dim, float scale,
              float* out);
/// out[i] += Σ_p weights[p] * rows[p * dim + i] for i < dim (attention over a value cache).
void add_weighted_rows(const float* weights, const float* rows, std::int64_t count,
                       std::int64_t dim, float* out);
/// The same two over bf16 rows (a bf16 key/value cache), each element read back exactly.
void dot_rows(const float* q, const std::uint16_t* rows, std::int64_t count, std::int64_t dim, float scale,
              float* out);
void add_weighted_rows(const float* weights, const std::uint16_t* rows, std::int64_t count,
                       std::int64_t dim, float* out);
/// The same four for AVX-512 F, for the head dimensions 32, 64, 80, 96, 128 and 256; false (and
/// nothing done) for any other. Call only where cpu_supports(CpuIsa::kAvx512).
bool dot_rows_avx512(const float* q, const float* rows, std::int64_t count, std::int64_t dim,
                     float scale, float* out);
bool add_weighted_rows_avx512(const float* weights, const float* rows, std::int64_t count,
                              std::int64_t dim, float* out);
bool dot_rows_avx512(const float* q, const std::uint16_t* rows, std::int64_t count, std::int64_t dim,
                     float scale, float* out);
bool add_weighted_rows_avx512(const float* weights, const std::uint16_t* rows, std::int64_t count,
                              std::int64_t dim, float* out);
/// softmax(), silu_mul(), gelu_tanh_mul() and gelu_tanh() (kernels/softmax.h, kernels/activation.h)
/// with a 16-lane exponential; call only where cpu_supports(CpuIsa::kAvx512).
void softmax_avx512(float* x, std::int64_t count);
void silu_mul_avx512(float* gate, const float* up, std::int64_t count);
void gelu_tanh_mul_avx512(float* gate, const float* up, std::int64_t count);
void gelu_tanh_avx512(float* x, std::int64_t count);
/// clamped_swiglu_mul() (kernels/activation.h) the same way; limit > 0.
void clamped_swiglu_mul_avx512(float* gate, const float* up, std::int64_t count, float limit);
/// softcap() (kernels/activation.h) the same way, its tanh as tanh16 in exp_avx512.cc computes it.
void softcap_avx512(float* x, std::int64_t count, float cap, float* tanh_out);
/// log_sum_exp() and exp_shifted() (kernels/softmax.h) the same way; count >= 1.
double log_sum_exp_avx512(const float* x, std::int64_t count);
void exp_shifted_avx512(float* x, std::int64_t count, double shift, float scale);
/// gelu_tanh_input_grad(), silu_mul_input_grad() and gelu_tanh_mul_input_grad()
/// (kernels/gradients.h) the same way; call only where cpu_supports(CpuIsa::kAvx512).
void gelu_tanh_input_grad_avx512(const float* x, const float* dout, float* dx, std::int64_t count);
void silu_mul_input_grad_avx512(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                std::int64_t count);
void gelu_tanh_mul_input_grad_avx512(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                     std::int64_t count);
/// clamped_swiglu_mul_input_grad() (kernels/gradients.h) the same way; limit > 0.
void clamped_swiglu_mul_input_grad_avx512(const float* gate, const float* up, const float* dout, float* dgate,
                                          float* dup, std::int64_t count, float limit);
/// The largest of x[0, count), NaN values ignored; x[0] must not be NaN.
float max_value(const float* x, std::int64_t count);
/// Sum of x[i]².
float sum_squares(const float* x, std::int64_t count);
/// y[i] = x[i] * scale * w[i].
void scale_mul(const float* x, float scale, const float* w, float* y, std::int64_t count);

}  // namespace sepal::cpu

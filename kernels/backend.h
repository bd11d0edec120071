#pragma once
// The device seam: one interface per op, a CPU and a CUDA implementation behind it, chosen at run
// time by a Device value (kernels/device.h). Callers hold pointers into the backend's memory and
// never test for CUDA themselves; what a backend can do is asked with info() and holds().
//
// Every op has the contract of its CPU kernel (kernels/matmul.h, rmsnorm.h, rope.h, attention.h,
// activation.h, and gradients.h for training passes): the CPU backend calls those kernels, so it is
// the numerical oracle of the others, which match it within a per-op tolerance
// (tests/kernels/backend_ops_test.cc).
//
// Memory: every pointer an op takes is the backend's memory (for the CPU backend, host memory),
// from allocate(), except where a comment says host. Ops run in call order; copy_out() returns
// once the results are in host memory.
//
// Thread-safety: memory (allocate, copy_in, copy_out, upload) may be used from any thread; ops run
// one caller at a time, who holds turn() through its sequence of ops (they share the backend's
// working memory).

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/device.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/matmul.h"

namespace sepal {

/// What a backend is and has.
struct BackendInfo {
  Device device;
  std::string name;               ///< "NVIDIA H200", "CPU (AVX-512 VNNI)"
  std::int64_t memory_bytes = 0;  ///< the device's memory in all
  std::int64_t free_bytes = 0;    ///< free now
};

/// A weight matrix in a backend's memory: its view's data and scales point there.
struct DeviceMatrix {
  WeightView view;
  std::shared_ptr<void> storage;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual BackendInfo info() const = 0;
  /// Whether matmul() takes weights of this type.
  virtual bool holds(DType dtype) const = 0;

  // ---- memory ----
  /// `bytes` of the backend's memory, freed when the last copy of the pointer goes. Throws
  /// sepal::Error in one line when the device is out of memory.
  virtual std::shared_ptr<void> allocate(std::int64_t bytes) = 0;
  /// Host memory `src` into the backend's memory `dst`.
  virtual void copy_in(void* dst, const void* src, std::int64_t bytes) = 0;
  /// The backend's memory `src` into host memory `dst`, after every op called before it.
  virtual void copy_out(void* dst, const void* src, std::int64_t bytes) = 0;

  // ---- ops (pointers in the backend's memory) ----
  /// y[n, w.rows] = x[n, w.cols] · wᵀ (kernels/matmul.h). In calls of up to kStreamingMaxTokens
  /// rows every backend gives each row the result it gets alone (for int8, its own outlier
  /// columns); longer calls take LLM.int8()'s outlier columns over the whole call.
  virtual void matmul(const float* x, std::int64_t n, const DeviceMatrix& w, float* y) = 0;
  virtual void rmsnorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps, float* y) = 0;
  virtual void layernorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, const float* bias,
                         float eps, float* y) = 0;
  /// layernorm without a bias of each head of rows [n, heads, head_dim], head h with weights
  /// [h · head_dim, (h + 1) · head_dim) (Cohere's q and k norms); y may be x.
  virtual void layernorm_heads(const float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                               const float* weights, float eps, float* y) = 0;
  virtual void add_bias(float* rows, std::int64_t n, std::int64_t dim, const float* bias) = 0;
  virtual void add_in_place(float* y, const float* x, std::int64_t count) = 0;
  /// kernels/activation.h: add_scaled_in_place (LoRA's update) and scale_by_one_plus (PEQA's scales).
  virtual void add_scaled_in_place(float* y, const float* x, float scale, std::int64_t count) = 0;
  virtual void scale_by_one_plus(float* rows, std::int64_t n, std::int64_t dim, const float* offsets) = 0;
  virtual void silu_mul(float* gate, const float* up, std::int64_t count) = 0;
  virtual void gelu_tanh_mul(float* gate, const float* up, std::int64_t count) = 0;
  /// silu_mul or gelu_tanh_mul, as `activation` says (GPT-OSS's clamped SwiGLU is the CPU's only).
  void gate_mul(GateActivation activation, float* gate, const float* up, std::int64_t count) {
    if (activation == GateActivation::kClampedSwiglu) fail("GPT-OSS's clamped SwiGLU runs on the CPU only");
    if (activation == GateActivation::kGeluTanh) return gelu_tanh_mul(gate, up, count);
    silu_mul(gate, up, count);
  }
  virtual void gelu_tanh(float* x, std::int64_t count) = 0;
  /// kernels/rope.h; positions [n] and inv_freq [rotary_dim / 2] in the backend's memory.
  virtual void rope_rotate_half(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                double magnitude) = 0;
  /// kernels/rope.h's adjacent pairs (Cohere's, GLM's layout); arguments as rope_rotate_half's.
  virtual void rope_rotate_adjacent(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                    std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                    double magnitude) = 0;
  /// kernels/attention.h: store_kv.
  virtual void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads,
                        std::int64_t head_dim, std::int64_t capacity, float* cache) = 0;
  /// kernels/attention.h: attention_causal (alibi may be null; slot 0 holds position held_from).
  virtual void attention_causal(const float* q, std::int64_t n, std::int64_t start, const float* keys,
                                const float* values, std::int64_t capacity, const AttentionDims& dims, float* out,
                                const float* alibi, std::int64_t window, std::int64_t held_from) = 0;

  /// kernels/attention.h: attention_tree (a token tree's nodes; parents [first + n] in the
  /// backend's memory, checked by the caller).
  virtual void attention_tree(const float* q, std::int64_t first, std::int64_t n, std::int64_t start,
                              const std::int32_t* parents, const float* keys, const float* values,
                              std::int64_t capacity, const AttentionDims& dims, float* out, const float* alibi,
                              std::int64_t window, std::int64_t held_from) = 0;
  /// KvCache::keep_path's moves: in each of `count` arrays [capacity, head_dim] laid one after
  /// another, row base + path[i] moves to row base + i, for i < kept in order (path: host memory,
  /// increasing, path[i] >= i).
  virtual void keep_rows(float* arrays, std::int64_t count, std::int64_t capacity, std::int64_t head_dim,
                         std::int64_t base, const std::int32_t* path, std::int64_t kept) = 0;

  // ---- training passes: the input gradients of the ops above (kernels/gradients.h) ----
  /// `bytes` of the backend's memory from `src` to `dst` (not overlapping).
  virtual void copy(void* dst, const void* src, std::int64_t bytes) = 0;
  /// `bytes` of the backend's memory at `dst` set to zero.
  virtual void zero(void* dst, std::int64_t bytes) = 0;
  /// kernels/activation.h: scale_in_place.
  virtual void scale_in_place(float* x, float scale, std::int64_t count) = 0;
  /// kernels/gradients.h: matmul_weight_grad (dw += dyᵀ x, adapters' factors) and add_column_dots
  /// (PEQA's scales).
  virtual void matmul_weight_grad(const float* dy, std::int64_t n, const float* x, std::int64_t rows, std::int64_t cols,
                                  float* dw) = 0;
  virtual void add_column_dots(const float* a, const float* b, std::int64_t n, std::int64_t dim, float* sums) = 0;
  /// store_kv's inverse: rows[n, kv_heads, head_dim] from slots [start, start + n) of `cache`.
  virtual void load_kv(const float* cache, std::int64_t n, std::int64_t start, std::int64_t kv_heads,
                       std::int64_t head_dim, std::int64_t capacity, float* rows) = 0;
  /// dx[n, w.cols] = dy[n, w.rows] · w (int8 weights dequantized, as the CPU's).
  virtual void matmul_input_grad(const float* dy, std::int64_t n, const DeviceMatrix& w, float* dx) = 0;
  virtual void rmsnorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                                  const float* dy, float* dx) = 0;
  virtual void layernorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                                    const float* dy, float* dx) = 0;
  /// layernorm_heads' input gradient (dx may be dy).
  virtual void layernorm_heads_input_grad(const float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                          const float* weights, float eps, const float* dy, float* dx) = 0;
  virtual void gelu_tanh_input_grad(const float* x, const float* dout, float* dx, std::int64_t count) = 0;
  virtual void silu_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                   std::int64_t count) = 0;
  virtual void gelu_tanh_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                        std::int64_t count) = 0;
  /// silu_mul_input_grad or gelu_tanh_mul_input_grad, as `activation` says.
  void gate_mul_input_grad(GateActivation activation, const float* gate, const float* up, const float* dout, float* dgate,
                           float* dup, std::int64_t count) {
    if (activation == GateActivation::kClampedSwiglu) fail("GPT-OSS's clamped SwiGLU runs on the CPU only");
    if (activation == GateActivation::kGeluTanh) return gelu_tanh_mul_input_grad(gate, up, dout, dgate, dup, count);
    silu_mul_input_grad(gate, up, dout, dgate, dup, count);
  }
  /// Arguments as rope_rotate_half's and rope_rotate_adjacent's, dx in place.
  virtual void rope_rotate_half_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                           std::int64_t rotary_dim, const std::int64_t* positions,
                                           const double* inv_freq, double magnitude) = 0;
  virtual void rope_rotate_adjacent_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                               std::int64_t rotary_dim, const std::int64_t* positions,
                                               const double* inv_freq, double magnitude) = 0;
  /// attention_causal_input_grad over one whole sequence of n positions (no sinks).
  virtual void attention_causal_input_grad(const float* q, const float* keys, const float* values, std::int64_t n,
                                           const AttentionDims& dims, const float* dout, float* dq, float* dkeys,
                                           float* dvalues, const float* alibi, std::int64_t window) = 0;

  // ---- helpers over the above ----
  /// A copy of host `values` in the backend's memory.
  template <typename T>
  std::shared_ptr<void> upload(const T* values, std::int64_t count) {
    auto memory = allocate(count * static_cast<std::int64_t>(sizeof(T)));
    copy_in(memory.get(), values, count * static_cast<std::int64_t>(sizeof(T)));
    return memory;
  }
  /// A copy of a host weight matrix (and its int8 scales) in the backend's memory. Throws
  /// sepal::Error when the backend does not hold its type or shape.
  virtual DeviceMatrix upload_matrix(const WeightView& host);

  /// Held through a sequence of ops (see Thread-safety).
  std::mutex& turn() { return turn_; }

 private:
  std::mutex turn_;
};

/// The CPU backend: host memory, the CPU kernels.
std::unique_ptr<Backend> open_cpu_backend();
/// The CUDA backend on GPU `index` (kernels/cuda/cuda_backend.cu). In a build without CUDA
/// (kernels/cuda_absent.cc), and where the GPU cannot be used, throws sepal::Error in one line
/// saying why.
std::unique_ptr<Backend> open_cuda_backend(int index);
/// The backend of `device`: one of the two above.
std::unique_ptr<Backend> open_backend(const Device& device);

}  // namespace sepal

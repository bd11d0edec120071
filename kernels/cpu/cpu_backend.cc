// The CPU backend: host memory and the CPU kernels, which every other backend is checked against.
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "kernels/activation.h"
#include "kernels/backend.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

namespace sepal {
namespace {

std::int64_t physical_memory(int name) {
  const long pages = sysconf(name), size = sysconf(_SC_PAGESIZE);
  return pages > 0 && size > 0 ? static_cast<std::int64_t>(pages) * size : 0;
}

class CpuBackend final : public Backend {
 public:
  BackendInfo info() const override {
    return {Device{}, std::string("CPU (") + std::string(cpu_isa_name(active_cpu_isa())) + ")",
            physical_memory(_SC_PHYS_PAGES), physical_memory(_SC_AVPHYS_PAGES)};
  }
  bool holds(DType dtype) const override { return dtype != DType::kF16; }

  std::shared_ptr<void> allocate(std::int64_t bytes) override {
    SEPAL_CHECK(bytes >= 0);
    const auto rounded = static_cast<std::size_t>((bytes + 63) / 64 * 64);
    void* memory = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (!memory) fail("out of host memory allocating ", bytes, " bytes");
    return std::shared_ptr<void>(memory, std::free);
  }
  void copy_in(void* dst, const void* src, std::int64_t bytes) override {
    std::memcpy(dst, src, static_cast<std::size_t>(bytes));
  }
  void copy_out(void* dst, const void* src, std::int64_t bytes) override {
    std::memcpy(dst, src, static_cast<std::size_t>(bytes));
  }

  void matmul(const float* x, std::int64_t n, const DeviceMatrix& w, float* y) override { sepal::matmul(x, n, w.view, y); }
  void rmsnorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps, float* y) override {
    sepal::rmsnorm(x, n, dim, weight, eps, y);
  }
  void layernorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, const float* bias, float eps,
                 float* y) override {
    sepal::layernorm(x, n, dim, weight, bias, eps, y);
  }
  void layernorm_heads(const float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, const float* weights,
                       float eps, float* y) override {
    for (std::int64_t r = 0; r < n * heads; ++r) {  // one row of one head at a time, as model/arch/block_parts.cc
      sepal::layernorm(x + r * head_dim, 1, head_dim, weights + (r % heads) * head_dim, nullptr, eps, y + r * head_dim);
    }
  }
  void layernorm_heads_input_grad(const float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                  const float* weights, float eps, const float* dy, float* dx) override {
    for (std::int64_t r = 0; r < n * heads; ++r) {
      sepal::layernorm_input_grad(x + r * head_dim, 1, head_dim, weights + (r % heads) * head_dim, eps, dy + r * head_dim,
                                  dx + r * head_dim);
    }
  }
  void add_bias(float* rows, std::int64_t n, std::int64_t dim, const float* bias) override {
    sepal::add_bias(rows, n, dim, bias);
  }
  void add_in_place(float* y, const float* x, std::int64_t count) override { sepal::add_in_place(y, x, count); }
  void add_scaled_in_place(float* y, const float* x, float scale, std::int64_t count) override {
    sepal::add_scaled_in_place(y, x, scale, count);
  }
  void scale_by_one_plus(float* rows, std::int64_t n, std::int64_t dim, const float* offsets) override {
    sepal::scale_by_one_plus(rows, n, dim, offsets);
  }
  void silu_mul(float* gate, const float* up, std::int64_t count) override { sepal::silu_mul(gate, up, count); }
  void gelu_tanh_mul(float* gate, const float* up, std::int64_t count) override { sepal::gelu_tanh_mul(gate, up, count); }
  void gelu_tanh(float* x, std::int64_t count) override { sepal::gelu_tanh(x, count); }
  void rope_rotate_half(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                        const std::int64_t* positions, const double* inv_freq, double magnitude) override {
    sepal::rope_rotate_half(x, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude);
  }
  void rope_rotate_adjacent(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                            const std::int64_t* positions, const double* inv_freq, double magnitude) override {
    sepal::rope_rotate_adjacent(x, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude);
  }
  void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
                std::int64_t capacity, float* cache) override {
    sepal::store_kv(rows, n, start, kv_heads, head_dim, capacity, cache);
  }
  void attention_causal(const float* q, std::int64_t n, std::int64_t start, const float* keys, const float* values,
                        std::int64_t capacity, const AttentionDims& dims, float* out, const float* alibi,
                        std::int64_t window, std::int64_t held_from) override {
    sepal::attention_causal(q, n, start, keys, values, capacity, dims, out, alibi, window, held_from);
  }
  void attention_tree(const float* q, std::int64_t first, std::int64_t n, std::int64_t start, const std::int32_t* parents,
                      const float* keys, const float* values, std::int64_t capacity, const AttentionDims& dims,
                      float* out, const float* alibi, std::int64_t window, std::int64_t held_from) override {
    sepal::attention_tree(q, first, n, start, parents, keys, values, capacity, dims, out, alibi, window, held_from);
  }
  void keep_rows(float* arrays, std::int64_t count, std::int64_t capacity, std::int64_t head_dim, std::int64_t base,
                 const std::int32_t* path, std::int64_t kept) override {
    for (std::int64_t a = 0; a < count; ++a) {
      float* array = arrays + a * capacity * head_dim;
      for (std::int64_t i = 0; i < kept; ++i) {
        const std::int64_t from = base + path[i], to = base + i;
        if (from != to) std::memmove(array + to * head_dim, array + from * head_dim, static_cast<std::size_t>(head_dim) * 4);
      }
    }
  }

  void copy(void* dst, const void* src, std::int64_t bytes) override {
    std::memcpy(dst, src, static_cast<std::size_t>(bytes));
  }
  void zero(void* dst, std::int64_t bytes) override { std::memset(dst, 0, static_cast<std::size_t>(bytes)); }
  void scale_in_place(float* x, float scale, std::int64_t count) override { sepal::scale_in_place(x, scale, count); }
  void matmul_weight_grad(const float* dy, std::int64_t n, const float* x, std::int64_t rows, std::int64_t cols,
                          float* dw) override {
    sepal::matmul_weight_grad(dy, n, x, rows, cols, dw);
  }
  void add_column_dots(const float* a, const float* b, std::int64_t n, std::int64_t dim, float* sums) override {
    sepal::add_column_dots(a, b, n, dim, sums);
  }
  void load_kv(const float* cache, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
               std::int64_t capacity, float* rows) override {
    SEPAL_CHECK(start >= 0 && start + n <= capacity, "keys loaded past the cache capacity");
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t h = 0; h < kv_heads; ++h)
        std::memcpy(rows + (t * kv_heads + h) * head_dim, cache + (h * capacity + start + t) * head_dim,
                    static_cast<std::size_t>(head_dim) * sizeof(float));
  }
  void matmul_input_grad(const float* dy, std::int64_t n, const DeviceMatrix& w, float* dx) override {
    sepal::matmul_input_grad(dy, n, w.view, dx);
  }
  void rmsnorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                          const float* dy, float* dx) override {
    sepal::rmsnorm_input_grad(x, n, dim, weight, eps, dy, dx);
  }
  void layernorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                            const float* dy, float* dx) override {
    sepal::layernorm_input_grad(x, n, dim, weight, eps, dy, dx);
  }
  void gelu_tanh_input_grad(const float* x, const float* dout, float* dx, std::int64_t count) override {
    sepal::gelu_tanh_input_grad(x, dout, dx, count);
  }
  void silu_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                           std::int64_t count) override {
    sepal::silu_mul_input_grad(gate, up, dout, dgate, dup, count);
  }
  void gelu_tanh_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                std::int64_t count) override {
    sepal::gelu_tanh_mul_input_grad(gate, up, dout, dgate, dup, count);
  }
  void rope_rotate_half_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                   std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                   double magnitude) override {
    sepal::rope_rotate_half_input_grad(dx, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude);
  }
  void rope_rotate_adjacent_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                       std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                       double magnitude) override {
    sepal::rope_rotate_adjacent_input_grad(dx, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude);
  }
  void attention_causal_input_grad(const float* q, const float* keys, const float* values, std::int64_t n,
                                   const AttentionDims& dims, const float* dout, float* dq, float* dkeys, float* dvalues,
                                   const float* alibi, std::int64_t window) override {
    sepal::attention_causal_input_grad(q, keys, values, n, dims, dout, dq, dkeys, dvalues, alibi, window);
  }
};

}  // namespace

std::unique_ptr<Backend> open_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace sepal

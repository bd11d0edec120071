#include "model/arch/device_parts.h"

#include "kernels/error.h"

namespace sepal {

void device_family_norm(Backend& b, const ModelConfig& c, const float* x, std::int64_t n, std::int64_t dim,
                        const float* weight, float* y) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (c.layer_norms) return b.layernorm(x, n, dim, weight, nullptr, eps, y);
  b.rmsnorm(x, n, dim, weight, eps, y);
}

void device_family_norm_input_grad(Backend& b, const ModelConfig& c, const float* x, std::int64_t n, std::int64_t dim,
                                   const float* weight, const float* dy, float* dx) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (c.layer_norms) return b.layernorm_input_grad(x, n, dim, weight, eps, dy, dx);
  b.rmsnorm_input_grad(x, n, dim, weight, eps, dy, dx);
}

void device_qk_norms(Backend& b, const ModelConfig& c, const DeviceBlockWeights& w, std::int64_t rows, float* q, float* k) {
  if (c.qk_norm_per_head_weights) {  // Cohere: each head's LayerNorm with its own weights
    SEPAL_CHECK(c.layer_norms, "per-head q and k norms are LayerNorms");
    const float eps = static_cast<float>(c.rms_norm_eps);
    b.layernorm_heads(q, rows, c.num_heads, c.head_dim, w.q_norm.data, eps, q);
    b.layernorm_heads(k, rows, c.num_kv_heads, c.head_dim, w.k_norm.data, eps, k);
    return;
  }
  device_family_norm(b, c, q, rows * c.q_size() / c.q_norm_width(), c.q_norm_width(), w.q_norm.data, q);
  device_family_norm(b, c, k, rows * c.kv_size() / c.k_norm_width(), c.k_norm_width(), w.k_norm.data, k);
}

void device_qk_norms_input_grad(Backend& b, const ModelConfig& c, const DeviceBlockWeights& w, std::int64_t rows,
                                const float* q_raw, const float* k_raw, float* dq, float* dk) {
  if (c.qk_norm_per_head_weights) {
    const float eps = static_cast<float>(c.rms_norm_eps);
    b.layernorm_heads_input_grad(q_raw, rows, c.num_heads, c.head_dim, w.q_norm.data, eps, dq, dq);
    b.layernorm_heads_input_grad(k_raw, rows, c.num_kv_heads, c.head_dim, w.k_norm.data, eps, dk, dk);
    return;
  }
  device_family_norm_input_grad(b, c, q_raw, rows * c.q_size() / c.q_norm_width(), c.q_norm_width(), w.q_norm.data, dq, dq);
  device_family_norm_input_grad(b, c, k_raw, rows * c.kv_size() / c.k_norm_width(), c.k_norm_width(), w.k_norm.data, dk, dk);
}

const DeviceMatrix& device_projection(const DeviceBlockWeights& w, Projection p) {
  switch (p) {
    case Projection::kQ: return w.q_proj;
    case Projection::kK: return w.k_proj;
    case Projection::kV: return w.v_proj;
    case Projection::kO: return w.o_proj;
    case Projection::kGate: return w.gate_proj;
    case Projection::kUp: return w.up_proj;
    case Projection::kDown: return w.down_proj;
  }
  fail("unknown projection ", static_cast<int>(p));
}

std::optional<std::pair<ProjectionAdapter, const float*>> device_adapter_of(const DeviceAdapters* adapters,
                                                                            const ModelConfig& config,
                                                                            std::int64_t layer, Projection p) {
  if (!adapters) return std::nullopt;
  const auto adapter = adapters->host->of(config, layer, p);
  if (!adapter) return std::nullopt;
  return std::pair{*adapter, adapters->values + (adapter->values - adapters->host->values)};  // the same offset there
}

namespace {

DeviceMatrix f32_matrix(std::int64_t rows, std::int64_t cols, const float* data) {
  return DeviceMatrix{WeightView{DType::kF32, rows, cols, data}, nullptr};
}

void check_peqa(const WeightView& w) {
  if (w.dtype != DType::kI8) fail("PEQA tunes the scales of int8 weights; load the model with --dtype int8");
}

}  // namespace

void device_apply_adapter(Backend& b, const ProjectionAdapter& adapter, const float* values, const WeightView& w,
                          const float* x, std::int64_t n, float* y, float* u, float* wide) {
  if (n <= 0) return;
  if (adapter.method == AdapterMethod::kPeqa) {
    check_peqa(w);
    return b.scale_by_one_plus(y, n, w.rows, values);
  }
  // LoRA: y += scaling · (x Aᵀ) Bᵀ, A [rank, cols] and B [rows, rank] one after the other.
  b.matmul(x, n, f32_matrix(adapter.rank, w.cols, values), u);
  b.matmul(u, n, f32_matrix(w.rows, adapter.rank, values + adapter.rank * w.cols), wide);
  b.add_scaled_in_place(y, wide, adapter.scaling, n * w.rows);
}

void device_adapter_backward(Backend& b, const ProjectionAdapter& adapter, const float* values, const DeviceMatrix& w,
                             const float* x, std::int64_t n, float* dy, float* dx, float* grads, float* u, float* g,
                             float* wide, float* base) {
  if (n <= 0) return;
  const WeightView& v = w.view;
  if (adapter.method == AdapterMethod::kPeqa) {
    check_peqa(v);
    b.matmul(x, n, w, base);
    b.add_column_dots(dy, base, n, v.rows, grads);
    return b.scale_by_one_plus(dy, n, v.rows, values);
  }
  const std::int64_t rank = adapter.rank;
  const DeviceMatrix lora_a = f32_matrix(rank, v.cols, values), lora_b = f32_matrix(v.rows, rank, values + rank * v.cols);
  b.matmul(x, n, lora_a, u);
  b.scale_in_place(u, adapter.scaling, n * rank);
  b.matmul_weight_grad(dy, n, u, v.rows, rank, grads + rank * v.cols);
  b.matmul_input_grad(dy, n, lora_b, g);
  b.scale_in_place(g, adapter.scaling, n * rank);
  b.matmul_weight_grad(g, n, x, rank, v.cols, grads);
  b.matmul_input_grad(g, n, lora_a, wide);
  b.add_in_place(dx, wide, n * v.cols);
}

void device_adapt_product(const DeviceBlockCall& call, Projection p, const float* x, float* y) {
  const WeightView& w = device_projection(call.weights, p).view;
  const auto one = [&](const DeviceAdapters* adapters, std::int64_t row, std::int64_t n) {
    const auto adapter = device_adapter_of(adapters, call.config, call.weights.layer, p);
    if (!adapter || n <= 0) return;
    SEPAL_CHECK(adapter->first.rank <= call.scratch.rank && n <= call.scratch.rows, "adapter scratch too small");
    device_apply_adapter(call.backend, adapter->first, adapter->second, w, x + row * w.cols, n, y + row * w.rows,
                         call.scratch.lora_u, call.scratch.lora_v);
  };
  if (call.segments.empty()) return one(call.adapters, 0, call.n);
  for (const DeviceSegment& seg : call.segments) one(seg.adapters, seg.row, seg.n);
}

}  // namespace sepal

#include "model/arch/training_parts.h"

#include <algorithm>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/gradients.h"

namespace sepal {
namespace {

// rows [n, heads, head_dim] -> heads-major [heads, n, head_dim], and back.
void rows_to_heads(const float* rows, std::int64_t n, std::int64_t heads, std::int64_t hd, float* out) {
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t h = 0; h < heads; ++h) std::copy_n(rows + (t * heads + h) * hd, hd, out + (h * n + t) * hd);
}
void heads_to_rows(const float* heads_major, std::int64_t n, std::int64_t heads, std::int64_t hd, float* rows) {
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t h = 0; h < heads; ++h) std::copy_n(heads_major + (h * n + t) * hd, hd, rows + (t * heads + h) * hd);
}

}  // namespace

Packing::Packing(std::span<const std::int64_t> lengths) {
  for (std::int64_t n : lengths) {
    starts.push_back(tokens);
    for (std::int64_t p = 0; p < n; ++p) positions.push_back(p);
    tokens += n;
  }
}

Activations::Activations(const ModelConfig& c, std::int64_t t)
    : input(t * c.hidden_size), normed1(t * c.hidden_size), q(t * c.q_size()), keys(t * c.kv_size()),
      values(t * c.kv_size()), attn(t * c.q_size()), mid(t * c.hidden_size), normed2(t * c.hidden_size),
      gate(c.family == ModelFamily::kBloom || !c.any_dense_block() ? 0 : t * c.intermediate_size),
      up(c.any_dense_block() ? t * c.intermediate_size : 0), act(c.any_dense_block() ? t * c.intermediate_size : 0), k_rows(t * c.kv_size()), v_rows(t * c.kv_size()),
      q_raw(c.qk_norm ? t * c.q_size() : 0), k_raw(c.qk_norm ? t * c.kv_size() : 0),
      o_raw(c.output_norms ? t * c.hidden_size : 0), down_raw(c.output_norms ? t * c.hidden_size : 0) {}

void Activations::for_backward(const ModelConfig& c, std::int64_t t) {
  const auto inter = static_cast<std::size_t>(c.any_dense_block() ? t * c.intermediate_size : 0), h = static_cast<std::size_t>(t * c.hidden_size);
  const auto q = static_cast<std::size_t>(t * c.q_size()), kv = static_cast<std::size_t>(t * c.kv_size());
  d_act.resize(inter), d_gate.resize(c.family == ModelFamily::kBloom ? 0 : inter), d_up.resize(inter);
  d_norm.resize(h), part.resize(h);
  d_attn.resize(q), dq.resize(q), dk_heads.resize(kv), dv_heads.resize(kv), dk.resize(kv), dv.resize(kv);
}

void packed_attention(const TrainingCall& call, const float* k_rows, const float* v_rows) {
  const ModelConfig& c = call.config;
  Activations& a = call.a;
  const std::int64_t kv = c.kv_size(), qs = c.q_size();
  const AttentionDims dims = block_attention_dims(c, call.weights);
  for (std::size_t s = 0; s < call.pack.starts.size(); ++s) {
    const std::int64_t start = call.pack.starts[s], n = call.pack.length(s);
    rows_to_heads(k_rows + start * kv, n, c.num_kv_heads, c.head_dim, a.keys.data() + start * kv);
    rows_to_heads(v_rows + start * kv, n, c.num_kv_heads, c.head_dim, a.values.data() + start * kv);
    attention_causal(a.q.data() + start * qs, n, 0, a.keys.data() + start * kv, a.values.data() + start * kv, n, dims,
                     a.attn.data() + start * qs, call.alibi, c.window_of(call.weights.layer));
  }
}

void packed_attention_backward(const TrainingCall& call) {
  const ModelConfig& c = call.config;
  Activations& a = call.a;
  const std::int64_t kv = c.kv_size(), qs = c.q_size();
  const AttentionDims dims = block_attention_dims(c, call.weights);
  for (std::size_t s = 0; s < call.pack.starts.size(); ++s) {
    const std::int64_t start = call.pack.starts[s], n = call.pack.length(s);
    attention_causal_input_grad(a.q.data() + start * qs, a.keys.data() + start * kv, a.values.data() + start * kv, n, dims,
                                a.d_attn.data() + start * qs, a.dq.data() + start * qs, a.dk_heads.data() + start * kv,
                                a.dv_heads.data() + start * kv, call.alibi, c.window_of(call.weights.layer));
    heads_to_rows(a.dk_heads.data() + start * kv, n, c.num_kv_heads, c.head_dim, a.dk.data() + start * kv);
    heads_to_rows(a.dv_heads.data() + start * kv, n, c.num_kv_heads, c.head_dim, a.dv.data() + start * kv);
  }
}

void adapt_product(const TrainingCall& call, Projection p, const float* x, float* y) {
  if (!call.adapters) return;
  if (const auto adapter = call.adapters->of(call.config, call.weights.layer, p)) {
    apply_adapter(*adapter, projection_weight(call.weights, p), x, call.pack.tokens, y);
  }
}

void product_input_grad(const TrainingCall& call, Projection p, const float* x, float* dy, float* dx) {
  const WeightView& w = projection_weight(call.weights, p);
  const std::int64_t t = call.pack.tokens;
  const auto adapter = call.adapters ? call.adapters->of(call.config, call.weights.layer, p) : std::nullopt;
  if (!adapter) {
    matmul_input_grad(dy, t, w, dx);
    return;
  }
  std::vector<float> own(static_cast<std::size_t>(t * w.cols), 0.0f);
  adapter_backward(*adapter, w, x, t, dy, own.data(),
                   call.adapter_grads + call.adapters->shape.offset_in_block(call.config, p, call.weights.layer));
  matmul_input_grad(dy, t, w, dx);
  add_in_place(dx, own.data(), t * w.cols);
}

}  // namespace sepal

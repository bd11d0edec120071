#include "model/arch/device_training_parts.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace sepal {
namespace {

// Each buffer's pointer and its floats per token, in allocation order.
std::vector<std::pair<float**, std::int64_t>> layout(DeviceActivations& a, const ModelConfig& c, bool backward,
                                                     bool adapters, std::int64_t rank) {
  const std::int64_t h = c.hidden_size, q = c.q_size(), kv = c.kv_size(), inter = c.intermediate_size;
  const bool bloom = c.family == ModelFamily::kBloom;
  std::vector<std::pair<float**, std::int64_t>> buffers = {
      {&a.input, h},    {&a.normed1, h},  {&a.q, q},        {&a.keys, kv},       {&a.values, kv},
      {&a.attn, q},     {&a.mid, h},      {&a.normed2, h},  {&a.gate, bloom ? 0 : inter},
      {&a.up, inter},   {&a.act, inter},  {&a.k_rows, kv},  {&a.v_rows, kv},     {&a.q_raw, c.qk_norm ? q : 0},
      {&a.k_raw, c.qk_norm ? kv : 0},     {&a.o_raw, c.output_norms ? h : 0},    {&a.down_raw, c.output_norms ? h : 0}};
  if (backward) {
    const std::pair<float**, std::int64_t> more[] = {
        {&a.d_product, h}, {&a.d_act, inter}, {&a.d_gate, bloom ? 0 : inter}, {&a.d_up, inter}, {&a.d_norm, h},
        {&a.part, h},      {&a.d_attn, q},    {&a.dq, q},  {&a.dk_heads, kv},  {&a.dv_heads, kv}, {&a.dk, kv}, {&a.dv, kv},
        {&a.mlp_d_norm, c.parallel_block ? h : 0}};
    buffers.insert(buffers.end(), std::begin(more), std::end(more));
  }
  if (adapters) {
    const std::int64_t widest = std::max({h, q, kv, inter});
    const std::pair<float**, std::int64_t> more[] = {
        {&a.lora_u, rank}, {&a.lora_g, rank}, {&a.adapter_wide, widest}, {&a.adapter_base, widest}, {&a.adapter_own, widest}};
    buffers.insert(buffers.end(), std::begin(more), std::end(more));
  }
  return buffers;
}

// Floats of a buffer of `count`, rounded up to 256 bytes so that every buffer is aligned.
std::int64_t aligned(std::int64_t count) { return (count + 63) / 64 * 64; }

}  // namespace

std::int64_t DeviceActivations::bytes(const ModelConfig& c, std::int64_t tokens, bool backward, bool adapters,
                                      std::int64_t rank) {
  DeviceActivations unused;
  std::int64_t floats = aligned(tokens * 2);  // the positions, int64
  for (const auto& [pointer, per_token] : layout(unused, c, backward, adapters, rank)) floats += aligned(tokens * per_token);
  return floats * 4;
}

DeviceActivations::DeviceActivations(Backend& backend, const ModelConfig& c, const Packing& pack, bool backward,
                                     bool adapters, std::int64_t rank) {
  const std::int64_t t = pack.tokens;
  storage = backend.allocate(bytes(c, t, backward, adapters, rank));
  float* next = static_cast<float*>(storage.get());
  positions = reinterpret_cast<std::int64_t*>(next);
  next += aligned(t * 2);
  for (const auto& [pointer, per_token] : layout(*this, c, backward, adapters, rank)) {
    if (per_token == 0) continue;
    *pointer = next;
    next += aligned(t * per_token);
  }
  backend.copy_in(positions, pack.positions.data(), t * 8);
}

void device_packed_attention(const DeviceTrainingCall& call) {
  const ModelConfig& c = call.config;
  const DeviceActivations& a = call.a;
  Backend& b = call.backend;
  const std::int64_t kv = c.kv_size(), qs = c.q_size();
  for (std::size_t s = 0; s < call.pack.starts.size(); ++s) {
    const std::int64_t start = call.pack.starts[s], n = call.pack.length(s);
    b.store_kv(a.k_rows + start * kv, n, 0, c.num_kv_heads, c.head_dim, n, a.keys + start * kv);
    b.store_kv(a.v_rows + start * kv, n, 0, c.num_kv_heads, c.head_dim, n, a.values + start * kv);
    b.attention_causal(a.q + start * qs, n, 0, a.keys + start * kv, a.values + start * kv, n, c.attention_dims(),
                       a.attn + start * qs, call.alibi, c.window_of(call.weights.layer), 0);
  }
}

void device_packed_attention_backward(const DeviceTrainingCall& call) {
  const ModelConfig& c = call.config;
  const DeviceActivations& a = call.a;
  Backend& b = call.backend;
  const std::int64_t kv = c.kv_size(), qs = c.q_size();
  for (std::size_t s = 0; s < call.pack.starts.size(); ++s) {
    const std::int64_t start = call.pack.starts[s], n = call.pack.length(s);
    b.attention_causal_input_grad(a.q + start * qs, a.keys + start * kv, a.values + start * kv, n, c.attention_dims(),
                                  a.d_attn + start * qs, a.dq + start * qs, a.dk_heads + start * kv,
                                  a.dv_heads + start * kv, call.alibi, c.window_of(call.weights.layer));
    b.load_kv(a.dk_heads + start * kv, n, 0, c.num_kv_heads, c.head_dim, n, a.dk + start * kv);
    b.load_kv(a.dv_heads + start * kv, n, 0, c.num_kv_heads, c.head_dim, n, a.dv + start * kv);
  }
}

void device_qkv_input_grad(const DeviceTrainingCall& call) {
  const DeviceActivations& a = call.a;
  Backend& b = call.backend;
  const std::int64_t t = call.pack.tokens, h = call.config.hidden_size;
  device_product_input_grad(call, Projection::kQ, a.normed1, a.dq, a.d_norm);
  device_product_input_grad(call, Projection::kK, a.normed1, a.dk, a.part);
  b.add_in_place(a.d_norm, a.part, t * h);
  device_product_input_grad(call, Projection::kV, a.normed1, a.dv, a.part);
  b.add_in_place(a.d_norm, a.part, t * h);
}

void device_training_adapt(const DeviceTrainingCall& call, Projection p, const float* x, float* y) {
  const auto adapter = device_adapter_of(call.adapters, call.config, call.weights.layer, p);
  if (!adapter) return;
  device_apply_adapter(call.backend, adapter->first, adapter->second, device_projection(call.weights, p).view, x,
                       call.pack.tokens, y, call.a.lora_u, call.a.adapter_wide);
}

void device_product_input_grad(const DeviceTrainingCall& call, Projection p, const float* x, float* dy, float* dx) {
  const DeviceMatrix& w = device_projection(call.weights, p);
  const std::int64_t t = call.pack.tokens;
  Backend& b = call.backend;
  const auto adapter = device_adapter_of(call.adapters, call.config, call.weights.layer, p);
  if (!adapter) return b.matmul_input_grad(dy, t, w, dx);
  const DeviceActivations& a = call.a;
  b.zero(a.adapter_own, t * w.view.cols * 4);
  const std::int64_t offset = call.adapters->host->shape.offset_in_block(call.config, p, call.weights.layer);
  device_adapter_backward(b, adapter->first, adapter->second, w, x, t, dy, a.adapter_own, call.adapter_grads + offset,
                          a.lora_u, a.lora_g, a.adapter_wide, a.adapter_base);
  b.matmul_input_grad(dy, t, w, dx);
  b.add_in_place(dx, a.adapter_own, t * w.view.cols);
}

void device_rotate_sequences(const DeviceTrainingCall& call, float* x, std::int64_t heads, bool input_grad) {
  const ModelConfig& c = call.config;
  if (!c.rotates(call.weights.layer)) return;
  const double magnitude = c.rope_magnitude(call.weights.layer);
  Backend& b = call.backend;
  for (std::size_t s = 0; s < call.pack.starts.size(); ++s) {
    const std::int64_t start = call.pack.starts[s], n = call.pack.length(s);
    const double* table = call.long_inv_freq && c.long_rope_for(n) ? call.long_inv_freq : call.inv_freq;
    float* rows = x + start * heads * c.head_dim;
    const std::int64_t* positions = call.a.positions + start;
    if (c.rope_adjacent_pairs) {
      if (input_grad) b.rope_rotate_adjacent_input_grad(rows, n, heads, c.head_dim, c.rope_dims(), positions, table, magnitude);
      else b.rope_rotate_adjacent(rows, n, heads, c.head_dim, c.rope_dims(), positions, table, magnitude);
    } else {
      if (input_grad) b.rope_rotate_half_input_grad(rows, n, heads, c.head_dim, c.rope_dims(), positions, table, magnitude);
      else b.rope_rotate_half(rows, n, heads, c.head_dim, c.rope_dims(), positions, table, magnitude);
    }
  }
}

}  // namespace sepal

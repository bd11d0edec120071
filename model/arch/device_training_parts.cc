#include "model/arch/device_training_parts.h"

#include <utility>
#include <vector>

namespace sepal {
namespace {

// Each buffer's pointer and its floats per token, in allocation order.
std::vector<std::pair<float**, std::int64_t>> layout(DeviceActivations& a, const ModelConfig& c, bool backward) {
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
        {&a.part, h},      {&a.d_attn, q},    {&a.dq, q},  {&a.dk_heads, kv},  {&a.dv_heads, kv}, {&a.dk, kv}, {&a.dv, kv}};
    buffers.insert(buffers.end(), std::begin(more), std::end(more));
  }
  return buffers;
}

// Floats of a buffer of `count`, rounded up to 256 bytes so that every buffer is aligned.
std::int64_t aligned(std::int64_t count) { return (count + 63) / 64 * 64; }

}  // namespace

std::int64_t DeviceActivations::bytes(const ModelConfig& c, std::int64_t tokens, bool backward) {
  DeviceActivations unused;
  std::int64_t floats = aligned(tokens * 2);  // the positions, int64
  for (const auto& [pointer, per_token] : layout(unused, c, backward)) floats += aligned(tokens * per_token);
  return floats * 4;
}

DeviceActivations::DeviceActivations(Backend& backend, const ModelConfig& c, const Packing& pack, bool backward) {
  const std::int64_t t = pack.tokens;
  storage = backend.allocate(bytes(c, t, backward));
  float* next = static_cast<float*>(storage.get());
  positions = reinterpret_cast<std::int64_t*>(next);
  next += aligned(t * 2);
  for (const auto& [pointer, per_token] : layout(*this, c, backward)) {
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
                       a.attn + start * qs, call.alibi, c.window_of(call.weights.layer));
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
  const DeviceBlockWeights& w = call.weights;
  Backend& b = call.backend;
  const std::int64_t t = call.pack.tokens, h = call.config.hidden_size;
  b.matmul_input_grad(a.dq, t, w.q_proj, a.d_norm);
  b.matmul_input_grad(a.dk, t, w.k_proj, a.part);
  b.add_in_place(a.d_norm, a.part, t * h);
  b.matmul_input_grad(a.dv, t, w.v_proj, a.part);
  b.add_in_place(a.d_norm, a.part, t * h);
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

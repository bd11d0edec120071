// The Llama family's block on a device: block.cc's forward in the backend's ops, each product
// adapted as block.cc adapts it.
#include "model/arch/architectures.h"
#include "model/arch/device_parts.h"

namespace sepal {

void llama_device_block_forward(const DeviceBlockCall& call) {
  const ModelConfig& c = call.config;
  const DeviceBlockWeights& w = call.weights;
  Backend& b = call.backend;
  const DeviceScratch& s = call.scratch;
  const std::int64_t n = call.n, h = c.hidden_size;

  // The attention's and the MLP's input: the normalised stream, or (OLMo 2) the stream itself.
  const auto input_of = [&](const DeviceVector& norm) -> float* {
    if (!c.input_norms) return call.hidden;
    device_family_norm(b, c, call.hidden, n, h, norm.data, s.normed);
    return s.normed;
  };
  float* x = input_of(w.input_norm);
  device_products(call, x, w.q_proj, s.q);
  device_products(call, x, w.k_proj, s.k);
  device_products(call, x, w.v_proj, s.v);
  device_adapt_product(call, Projection::kQ, x, s.q);
  device_adapt_product(call, Projection::kK, x, s.k);
  device_adapt_product(call, Projection::kV, x, s.v);
  if (c.attention_bias) {
    b.add_bias(s.q, n, c.q_size(), w.q_bias.data);
    b.add_bias(s.k, n, c.kv_size(), w.k_bias.data);
    b.add_bias(s.v, n, c.kv_size(), w.v_bias.data);
  }
  if (c.qk_norm) device_qk_norms(b, c, w, n, s.q, s.k);
  if (c.rotates(w.layer)) {
    const double magnitude = c.rope_magnitude(w.layer);
    // The config's layout: halves, or adjacent pairs (GLM).
    const auto rotate = [&](float* x, std::int64_t rows, std::int64_t heads, const std::int64_t* positions, const double* table) {
      if (c.rope_adjacent_pairs) {
        b.rope_rotate_adjacent(x, rows, heads, c.head_dim, c.rope_dims(), positions, table, magnitude);
      } else {
        b.rope_rotate_half(x, rows, heads, c.head_dim, c.rope_dims(), positions, table, magnitude);
      }
    };
    if (call.segments.empty()) {
      rotate(s.q, n, c.num_heads, s.positions, call.inv_freq);
      rotate(s.k, n, c.num_kv_heads, s.positions, call.inv_freq);
    }
    for (const DeviceSegment& seg : call.segments) {  // each session with its own table
      rotate(s.q + seg.row * c.q_size(), seg.n, c.num_heads, s.positions + seg.row, seg.inv_freq);
      rotate(s.k + seg.row * c.kv_size(), seg.n, c.num_kv_heads, s.positions + seg.row, seg.inv_freq);
    }
  }
  device_store_and_attend(call);
  device_products(call, s.attn, w.o_proj, s.proj);
  device_adapt_product(call, Projection::kO, s.attn, s.proj);
  if (c.output_norms) device_family_norm(b, c, s.proj, n, h, w.attention_out_norm.data, s.proj);
  b.add_scaled_in_place(call.hidden, s.proj, c.residual_scale, n * h);  // Granite: times its multiplier

  if (!c.parallel_block) x = input_of(w.post_attention_norm);  // Cohere: the MLP reads the attention's norm
  device_products(call, x, w.gate_proj, s.gate);
  device_products(call, x, w.up_proj, s.up);
  device_adapt_product(call, Projection::kGate, x, s.gate);
  device_adapt_product(call, Projection::kUp, x, s.up);
  b.gate_mul(c.mlp_activation, s.gate, s.up, n * c.intermediate_size);
  device_products(call, s.gate, w.down_proj, s.proj);
  device_adapt_product(call, Projection::kDown, s.gate, s.proj);
  if (c.output_norms) device_family_norm(b, c, s.proj, n, h, w.mlp_out_norm.data, s.proj);
  b.add_scaled_in_place(call.hidden, s.proj, c.residual_scale, n * h);  // Granite: times its multiplier
}

}  // namespace sepal

// The Llama family's training pass on a device: training.cc's forward and input-gradient backward
// in the backend's ops, op for op, each product adapted and its adapter's gradients taken (the
// blocks a device takes: no experts).
#include "model/arch/architectures.h"
#include "model/arch/device_training_parts.h"

namespace sepal {
namespace {

// The attention's or the MLP's input: rmsnorm(x), or x itself (OLMo 2), into `out`; and its input
// gradient, added to `grad`.
void input_forward(const DeviceTrainingCall& call, const DeviceVector& norm, const float* x, float* out) {
  const ModelConfig& c = call.config;
  const std::int64_t t = call.pack.tokens;
  if (c.input_norms) device_family_norm(call.backend, c, x, t, c.hidden_size, norm.data, out);
  else call.backend.copy(out, x, t * c.hidden_size * 4);
}
void add_input_grad(const DeviceTrainingCall& call, const DeviceVector& norm, const float* x, float* d_out, float* grad) {
  const ModelConfig& c = call.config;
  const std::int64_t t = call.pack.tokens;
  if (c.input_norms) device_family_norm_input_grad(call.backend, c, x, t, c.hidden_size, norm.data, d_out, d_out);
  call.backend.add_in_place(grad, d_out, t * c.hidden_size);
}

// Granite: a block's outputs join the residual stream times residual_scale (training.cc's).
void scale_residual(const DeviceTrainingCall& call, float* x) {
  const ModelConfig& c = call.config;
  if (c.residual_scale != 1.0f) call.backend.scale_in_place(x, c.residual_scale, call.pack.tokens * c.hidden_size);
}

// An output norm (Gemma 2, OLMo 2) of rows [t, hidden] in place, keeping its input in `raw`.
void output_norm(const DeviceTrainingCall& call, const DeviceVector& norm, float* rows, float* raw) {
  const ModelConfig& c = call.config;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size;
  call.backend.copy(raw, rows, t * h * 4);
  device_family_norm(call.backend, c, rows, t, h, norm.data, rows);
}

}  // namespace

void llama_device_training_forward(const DeviceTrainingCall& call, float* hidden) {
  const ModelConfig& c = call.config;
  const DeviceBlockWeights& w = call.weights;
  const DeviceActivations& a = call.a;
  Backend& b = call.backend;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size;
  b.copy(a.input, hidden, t * h * 4);
  input_forward(call, w.input_norm, hidden, a.normed1);
  b.matmul(a.normed1, t, w.q_proj, a.q);
  b.matmul(a.normed1, t, w.k_proj, a.k_rows);
  b.matmul(a.normed1, t, w.v_proj, a.v_rows);
  device_training_adapt(call, Projection::kQ, a.normed1, a.q);
  device_training_adapt(call, Projection::kK, a.normed1, a.k_rows);
  device_training_adapt(call, Projection::kV, a.normed1, a.v_rows);
  if (c.attention_bias) {
    b.add_bias(a.q, t, c.q_size(), w.q_bias.data);
    b.add_bias(a.k_rows, t, c.kv_size(), w.k_bias.data);
    b.add_bias(a.v_rows, t, c.kv_size(), w.v_bias.data);
  }
  if (c.qk_norm) {
    b.copy(a.q_raw, a.q, t * c.q_size() * 4);
    b.copy(a.k_raw, a.k_rows, t * c.kv_size() * 4);
    device_qk_norms(b, c, w, t, a.q, a.k_rows);
  }
  device_rotate_sequences(call, a.q, c.num_heads, false);
  device_rotate_sequences(call, a.k_rows, c.num_kv_heads, false);
  device_packed_attention(call);
  b.matmul(a.attn, t, w.o_proj, hidden);
  device_training_adapt(call, Projection::kO, a.attn, hidden);
  if (c.attention_output_bias) b.add_bias(hidden, t, h, w.o_bias.data);
  if (c.output_norms) output_norm(call, w.attention_out_norm, hidden, a.o_raw);
  scale_residual(call, hidden);
  b.add_in_place(hidden, a.input, t * h);
  b.copy(a.mid, hidden, t * h * 4);

  if (c.parallel_block) {  // Cohere: the MLP reads the attention's input norm
    b.copy(a.normed2, a.normed1, t * h * 4);
  } else {
    input_forward(call, w.post_attention_norm, hidden, a.normed2);
  }
  b.matmul(a.normed2, t, w.gate_proj, a.gate);
  b.matmul(a.normed2, t, w.up_proj, a.up);
  device_training_adapt(call, Projection::kGate, a.normed2, a.gate);
  device_training_adapt(call, Projection::kUp, a.normed2, a.up);
  b.copy(a.act, a.gate, t * c.intermediate_size * 4);
  b.gate_mul(c.mlp_activation, a.act, a.up, t * c.intermediate_size);
  b.matmul(a.act, t, w.down_proj, hidden);
  device_training_adapt(call, Projection::kDown, a.act, hidden);
  if (c.output_norms) output_norm(call, w.mlp_out_norm, hidden, a.down_raw);
  scale_residual(call, hidden);
  b.add_in_place(hidden, a.mid, t * h);
}

void llama_device_training_backward(const DeviceTrainingCall& call, float* grad) {
  const ModelConfig& c = call.config;
  const DeviceBlockWeights& w = call.weights;
  const DeviceActivations& a = call.a;
  Backend& b = call.backend;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size, inter = c.intermediate_size;

  // MLP (training.cc's comments): the down product's gradient, through its output norm, the
  // gated activation and the gate and up products, then the MLP's input norm.
  b.copy(a.d_product, grad, t * h * 4);
  scale_residual(call, a.d_product);
  if (c.output_norms) device_family_norm_input_grad(b, c, a.down_raw, t, h, w.mlp_out_norm.data, a.d_product, a.d_product);
  device_product_input_grad(call, Projection::kDown, a.act, a.d_product, a.d_act);
  b.gate_mul_input_grad(c.mlp_activation, a.gate, a.up, a.d_act, a.d_gate, a.d_up, t * inter);
  device_product_input_grad(call, Projection::kGate, a.normed2, a.d_gate, a.d_norm);
  device_product_input_grad(call, Projection::kUp, a.normed2, a.d_up, a.part);
  b.add_in_place(a.d_norm, a.part, t * h);
  // Cohere's parallel block: the MLP's input gradient goes to the attention's input norm, and the
  // gradient at mid stays the output's.
  if (c.parallel_block) b.copy(a.mlp_d_norm, a.d_norm, t * h * 4);
  else add_input_grad(call, w.post_attention_norm, a.mid, a.d_norm, grad);  // now d loss / d mid

  // Attention.
  b.copy(a.d_product, grad, t * h * 4);
  scale_residual(call, a.d_product);
  if (c.output_norms) device_family_norm_input_grad(b, c, a.o_raw, t, h, w.attention_out_norm.data, a.d_product, a.d_product);
  device_product_input_grad(call, Projection::kO, a.attn, a.d_product, a.d_attn);
  device_packed_attention_backward(call);
  device_rotate_sequences(call, a.dq, c.num_heads, true);
  device_rotate_sequences(call, a.dk, c.num_kv_heads, true);
  if (c.qk_norm) device_qk_norms_input_grad(b, c, w, t, a.q_raw, a.k_raw, a.dq, a.dk);
  device_qkv_input_grad(call);
  if (c.parallel_block) b.add_in_place(a.d_norm, a.mlp_d_norm, t * h);
  add_input_grad(call, w.input_norm, a.input, a.d_norm, grad);
}

}  // namespace sepal

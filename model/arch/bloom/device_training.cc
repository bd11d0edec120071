// BLOOM's training pass on a device: training.cc's forward and input-gradient backward in the
// backend's ops, op for op, each product adapted and its adapter's gradients taken.
#include "model/arch/architectures.h"
#include "model/arch/device_training_parts.h"

namespace sepal {

void bloom_device_training_forward(const DeviceTrainingCall& call, float* hidden) {
  const ModelConfig& c = call.config;
  const DeviceBlockWeights& w = call.weights;
  const DeviceActivations& a = call.a;
  Backend& b = call.backend;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  b.copy(a.input, hidden, t * h * 4);
  b.layernorm(hidden, t, h, w.input_norm.data, w.input_norm_bias.data, eps, a.normed1);
  b.matmul(a.normed1, t, w.q_proj, a.q);
  b.matmul(a.normed1, t, w.k_proj, a.k_rows);
  b.matmul(a.normed1, t, w.v_proj, a.v_rows);
  device_training_adapt(call, Projection::kQ, a.normed1, a.q);
  device_training_adapt(call, Projection::kK, a.normed1, a.k_rows);
  device_training_adapt(call, Projection::kV, a.normed1, a.v_rows);
  b.add_bias(a.q, t, c.q_size(), w.q_bias.data);
  b.add_bias(a.k_rows, t, c.kv_size(), w.k_bias.data);
  b.add_bias(a.v_rows, t, c.kv_size(), w.v_bias.data);
  device_packed_attention(call);
  b.matmul(a.attn, t, w.o_proj, hidden);
  device_training_adapt(call, Projection::kO, a.attn, hidden);
  b.add_bias(hidden, t, h, w.o_bias.data);
  b.add_in_place(hidden, a.input, t * h);
  b.copy(a.mid, hidden, t * h * 4);

  b.layernorm(hidden, t, h, w.post_attention_norm.data, w.post_attention_norm_bias.data, eps, a.normed2);
  b.matmul(a.normed2, t, w.up_proj, a.up);
  device_training_adapt(call, Projection::kUp, a.normed2, a.up);
  b.add_bias(a.up, t, c.intermediate_size, w.up_bias.data);
  b.copy(a.act, a.up, t * c.intermediate_size * 4);
  b.gelu_tanh(a.act, t * c.intermediate_size);
  b.matmul(a.act, t, w.down_proj, hidden);
  device_training_adapt(call, Projection::kDown, a.act, hidden);
  b.add_bias(hidden, t, h, w.down_bias.data);
  b.add_in_place(hidden, a.mid, t * h);
}

void bloom_device_training_backward(const DeviceTrainingCall& call, float* grad) {
  const ModelConfig& c = call.config;
  const DeviceBlockWeights& w = call.weights;
  const DeviceActivations& a = call.a;
  Backend& b = call.backend;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size, inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  b.copy(a.d_product, grad, t * h * 4);
  device_product_input_grad(call, Projection::kDown, a.act, a.d_product, a.d_act);
  b.gelu_tanh_input_grad(a.up, a.d_act, a.d_up, t * inter);
  device_product_input_grad(call, Projection::kUp, a.normed2, a.d_up, a.d_norm);
  b.layernorm_input_grad(a.mid, t, h, w.post_attention_norm.data, eps, a.d_norm, a.d_norm);
  b.add_in_place(grad, a.d_norm, t * h);  // now d loss / d mid

  b.copy(a.d_product, grad, t * h * 4);
  device_product_input_grad(call, Projection::kO, a.attn, a.d_product, a.d_attn);
  device_packed_attention_backward(call);
  device_qkv_input_grad(call);
  b.layernorm_input_grad(a.input, t, h, w.input_norm.data, eps, a.d_norm, a.d_norm);
  b.add_in_place(grad, a.d_norm, t * h);
}

}  // namespace sepal

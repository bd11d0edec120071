// BLOOM's training pass: model/arch/bloom/block.cc's forward over packed sequences, keeping what
// the backward needs, and its input-gradient backward.
#include <algorithm>

#include "kernels/activation.h"
#include "kernels/gradients.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "model/arch/architectures.h"

namespace sepal {

void bloom_training_forward(const TrainingCall& call, float* hidden) {
  const ModelConfig& c = call.config;
  const BlockWeights& w = call.weights;
  Activations& a = call.a;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  std::copy_n(hidden, t * h, a.input.data());
  layernorm(hidden, t, h, w.input_norm.data, w.input_norm_bias.data, eps, a.normed1.data());
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {a.q.data(), a.k_rows.data(), a.v_rows.data()};
  matmul_many(a.normed1.data(), t, qkv, qkv_out);
  adapt_product(call, Projection::kQ, a.normed1.data(), a.q.data());
  adapt_product(call, Projection::kK, a.normed1.data(), a.k_rows.data());
  adapt_product(call, Projection::kV, a.normed1.data(), a.v_rows.data());
  add_bias(a.q.data(), t, c.q_size(), w.q_bias.data);
  add_bias(a.k_rows.data(), t, c.kv_size(), w.k_bias.data);
  add_bias(a.v_rows.data(), t, c.kv_size(), w.v_bias.data);
  packed_attention(call, a.k_rows.data(), a.v_rows.data());
  matmul(a.attn.data(), t, w.o_proj.view, hidden);
  adapt_product(call, Projection::kO, a.attn.data(), hidden);
  add_bias(hidden, t, h, w.o_bias.data);
  add_in_place(hidden, a.input.data(), t * h);
  std::copy_n(hidden, t * h, a.mid.data());

  layernorm(hidden, t, h, w.post_attention_norm.data, w.post_attention_norm_bias.data, eps, a.normed2.data());
  matmul(a.normed2.data(), t, w.up_proj.view, a.up.data());
  adapt_product(call, Projection::kUp, a.normed2.data(), a.up.data());
  add_bias(a.up.data(), t, c.intermediate_size, w.up_bias.data);
  a.act = a.up;
  gelu_tanh(a.act.data(), t * c.intermediate_size);
  matmul(a.act.data(), t, w.down_proj.view, hidden);
  adapt_product(call, Projection::kDown, a.act.data(), hidden);
  add_bias(hidden, t, h, w.down_bias.data);
  add_in_place(hidden, a.mid.data(), t * h);
}

void bloom_training_backward(const TrainingCall& call, float* grad) {
  const ModelConfig& c = call.config;
  const BlockWeights& w = call.weights;
  Activations& a = call.a;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size, inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // MLP: out = mid + 4h_to_h(gelu(h_to_4h(n2) + b1)) + b2, n2 = layernorm(mid); each product
  // adapted (the biases shift them and leave their input gradients alone).
  std::vector<float> d_product(grad, grad + t * h);  // the down product's gradient (PEQA rescales it)
  product_input_grad(call, Projection::kDown, a.act.data(), d_product.data(), a.d_act.data());
  gelu_tanh_input_grad(a.up.data(), a.d_act.data(), a.d_up.data(), t * inter);
  product_input_grad(call, Projection::kUp, a.normed2.data(), a.d_up.data(), a.d_norm.data());
  layernorm_input_grad(a.mid.data(), t, h, w.post_attention_norm.data, eps, a.d_norm.data(), a.d_norm.data());
  add_in_place(grad, a.d_norm.data(), t * h);  // now d loss / d mid

  // Attention: mid = input + dense(attention_alibi(qkv(n1) + b)) + b, n1 = layernorm(input).
  std::copy_n(grad, t * h, d_product.begin());
  product_input_grad(call, Projection::kO, a.attn.data(), d_product.data(), a.d_attn.data());
  packed_attention_backward(call);
  product_input_grad(call, Projection::kQ, a.normed1.data(), a.dq.data(), a.d_norm.data());
  product_input_grad(call, Projection::kK, a.normed1.data(), a.dk.data(), a.part.data());
  add_in_place(a.d_norm.data(), a.part.data(), t * h);
  product_input_grad(call, Projection::kV, a.normed1.data(), a.dv.data(), a.part.data());
  add_in_place(a.d_norm.data(), a.part.data(), t * h);
  layernorm_input_grad(a.input.data(), t, h, w.input_norm.data, eps, a.d_norm.data(), a.d_norm.data());
  add_in_place(grad, a.d_norm.data(), t * h);
}

}  // namespace sepal

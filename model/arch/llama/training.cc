// The Llama family's training pass (Llama, Qwen2's q/k/v biases, Qwen3's, OLMo's and Cohere's q/k
// norms, Mistral's sliding window, Gemma 2's and OLMo 2's output norms, the mixtures of experts,
// GPT-OSS's o bias and sinks, Cohere's LayerNorms, adjacent-pair RoPE and parallel block):
// model/arch/llama/block.cc's forward over packed sequences, keeping what the backward needs, and
// its input-gradient backward.
#include <algorithm>

#include "kernels/activation.h"
#include "kernels/gradients.h"
#include "kernels/matmul.h"
#include "model/arch/architectures.h"

namespace sepal {
namespace {

// RoPE (or, `input_grad`, its input gradient) of each packed sequence's rows x[rows, heads,
// head_dim], with the table of a session of that sequence's length (LongRoPE's long one past the
// original context).
void rotate_sequences(const TrainingCall& call, float* x, std::int64_t heads, bool input_grad) {
  const ModelConfig& c = call.config;
  const Packing& pack = call.pack;
  if (!c.rotates(call.weights.layer)) return;  // SmolLM3's blocks without RoPE
  const double magnitude = c.rope_magnitude(call.weights.layer);
  for (std::size_t s = 0; s < pack.starts.size(); ++s) {
    const std::int64_t start = pack.starts[s], n = pack.length(s);
    const double* table = call.long_inv_freq && c.long_rope_for(n) ? call.long_inv_freq : call.inv_freq;
    float* rows = x + start * heads * c.head_dim;
    const std::int64_t* positions = pack.positions.data() + start;
    if (input_grad) rotate_heads_input_grad(c, rows, n, heads, positions, table, magnitude);
    else rotate_heads(c, rows, n, heads, positions, table, magnitude);
  }
}

// Granite: a block's outputs join the residual stream times residual_scale (x[i] *= it, in place).
void scale_residual(const ModelConfig& c, float* x, std::int64_t count) {
  if (c.residual_scale != 1.0f) scale_in_place(x, c.residual_scale, count);
}

// The attention's or the MLP's input: rmsnorm(x), or x itself where the model has no input norms
// (OLMo 2), into `out`; and its input gradient, added to `grad` (d loss / d x).
void input_forward(const ModelConfig& c, const HeldVector& norm, const float* x, std::int64_t t, float* out) {
  if (c.input_norms) family_norm(c, x, t, c.hidden_size, norm.data, out);
  else std::copy_n(x, t * c.hidden_size, out);
}
void add_input_grad(const ModelConfig& c, const HeldVector& norm, const float* x, std::int64_t t, float* d_out, float* grad) {
  if (c.input_norms) family_norm_input_grad(c, x, t, c.hidden_size, norm.data, d_out, d_out);
  add_in_place(grad, d_out, t * c.hidden_size);
}

}  // namespace

void llama_training_forward(const TrainingCall& call, float* hidden) {
  const ModelConfig& c = call.config;
  const BlockWeights& w = call.weights;
  Activations& a = call.a;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size;
  std::copy_n(hidden, t * h, a.input.data());
  input_forward(c, w.input_norm, hidden, t, a.normed1.data());
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {a.q.data(), a.k_rows.data(), a.v_rows.data()};
  matmul_many(a.normed1.data(), t, qkv, qkv_out);
  adapt_product(call, Projection::kQ, a.normed1.data(), a.q.data());
  adapt_product(call, Projection::kK, a.normed1.data(), a.k_rows.data());
  adapt_product(call, Projection::kV, a.normed1.data(), a.v_rows.data());
  if (c.attention_bias) {
    add_bias(a.q.data(), t, c.q_size(), w.q_bias.data);
    add_bias(a.k_rows.data(), t, c.kv_size(), w.k_bias.data);
    add_bias(a.v_rows.data(), t, c.kv_size(), w.v_bias.data);
  }
  if (c.qk_norm) {
    a.q_raw = a.q;
    a.k_raw = a.k_rows;
    qk_norms(c, w, t, a.q.data(), a.k_rows.data());
  }
  rotate_sequences(call, a.q.data(), c.num_heads, false);
  rotate_sequences(call, a.k_rows.data(), c.num_kv_heads, false);
  packed_attention(call, a.k_rows.data(), a.v_rows.data());
  matmul(a.attn.data(), t, w.o_proj.view, hidden);
  adapt_product(call, Projection::kO, a.attn.data(), hidden);
  if (c.attention_output_bias) add_bias(hidden, t, h, w.o_bias.data);  // GPT-OSS
  if (c.output_norms) {  // Gemma 2
    std::copy_n(hidden, t * h, a.o_raw.data());
    family_norm(c, hidden, t, h, w.attention_out_norm.data, hidden);
  }
  scale_residual(c, hidden, t * h);
  add_in_place(hidden, a.input.data(), t * h);
  std::copy_n(hidden, t * h, a.mid.data());

  if (c.parallel_block) {  // Cohere: the MLP reads the attention's input norm
    std::copy(a.normed1.begin(), a.normed1.end(), a.normed2.begin());
  } else {
    input_forward(c, w.post_attention_norm, hidden, t, a.normed2.data());
  }
  if (c.sparse_block(w.layer)) {  // Mixtral, Qwen3-MoE, OLMoE
    experts_training_forward(c, w, a.normed2.data(), t, a.moe, hidden, call.adapters);
    scale_residual(c, hidden, t * h);
    add_in_place(hidden, a.mid.data(), t * h);
    return;
  }
  const WeightView gate_up[] = {w.gate_proj.view, w.up_proj.view};
  float* const gate_up_out[] = {a.gate.data(), a.up.data()};
  matmul_many(a.normed2.data(), t, gate_up, gate_up_out);
  adapt_product(call, Projection::kGate, a.normed2.data(), a.gate.data());
  adapt_product(call, Projection::kUp, a.normed2.data(), a.up.data());
  a.act = a.gate;
  gate_mul(c.mlp_activation, a.act.data(), a.up.data(), t * c.intermediate_size);
  matmul(a.act.data(), t, w.down_proj.view, hidden);
  adapt_product(call, Projection::kDown, a.act.data(), hidden);
  if (c.output_norms) {
    std::copy_n(hidden, t * h, a.down_raw.data());
    family_norm(c, hidden, t, h, w.mlp_out_norm.data, hidden);
  }
  scale_residual(c, hidden, t * h);
  add_in_place(hidden, a.mid.data(), t * h);
}

void llama_training_backward(const TrainingCall& call, float* grad) {
  const ModelConfig& c = call.config;
  const BlockWeights& w = call.weights;
  Activations& a = call.a;
  const std::int64_t t = call.pack.tokens, h = c.hidden_size, inter = c.intermediate_size;

  // MLP: out = mid + down(act(gate(n2)) · up(n2)), n2 = rmsnorm(mid); each product adapted;
  // Gemma 2 normalises the down product (and below, the o product) before adding it.
  std::vector<float> d_product(grad, grad + t * h);  // the down product's gradient (PEQA rescales it)
  scale_residual(c, d_product.data(), t * h);
  if (c.sparse_block(w.layer)) {  // the experts and their router instead
    experts_input_grad(c, w, t, a.moe, a.normed2.data(), d_product.data(), a.d_norm.data(), call.adapters,
                       call.adapter_grads);
  } else {
    if (c.output_norms) family_norm_input_grad(c, a.down_raw.data(), t, h, w.mlp_out_norm.data, d_product.data(), d_product.data());
    product_input_grad(call, Projection::kDown, a.act.data(), d_product.data(), a.d_act.data());
    gate_mul_input_grad(c.mlp_activation, a.gate.data(), a.up.data(), a.d_act.data(), a.d_gate.data(), a.d_up.data(), t * inter);
    product_input_grad(call, Projection::kGate, a.normed2.data(), a.d_gate.data(), a.d_norm.data());
    product_input_grad(call, Projection::kUp, a.normed2.data(), a.d_up.data(), a.part.data());
    add_in_place(a.d_norm.data(), a.part.data(), t * h);
  }
  // Cohere's parallel block: the MLP's input gradient goes to the attention's input norm, and the
  // gradient at mid stays the output's.
  std::vector<float> mlp_d_norm;
  if (c.parallel_block) mlp_d_norm.assign(a.d_norm.begin(), a.d_norm.end());
  else add_input_grad(c, w.post_attention_norm, a.mid.data(), t, a.d_norm.data(), grad);  // now d loss / d mid

  // Attention: mid = input + o(attention(rope(qn(q(n1) + bq)), rope(kn(k(n1) + bk)), v(n1) + bv)),
  // n1 = rmsnorm(input) (OLMo 2: input), qn and kn Qwen3's or OLMo's norms (else identities); the biases shift the
  // projections and leave their input gradients alone.
  std::copy_n(grad, t * h, d_product.begin());
  scale_residual(c, d_product.data(), t * h);
  if (c.output_norms) family_norm_input_grad(c, a.o_raw.data(), t, h, w.attention_out_norm.data, d_product.data(), d_product.data());
  product_input_grad(call, Projection::kO, a.attn.data(), d_product.data(), a.d_attn.data());
  packed_attention_backward(call);
  rotate_sequences(call, a.dq.data(), c.num_heads, true);
  rotate_sequences(call, a.dk.data(), c.num_kv_heads, true);
  if (c.qk_norm) qk_norms_input_grad(c, w, t, a.q_raw.data(), a.k_raw.data(), a.dq.data(), a.dk.data());
  product_input_grad(call, Projection::kQ, a.normed1.data(), a.dq.data(), a.d_norm.data());
  product_input_grad(call, Projection::kK, a.normed1.data(), a.dk.data(), a.part.data());
  add_in_place(a.d_norm.data(), a.part.data(), t * h);
  product_input_grad(call, Projection::kV, a.normed1.data(), a.dv.data(), a.part.data());
  add_in_place(a.d_norm.data(), a.part.data(), t * h);
  if (c.parallel_block) add_in_place(a.d_norm.data(), mlp_d_norm.data(), t * h);
  add_input_grad(c, w.input_norm, a.input.data(), t, a.d_norm.data(), grad);
}

}  // namespace sepal

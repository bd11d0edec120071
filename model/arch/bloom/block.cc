// BLOOM's block (Hugging Face's BloomBlock).
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/rmsnorm.h"
#include "model/arch/architectures.h"

namespace sepal {

// A BLOOM block (Hugging Face's BloomBlock with apply_residual_connection_post_layernorm false):
// x += dense(attention_alibi(qkv(ln1(x)))) + bias; x += 4h_to_h(gelu(h_to_4h(ln2(x)))) + bias.
void bloom_block_forward(const BlockCall& call) {
  const ModelConfig& c = call.config;
  const BlockWeights& w = call.weights;
  const float* alibi = call.alibi;
  float* hidden = call.hidden;
  const std::int64_t n = call.n, start = call.start, capacity = call.capacity;
  float* keys = call.keys;
  float* values = call.values;
  Scratch& s = call.scratch;
  const TreeRows* tree = call.tree;
  const std::int64_t h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  layernorm(hidden, n, h, w.input_norm.data, w.input_norm_bias.data, eps, s.normed.data());
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {s.q.data(), s.k.data(), s.v.data()};
  block_products(s.normed.data(), n, tree != nullptr, qkv, qkv_out);
  add_bias(s.q.data(), n, c.q_size(), w.q_bias.data);
  add_bias(s.k.data(), n, c.kv_size(), w.k_bias.data);
  add_bias(s.v.data(), n, c.kv_size(), w.v_bias.data);
  const std::int64_t slot = tree ? start + tree->first : start;
  store_kv(s.k.data(), n, slot, c.num_kv_heads, c.head_dim, capacity, keys);
  store_kv(s.v.data(), n, slot, c.num_kv_heads, c.head_dim, capacity, values);
  const AttentionDims dims{c.num_heads, c.num_kv_heads, c.head_dim};
  if (tree) {
    attention_tree(s.q.data(), tree->first, n, start, tree->parents, keys, values, capacity, dims, s.attn.data(), alibi);
  } else {
    attention_causal(s.q.data(), n, start, keys, values, capacity, dims, s.attn.data(), alibi);
  }
  float* const proj_out[] = {s.proj.data()};
  block_products(s.attn.data(), n, tree != nullptr, std::span(&w.o_proj.view, 1), proj_out);
  add_bias(s.proj.data(), n, h, w.o_bias.data);
  add_in_place(hidden, s.proj.data(), n * h);
  layernorm(hidden, n, h, w.post_attention_norm.data, w.post_attention_norm_bias.data, eps, s.normed.data());
  float* const up_out[] = {s.up.data()};
  block_products(s.normed.data(), n, tree != nullptr, std::span(&w.up_proj.view, 1), up_out);
  add_bias(s.up.data(), n, c.intermediate_size, w.up_bias.data);
  gelu_tanh(s.up.data(), n * c.intermediate_size);
  block_products(s.up.data(), n, tree != nullptr, std::span(&w.down_proj.view, 1), proj_out);
  add_bias(s.proj.data(), n, h, w.down_bias.data);
  add_in_place(hidden, s.proj.data(), n * h);
}

}  // namespace sepal

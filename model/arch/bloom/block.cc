// BLOOM's block (Hugging Face's BloomBlock).
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/rmsnorm.h"
#include "model/arch/architectures.h"

namespace sepal {

// A BLOOM block (Hugging Face's BloomBlock with apply_residual_connection_post_layernorm false):
// x += dense(attention_alibi(qkv(ln1(x)))) + bias; x += 4h_to_h(gelu(h_to_4h(ln2(x)))) + bias; each
// product adapted (model/block_adapters.h) before its bias.
void bloom_block_forward(const BlockCall& call) {
  const ModelConfig& c = call.config;
  const BlockWeights& w = call.weights;
  float* hidden = call.hidden;
  const std::int64_t n = call.n;
  Scratch& s = call.scratch;
  const bool alone = rows_alone(call);
  const std::int64_t h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  layernorm(hidden, n, h, w.input_norm.data, w.input_norm_bias.data, eps, s.normed.data());
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {s.q.data(), s.k.data(), s.v.data()};
  block_products(s.normed.data(), n, alone, qkv, qkv_out);
  adapt_product(call, Projection::kQ, s.normed.data(), s.q.data());
  adapt_product(call, Projection::kK, s.normed.data(), s.k.data());
  adapt_product(call, Projection::kV, s.normed.data(), s.v.data());
  add_bias(s.q.data(), n, c.q_size(), w.q_bias.data);
  add_bias(s.k.data(), n, c.kv_size(), w.k_bias.data);
  add_bias(s.v.data(), n, c.kv_size(), w.v_bias.data);
  store_and_attend(call, s.q.data(), s.k.data(), s.v.data(), s.attn.data());
  float* const proj_out[] = {s.proj.data()};
  block_products(s.attn.data(), n, alone, std::span(&w.o_proj.view, 1), proj_out);
  adapt_product(call, Projection::kO, s.attn.data(), s.proj.data());
  add_bias(s.proj.data(), n, h, w.o_bias.data);
  add_in_place(hidden, s.proj.data(), n * h);
  layernorm(hidden, n, h, w.post_attention_norm.data, w.post_attention_norm_bias.data, eps, s.normed.data());
  float* const up_out[] = {s.up.data()};
  block_products(s.normed.data(), n, alone, std::span(&w.up_proj.view, 1), up_out);
  adapt_product(call, Projection::kUp, s.normed.data(), s.up.data());
  add_bias(s.up.data(), n, c.intermediate_size, w.up_bias.data);
  gelu_tanh(s.up.data(), n * c.intermediate_size);
  block_products(s.up.data(), n, alone, std::span(&w.down_proj.view, 1), proj_out);
  adapt_product(call, Projection::kDown, s.up.data(), s.proj.data());
  add_bias(s.proj.data(), n, h, w.down_bias.data);
  add_in_place(hidden, s.proj.data(), n * h);
}

}  // namespace sepal

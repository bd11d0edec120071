// The Llama family's block (every architecture model_config.h's ModelFamily::kLlama lists).
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "model/arch/architectures.h"

namespace sepal {

// A Llama-family block: x += o(attention(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rmsnorm(x); x +=
// down(act(gate(n2)) · up(n2)), n2 = rmsnorm(x), act SiLU (Gemma: GELU); with Qwen2's q, k, v
// biases, Qwen3's RMSNorm of each head of q and k (OLMo's of the whole of q and of k), Mistral's
// sliding window, SmolLM3's blocks without RoPE, Gemma 2's norms of the attention's and the
// MLP's outputs (OLMo 2's, with no norms of their inputs), a mixture of experts for the MLP
// (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, Granite-MoE, GPT-OSS; model/arch/experts.h), GPT-OSS's
// o_proj bias and attention sinks, Granite's residual multiplier, Cohere's LayerNorms, RoPE over
// adjacent pairs and parallel block (attention and MLP on one norm, both added), and GLM's pairs
// over part of each head, where the config has them.
void llama_block_forward(const BlockCall& call) {
  const ModelConfig& c = call.config;
  const BlockWeights& w = call.weights;
  const double* inv_freq = call.inv_freq;
  float* hidden = call.hidden;
  const std::int64_t n = call.n;
  const std::int64_t* positions = call.positions;
  Scratch& s = call.scratch;
  const std::int64_t h = c.hidden_size;

  auto products = [&](const float* x, std::span<const WeightView> ws, std::span<float* const> ys) {
    block_products(x, n, rows_alone(call), ws, ys);
  };
  // The attention's and the MLP's input: the normalised stream, or (OLMo 2) the stream itself,
  // which stays as it is until their outputs are added.
  const auto input_of = [&](const HeldVector& norm) -> const float* {
    if (!c.input_norms) return hidden;
    family_norm(c, hidden, n, h, norm.data, s.normed.data());
    return s.normed.data();
  };
  const float* x = input_of(w.input_norm);
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {s.q.data(), s.k.data(), s.v.data()};
  products(x, qkv, qkv_out);
  adapt_product(call, Projection::kQ, x, s.q.data());
  adapt_product(call, Projection::kK, x, s.k.data());
  adapt_product(call, Projection::kV, x, s.v.data());
  if (c.attention_bias) {
    add_bias(s.q.data(), n, c.q_size(), w.q_bias.data);
    add_bias(s.k.data(), n, c.kv_size(), w.k_bias.data);
    add_bias(s.v.data(), n, c.kv_size(), w.v_bias.data);
  }
  if (c.qk_norm) qk_norms(c, w, n, s.q.data(), s.k.data());
  if (c.rotates(w.layer)) {
    const double magnitude = c.rope_magnitude(w.layer);
    if (call.segments.empty()) {
      rotate_heads(c, s.q.data(), n, c.num_heads, positions, inv_freq, magnitude);
      rotate_heads(c, s.k.data(), n, c.num_kv_heads, positions, inv_freq, magnitude);
    }
    for (const RowSegment& seg : call.segments) {  // each session with its own table
      rotate_heads(c, s.q.data() + seg.row * c.q_size(), seg.n, c.num_heads, positions + seg.row, seg.inv_freq, magnitude);
      rotate_heads(c, s.k.data() + seg.row * c.kv_size(), seg.n, c.num_kv_heads, positions + seg.row, seg.inv_freq, magnitude);
    }
  }
  store_and_attend(call, s.q.data(), s.k.data(), s.v.data(), s.attn.data());
  float* const proj_out[] = {s.proj.data()};
  products(s.attn.data(), std::span(&w.o_proj.view, 1), proj_out);
  adapt_product(call, Projection::kO, s.attn.data(), s.proj.data());
  if (c.attention_output_bias) add_bias(s.proj.data(), n, h, w.o_bias.data);
  if (c.output_norms) family_norm(c, s.proj.data(), n, h, w.attention_out_norm.data, s.proj.data());
  add_scaled_in_place(hidden, s.proj.data(), c.residual_scale, n * h);

  // Cohere's parallel block: the MLP reads the attention's input norm (s.normed, untouched since).
  if (!c.parallel_block) x = input_of(w.post_attention_norm);
  if (c.sparse_block(w.layer)) {  // Mixtral, Qwen3-MoE, OLMoE: the router's experts
    std::vector<AdaptedRows> adapted;  // each session's rows with its adapters, or the call's
    for (const RowSegment& seg : call.segments) adapted.push_back({seg.row, seg.n, seg.adapters});
    if (call.segments.empty() && call.adapters) adapted.push_back({0, n, call.adapters});
    experts_forward(c, w, x, n, rows_alone(call), s.experts, s.proj.data(), adapted);
    add_scaled_in_place(hidden, s.proj.data(), c.residual_scale, n * h);
    return;
  }
  const WeightView gate_up[] = {w.gate_proj.view, w.up_proj.view};
  float* const gate_up_out[] = {s.gate.data(), s.up.data()};
  products(x, gate_up, gate_up_out);
  adapt_product(call, Projection::kGate, x, s.gate.data());
  adapt_product(call, Projection::kUp, x, s.up.data());
  gate_mul(c.mlp_activation, s.gate.data(), s.up.data(), n * c.intermediate_size);
  products(s.gate.data(), std::span(&w.down_proj.view, 1), proj_out);
  adapt_product(call, Projection::kDown, s.gate.data(), s.proj.data());
  if (c.output_norms) family_norm(c, s.proj.data(), n, h, w.mlp_out_norm.data, s.proj.data());
  add_scaled_in_place(hidden, s.proj.data(), c.residual_scale, n * h);
}

}  // namespace sepal

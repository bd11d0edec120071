// The Llama family's weights (Llama, Qwen2, Qwen3, Mistral, Phi-3, Gemma, Granite, OLMo) under Hugging Face's
// names; Phi-3's fused qkv_proj and gate_up_proj are split into views of their parts' rows, and
// Gemma's norms held as the 1 + weight they scale by.
#include <memory>
#include <tuple>
#include <vector>

#include "kernels/error.h"
#include "model/arch/architectures.h"
#include "model/gpt_oss_experts.h"
#include "model/weight_holding.h"

namespace sepal {
namespace {

std::string layer_prefix(std::int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".";
}

const TensorRef& find_embedding_tensor(const Checkpoint& checkpoint, const ModelConfig& config) {
  if (const auto* t = checkpoint.find("model.embed_tokens.weight")) return *t;
  if (config.tie_word_embeddings) {
    if (const auto* t = checkpoint.find("lm_head.weight")) return *t;
    fail("checkpoint has neither model.embed_tokens.weight nor lm_head.weight");
  }
  return checkpoint.get("model.embed_tokens.weight");
}

BlockWeights::Expert unbiased_expert(HeldMatrix gate, HeldMatrix up, HeldMatrix down) {
  BlockWeights::Expert e;
  e.gate_proj = std::move(gate);
  e.up_proj = std::move(up);
  e.down_proj = std::move(down);
  return e;
}

// GPT-OSS's experts: the router (with a bias), and each block's experts stacked as transformers
// holds them (model/gpt_oss_experts.h), or, as a GGUF file or an int8 checkpoint gives them, each
// expert's gate_proj, up_proj and down_proj with their biases (experts.E.gate_proj.weight, .bias).
void load_gpt_oss_experts(const Checkpoint& checkpoint, const ModelConfig& config, const std::string& moe,
                          const WeightLoading& loading, BlockWeights& b) {
  const std::int64_t h = config.hidden_size, inter = config.moe_intermediate_size, experts = config.num_experts;
  const TensorRef& router = checkpoint.get(moe + "router.weight");
  expect_shape(router, {experts, h});
  b.router = hold_matrix(checkpoint, router, loading);
  const TensorRef& router_bias = checkpoint.get(moe + "router.bias");
  expect_shape(router_bias, {experts});
  b.router_bias = hold_vector(router_bias, loading);
  if (!checkpoint.find(moe + "experts.gate_up_proj")) {  // one tensor per expert and projection
    for (std::int64_t e = 0; e < experts; ++e) {
      const std::string expert = moe + "experts." + std::to_string(e) + ".";
      BlockWeights::Expert x;
      for (auto [matrix, bias, name, rows, cols] : {std::tuple{&x.gate_proj, &x.gate_bias, "gate_proj", inter, h},
                                                    std::tuple{&x.up_proj, &x.up_bias, "up_proj", inter, h},
                                                    std::tuple{&x.down_proj, &x.down_bias, "down_proj", h, inter}}) {
        const TensorRef& w = checkpoint.get(expert + name + ".weight");
        expect_shape(w, {rows, cols});
        *matrix = hold_matrix(checkpoint, w, loading);
        const TensorRef& v = checkpoint.get(expert + name + ".bias");
        expect_shape(v, {rows});
        *bias = hold_vector(v, loading);
      }
      b.experts.push_back(std::move(x));
    }
    return;
  }
  for (std::int64_t e = 0; e < experts; ++e) {  // out of transformers' stacks
    BlockWeights::Expert x;
    for (auto [matrix, bias, name] : {std::tuple{&x.gate_proj, &x.gate_bias, "gate_proj"}, std::tuple{&x.up_proj, &x.up_bias, "up_proj"},
                                      std::tuple{&x.down_proj, &x.down_bias, "down_proj"}}) {
      *matrix = hold_matrix(checkpoint, gpt_oss_expert(checkpoint, config, moe, e, name, false), loading);
      *bias = hold_vector(gpt_oss_expert(checkpoint, config, moe, e, name, true), loading);
    }
    b.experts.push_back(std::move(x));
  }
  // Every expert is copied out of this block's stacks: those unpacked from MXFP4 are dropped, so
  // that one block's stacks at a time are in memory.
  for (const char* stack : {"experts.gate_up_proj", "experts.down_proj"}) {
    if (const TensorRef* t = checkpoint.find(moe + stack)) checkpoint.release(*t);
  }
}

}  // namespace

ProjectionModule llama_projection_module(const ModelConfig& config, std::int64_t layer, Projection p, std::int64_t copy) {
  const bool attention = p == Projection::kQ || p == Projection::kK || p == Projection::kV || p == Projection::kO;
  const std::int64_t rows = projection_shape(config, p, layer, copy).first;
  if (!attention && config.sparse_block(layer)) {  // expert `copy`'s module, named as the loader reads it
    const bool mixtral = config.architecture == "MixtralForCausalLM";
    const char* name = p == Projection::kGate ? (mixtral ? "w1" : "gate_proj")
                       : p == Projection::kUp ? (mixtral ? "w3" : "up_proj")
                                              : (mixtral ? "w2" : "down_proj");
    if (copy == config.num_experts) return {layer_prefix(layer) + "mlp.shared_expert." + name, name, rows, rows, rows, 0};  // Qwen2-MoE's
    return {layer_prefix(layer) + (mixtral ? "block_sparse_moe." : "mlp.") + "experts." + std::to_string(copy) + "." + name,
            name, rows, rows, rows, 0};
  }
  // Phi-3: qkv_proj's rows are q's, then k's, then v's; gate_up_proj's (Phi-3's, GLM's) gate's, then up's.
  const std::int64_t q = config.q_size(), kv = config.kv_size(), ffn = config.intermediate_size;
  const std::string prefix = layer_prefix(layer);
  if (config.fused_qkv) {
    switch (p) {
      case Projection::kQ: return {prefix + "self_attn.qkv_proj", "qkv_proj", q + 2 * kv, q, q + 2 * kv, 0};
      case Projection::kK: return {prefix + "self_attn.qkv_proj", "qkv_proj", q + 2 * kv, kv, q + 2 * kv, q};
      case Projection::kV: return {prefix + "self_attn.qkv_proj", "qkv_proj", q + 2 * kv, kv, q + 2 * kv, q + kv};
      default: break;
    }
  }
  if (config.fused_gate_up) {
    if (p == Projection::kGate) return {prefix + "mlp.gate_up_proj", "gate_up_proj", 2 * ffn, ffn, 2 * ffn, 0};
    if (p == Projection::kUp) return {prefix + "mlp.gate_up_proj", "gate_up_proj", 2 * ffn, ffn, 2 * ffn, ffn};
  }
  return {layer_prefix(layer) + (attention ? "self_attn." : "mlp.") + std::string(projection_name(p)),
          std::string(projection_name(p)), rows, rows, rows, 0};
}

BlockWeights load_llama_block_weights(const Checkpoint& checkpoint, const ModelConfig& config, std::int64_t layer,
                                      const WeightLoading& loading) {
  const std::string p = layer_prefix(layer);
  const std::int64_t h = config.hidden_size;
  const std::int64_t ffn = config.intermediate_size;
  auto matrix = [&](Projection projection, std::int64_t rows, std::int64_t cols) {
    const ProjectionModule m = llama_projection_module(config, layer, projection);
    const TensorRef& t = checkpoint.get(m.path + ".weight");
    expect_shape(t, {m.rows, cols});
    if (m.rows == rows) return hold_matrix(checkpoint, t, loading);
    // A part of a fused module: its rows, and in an int8 checkpoint its rows' scales.
    const TensorRef part = row_range(t, m.offset, rows);
    if (t.dtype != DType::kI8) return hold_matrix(checkpoint, part, loading);
    const TensorRef& scales = checkpoint.get(m.path + ".SCB");
    expect_shape(scales, {m.rows});
    return hold_int8_rows(part, row_range(scales, m.offset, rows), loading);
  };
  auto norm = [&](const std::string& name) {
    const TensorRef& t = checkpoint.get(p + name);
    expect_shape(t, {h});
    return hold_norm_weights(t, loading, config);
  };
  BlockWeights b;
  b.layer = layer;
  if (config.input_norms) b.input_norm = norm("input_layernorm.weight");
  if (config.output_norms && config.architecture == "Glm4ForCausalLM") {  // GLM-4's names of Gemma 2's four norms
    b.attention_out_norm = norm("post_self_attn_layernorm.weight");
    b.post_attention_norm = norm("post_attention_layernorm.weight");
    b.mlp_out_norm = norm("post_mlp_layernorm.weight");
  } else if (config.output_norms) {  // Gemma 2, OLMo 2: post_attention_layernorm normalises the attention's output
    b.attention_out_norm = norm("post_attention_layernorm.weight");
    if (config.input_norms) b.post_attention_norm = norm("pre_feedforward_layernorm.weight");
    b.mlp_out_norm = norm("post_feedforward_layernorm.weight");
  } else if (!config.parallel_block) {  // Cohere's MLP reads input_layernorm's output too
    b.post_attention_norm = norm("post_attention_layernorm.weight");
  }
  b.q_proj = matrix(Projection::kQ, config.q_size(), h);
  b.k_proj = matrix(Projection::kK, config.kv_size(), h);
  b.v_proj = matrix(Projection::kV, config.kv_size(), h);
  b.o_proj = matrix(Projection::kO, h, config.q_size());
  if (config.sparse_block(layer)) {
    // Mixtral's block_sparse_moe (gate; experts' w1, w3, w2) or Qwen2-MoE's, Qwen3-MoE's and OLMoE's mlp
    // (gate; experts' gate_proj, up_proj, down_proj; Qwen2-MoE's shared_expert and its gate).
    // Granite-MoE's are Mixtral's, or in its own folders each block's experts stacked: router.layer,
    // input_linear [experts, 2 · inter, hidden] (gate's rows, then up's) and output_linear
    // [experts, hidden, inter], viewed as matrices of experts · rows rows (an int8 copy's scales
    // [experts, rows] alike). Granite-MoE-Shared adds a shared_mlp beside block_sparse_moe.
    const bool granite = config.architecture == "GraniteMoeForCausalLM" || config.architecture == "GraniteMoeSharedForCausalLM";
    const bool mixtral = config.architecture == "MixtralForCausalLM" || granite;
    const std::string moe = p + (mixtral ? "block_sparse_moe." : "mlp.");
    const std::int64_t inter = config.moe_intermediate_size;
    auto held = [&](const std::string& name, std::int64_t rows, std::int64_t cols) {
      const TensorRef& t = checkpoint.get(name);
      expect_shape(t, {rows, cols});
      return hold_matrix(checkpoint, t, loading);
    };
    if (config.architecture == "GptOssForCausalLM") {
      load_gpt_oss_experts(checkpoint, config, moe, loading, b);
    } else if (granite && checkpoint.find(moe + "input_linear.weight")) {
      auto stacked_rows = [&](const std::string& module, std::int64_t rows, std::int64_t cols, std::int64_t e, std::int64_t first,
                              std::int64_t count) {
        TensorRef t = checkpoint.get(moe + module + ".weight");
        expect_shape(t, {config.num_experts, rows, cols});
        t.shape = {config.num_experts * rows, cols};
        const TensorRef part = row_range(t, e * rows + first, count);
        if (t.dtype != DType::kI8) return hold_matrix(checkpoint, part, loading);
        TensorRef scales = checkpoint.get(moe + module + ".SCB");
        expect_shape(scales, {config.num_experts, rows});
        scales.shape = {config.num_experts * rows};
        return hold_int8_rows(part, row_range(scales, e * rows + first, count), loading);
      };
      b.router = held(moe + "router.layer.weight", config.num_experts, h);
      for (std::int64_t e = 0; e < config.num_experts; ++e) {
        b.experts.push_back(unbiased_expert(stacked_rows("input_linear", 2 * inter, h, e, 0, inter),
                                            stacked_rows("input_linear", 2 * inter, h, e, inter, inter),
                                            stacked_rows("output_linear", h, inter, e, 0, h)));
      }
    } else {
      b.router = held(moe + "gate.weight", config.num_experts, h);
      for (std::int64_t e = 0; e < config.num_experts; ++e) {
        const std::string expert = moe + "experts." + std::to_string(e) + ".";
        b.experts.push_back(unbiased_expert(held(expert + (mixtral ? "w1" : "gate_proj") + ".weight", inter, h),
                                            held(expert + (mixtral ? "w3" : "up_proj") + ".weight", inter, h),
                                            held(expert + (mixtral ? "w2" : "down_proj") + ".weight", h, inter)));
      }
    }
    if (const std::int64_t shared = config.shared_expert_intermediate_size; shared > 0 && granite) {
      // Granite-MoE-Shared: shared_mlp.input_linear [2 · shared, hidden] (gate's rows, then up's),
      // output_linear [hidden, shared]; no gate.
      auto input_rows = [&](std::int64_t first) {
        const TensorRef& t = checkpoint.get(p + "shared_mlp.input_linear.weight");
        expect_shape(t, {2 * shared, h});
        const TensorRef part = row_range(t, first, shared);
        if (t.dtype != DType::kI8) return hold_matrix(checkpoint, part, loading);
        const TensorRef& scales = checkpoint.get(p + "shared_mlp.input_linear.SCB");
        expect_shape(scales, {2 * shared});
        return hold_int8_rows(part, row_range(scales, first, shared), loading);
      };
      // A GGUF file's (llama.cpp splits input_linear): shared_mlp.gate_proj and up_proj apart.
      const bool split = !checkpoint.find(p + "shared_mlp.input_linear.weight") && checkpoint.find(p + "shared_mlp.gate_proj.weight");
      b.shared_expert = split ? unbiased_expert(held(p + "shared_mlp.gate_proj.weight", shared, h), held(p + "shared_mlp.up_proj.weight", shared, h),
                                                held(p + "shared_mlp.output_linear.weight", h, shared))
                              : unbiased_expert(input_rows(0), input_rows(shared), held(p + "shared_mlp.output_linear.weight", h, shared));
    } else if (shared > 0) {  // Qwen2-MoE
      b.shared_expert = unbiased_expert(held(moe + "shared_expert.gate_proj.weight", shared, h),
                                        held(moe + "shared_expert.up_proj.weight", shared, h),
                                        held(moe + "shared_expert.down_proj.weight", h, shared));
      b.shared_expert_gate = held(moe + "shared_expert_gate.weight", 1, h);
    }
  } else {
    b.gate_proj = matrix(Projection::kGate, ffn, h);
    b.up_proj = matrix(Projection::kUp, ffn, h);
    b.down_proj = matrix(Projection::kDown, h, ffn);
  }
  if (config.attention_bias) {
    auto bias = [&](const std::string& name, std::int64_t size) {
      const TensorRef& t = checkpoint.get(p + name);
      expect_shape(t, {size});
      return hold_vector(t, loading);
    };
    b.q_bias = bias("self_attn.q_proj.bias", config.q_size());
    b.k_bias = bias("self_attn.k_proj.bias", config.kv_size());
    b.v_bias = bias("self_attn.v_proj.bias", config.kv_size());
    if (config.attention_output_bias) b.o_bias = bias("self_attn.o_proj.bias", h);
  }
  if (config.attention_sinks) {  // GPT-OSS: a logit per head
    const TensorRef& t = checkpoint.get(p + "self_attn.sinks");
    expect_shape(t, {config.num_heads});
    b.sinks = hold_vector(t, loading);
  }
  if (config.qk_norm) {  // a head's width (Qwen3, Gemma 3), the whole projection's (OLMo), or each head's own (Cohere)
    for (auto [name, held, width, heads] :
         {std::tuple{"self_attn.q_norm.weight", &b.q_norm, config.q_norm_width(), config.num_heads},
          std::tuple{"self_attn.k_norm.weight", &b.k_norm, config.k_norm_width(), config.num_kv_heads}}) {
      TensorRef t = checkpoint.get(p + name);
      if (config.qk_norm_per_head_weights) {
        expect_shape(t, {heads, width});
        t.shape = {heads * width};
      }
      expect_shape(t, {config.qk_norm_per_head_weights ? heads * width : width});
      *held = hold_norm_weights(t, loading, config);  // Gemma 3's: 1 + weight
    }
  }
  return b;
}

EmbeddingWeights load_llama_embedding(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading) {
  const TensorRef& t = find_embedding_tensor(checkpoint, config);
  expect_shape(t, {config.vocab_size, config.hidden_size});
  return EmbeddingWeights{hold_matrix(checkpoint, t, loading), {}, {}};
}


HeadWeights load_llama_head(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading,
                            const EmbeddingWeights* embedding) {
  HeadWeights head;
  const TensorRef& norm = checkpoint.get("model.norm.weight");
  expect_shape(norm, {config.hidden_size});
  head.final_norm = hold_norm_weights(norm, loading, config);
  if (config.tie_word_embeddings) {
    if (embedding) {
      head.lm_head = embedding->table;
    } else {
      const TensorRef& t = find_embedding_tensor(checkpoint, config);
      expect_shape(t, {config.vocab_size, config.hidden_size});
      head.lm_head = hold_matrix(checkpoint, t, loading);
    }
  } else {
    const TensorRef& t = checkpoint.get("lm_head.weight");
    expect_shape(t, {config.vocab_size, config.hidden_size});
    head.lm_head = hold_matrix(checkpoint, t, loading);
  }
  return head;
}


}  // namespace sepal

#include "model/synthetic_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "kernels/error.h"
#include "kernels/sampling.h"

namespace sepal {
namespace {

using nlohmann::json;

// The outlier dimensions: outlier_dims of them, evenly spread over the hidden size.
bool is_outlier_dim(const SyntheticSpec& spec, std::int64_t dim) {
  if (spec.outlier_dims <= 0) return false;
  const std::int64_t stride = spec.hidden_size / spec.outlier_dims;
  return dim % stride == stride / 2 && dim / stride < spec.outlier_dims;
}

struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  bool is_norm = false;      // all ones (outlier dimensions aside)
  bool around_one = false;   // 1 ± 0.5, uniform: a norm whose weights a test must see applied
  bool less_one = false;     // stored less one (Gemma's norms, which scale by 1 + weight)
};

// BLOOM's tensors, under its published names with the "transformer." prefix.
std::vector<TensorSpec> bloom_tensor_specs(const SyntheticSpec& s) {
  const std::int64_t h = s.hidden_size, ffn = s.intermediate_size;
  std::vector<TensorSpec> t;
  t.push_back({"transformer.word_embeddings.weight", {s.vocab_size, h}});
  t.push_back({"transformer.word_embeddings_layernorm.weight", {h}, true});
  t.push_back({"transformer.word_embeddings_layernorm.bias", {h}});
  for (std::int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {h}, true});
    t.push_back({p + "input_layernorm.bias", {h}});
    t.push_back({p + "self_attention.query_key_value.weight", {3 * h, h}});
    t.push_back({p + "self_attention.query_key_value.bias", {3 * h}});
    t.push_back({p + "self_attention.dense.weight", {h, h}});
    t.push_back({p + "self_attention.dense.bias", {h}});
    t.push_back({p + "post_attention_layernorm.weight", {h}, true});
    t.push_back({p + "post_attention_layernorm.bias", {h}});
    t.push_back({p + "mlp.dense_h_to_4h.weight", {ffn, h}});
    t.push_back({p + "mlp.dense_h_to_4h.bias", {ffn}});
    t.push_back({p + "mlp.dense_4h_to_h.weight", {h, ffn}});
    t.push_back({p + "mlp.dense_4h_to_h.bias", {h}});
  }
  t.push_back({"transformer.ln_f.weight", {h}, true});
  t.push_back({"transformer.ln_f.bias", {h}});
  return t;
}

}  // namespace

bool synthetic_mixture(std::string_view architecture) {
  return architecture == "MixtralForCausalLM" || architecture == "Qwen3MoeForCausalLM" || architecture == "Qwen2MoeForCausalLM" ||
         architecture == "OlmoeForCausalLM" || architecture == "GraniteMoeForCausalLM" || architecture == "GraniteMoeSharedForCausalLM" ||
         architecture == "GptOssForCausalLM";
}

namespace {

std::vector<TensorSpec> tensor_specs(const SyntheticSpec& s) {
  if (s.architecture == "BloomForCausalLM") return bloom_tensor_specs(s);
  const std::int64_t head_dim = s.head_dim > 0 ? s.head_dim : s.hidden_size / s.num_heads;
  const std::int64_t q = s.num_heads * head_dim, kv = s.num_kv_heads * head_dim;
  std::vector<TensorSpec> t;
  t.push_back({"model.embed_tokens.weight", {s.vocab_size, s.hidden_size}});
  for (std::int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    // Gemma's norms scale by 1 + weight: stored less one, and random, so a test sees both.
    const bool gemma3 = s.architecture == "Gemma3ForCausalLM";
    const bool gemma2 = s.architecture == "Gemma2ForCausalLM" || gemma3;
    const bool gemma = s.architecture == "GemmaForCausalLM" || gemma2;
    const TensorSpec norm{"", {s.hidden_size}, !gemma, gemma, gemma};
    auto add_norm = [&](const std::string& name) {
      t.push_back(norm);
      t.back().name = name;
    };
    const bool olmo2 = s.architecture == "Olmo2ForCausalLM" || s.architecture == "Olmo3ForCausalLM";
    const bool olmoe = s.architecture == "OlmoeForCausalLM";
    const bool cohere2 = s.architecture == "Cohere2ForCausalLM";
    const bool cohere = s.architecture == "CohereForCausalLM" || cohere2;
    if (cohere) {  // one norm, random around 1 (a LayerNorm's weights a test must see)
      t.push_back({p + "input_layernorm.weight", {s.hidden_size}, false, true});
    } else if (!olmo2) {
      add_norm(p + "input_layernorm.weight");  // OLMo 2 normalises outputs only
    }
    const bool fused = s.architecture == "Phi3ForCausalLM";
    if (fused) {
      t.push_back({p + "self_attn.qkv_proj.weight", {q + 2 * kv, s.hidden_size}});
    } else {
      t.push_back({p + "self_attn.q_proj.weight", {q, s.hidden_size}});
      t.push_back({p + "self_attn.k_proj.weight", {kv, s.hidden_size}});
      t.push_back({p + "self_attn.v_proj.weight", {kv, s.hidden_size}});
    }
    t.push_back({p + "self_attn.o_proj.weight", {s.hidden_size, q}});
    const bool gpt_oss = s.architecture == "GptOssForCausalLM";
    const bool glm4 = s.architecture == "Glm4ForCausalLM", glm = s.architecture == "GlmForCausalLM" || glm4;
    if (s.architecture == "Qwen2ForCausalLM" || s.architecture == "Qwen2MoeForCausalLM" || gpt_oss || glm) {
      for (const auto& [name, size] : {std::pair{"q_proj", q}, std::pair{"k_proj", kv}, std::pair{"v_proj", kv}}) {
        t.push_back({p + "self_attn." + name + ".bias", {size}});
      }
    }
    if (gpt_oss) {  // o's bias, and sinks around 1: they take a share a test sees from each softmax
      t.push_back({p + "self_attn.o_proj.bias", {s.hidden_size}});
      t.push_back({p + "self_attn.sinks", {s.num_heads}, false, true});
    }
    if (s.architecture == "Qwen3ForCausalLM" || s.architecture == "Qwen3MoeForCausalLM" || gemma3) {
      t.push_back({p + "self_attn.q_norm.weight", {head_dim}, false, true, gemma3});
      t.push_back({p + "self_attn.k_norm.weight", {head_dim}, false, true, gemma3});
    }
    if (olmo2 || olmoe) {  // over the whole of q and of k
      t.push_back({p + "self_attn.q_norm.weight", {q}, false, true});
      t.push_back({p + "self_attn.k_norm.weight", {kv}, false, true});
    }
    if (s.architecture == "CohereForCausalLM") {  // use_qk_norm: each head's own weights
      t.push_back({p + "self_attn.q_norm.weight", {s.num_heads, head_dim}, false, true});
      t.push_back({p + "self_attn.k_norm.weight", {s.num_kv_heads, head_dim}, false, true});
    }
    if (!cohere) add_norm(p + "post_attention_layernorm.weight");  // Cohere's MLP reads input_layernorm's output
    if (glm4) {  // the attention's and the MLP's outputs normalised, weights around 1
      t.push_back({p + "post_self_attn_layernorm.weight", {s.hidden_size}, false, true});
      t.push_back({p + "post_mlp_layernorm.weight", {s.hidden_size}, false, true});
    }
    if (gemma2) add_norm(p + "pre_feedforward_layernorm.weight");
    if (gemma2 || olmo2) add_norm(p + "post_feedforward_layernorm.weight");
    const bool mixtral = s.architecture == "MixtralForCausalLM";
    const bool dense = std::find(s.mlp_only_layers.begin(), s.mlp_only_layers.end(), l) != s.mlp_only_layers.end();
    if (gpt_oss) {  // experts stacked and transposed, gate's and up's columns interleaved; biases around 1
      const std::string moe = p + "mlp.";
      const std::int64_t inter = s.intermediate_size;
      t.push_back({moe + "router.weight", {s.num_experts, s.hidden_size}});
      t.push_back({moe + "router.bias", {s.num_experts}, false, true});
      t.push_back({moe + "experts.gate_up_proj", {s.num_experts, s.hidden_size, 2 * inter}});
      t.push_back({moe + "experts.gate_up_proj_bias", {s.num_experts, 2 * inter}, false, true});
      t.push_back({moe + "experts.down_proj", {s.num_experts, inter, s.hidden_size}});
      t.push_back({moe + "experts.down_proj_bias", {s.num_experts, s.hidden_size}, false, true});
      continue;
    }
    if (s.architecture == "GraniteMoeForCausalLM" || s.architecture == "GraniteMoeSharedForCausalLM") {
      // its experts stacked, gate's and up's rows in one; Granite-MoE-Shared's shared MLP alike
      const std::string moe = p + "block_sparse_moe.";
      t.push_back({moe + "router.layer.weight", {s.num_experts, s.hidden_size}});
      t.push_back({moe + "input_linear.weight", {s.num_experts, 2 * s.intermediate_size, s.hidden_size}});
      t.push_back({moe + "output_linear.weight", {s.num_experts, s.hidden_size, s.intermediate_size}});
      if (s.architecture == "GraniteMoeSharedForCausalLM") {
        const std::int64_t shared = s.shared_expert_intermediate_size > 0 ? s.shared_expert_intermediate_size : s.intermediate_size;
        t.push_back({p + "shared_mlp.input_linear.weight", {2 * shared, s.hidden_size}});
        t.push_back({p + "shared_mlp.output_linear.weight", {s.hidden_size, shared}});
      }
      continue;
    }
    if (synthetic_mixture(s.architecture) && !dense) {
      const std::string moe = p + (mixtral ? "block_sparse_moe." : "mlp.");
      const std::int64_t inter = mixtral || s.moe_intermediate_size == 0 ? s.intermediate_size : s.moe_intermediate_size;
      t.push_back({moe + "gate.weight", {s.num_experts, s.hidden_size}});
      for (std::int64_t e = 0; e < s.num_experts; ++e) {
        const std::string expert = moe + "experts." + std::to_string(e) + ".";
        t.push_back({expert + (mixtral ? "w1" : "gate_proj") + ".weight", {inter, s.hidden_size}});
        t.push_back({expert + (mixtral ? "w3" : "up_proj") + ".weight", {inter, s.hidden_size}});
        t.push_back({expert + (mixtral ? "w2" : "down_proj") + ".weight", {s.hidden_size, inter}});
      }
      if (s.architecture == "Qwen2MoeForCausalLM") {
        const std::int64_t shared = s.shared_expert_intermediate_size > 0 ? s.shared_expert_intermediate_size : s.intermediate_size;
        t.push_back({moe + "shared_expert.gate_proj.weight", {shared, s.hidden_size}});
        t.push_back({moe + "shared_expert.up_proj.weight", {shared, s.hidden_size}});
        t.push_back({moe + "shared_expert.down_proj.weight", {s.hidden_size, shared}});
        t.push_back({moe + "shared_expert_gate.weight", {1, s.hidden_size}});
      }
      continue;
    }
    if (fused || glm) {
      t.push_back({p + "mlp.gate_up_proj.weight", {2 * s.intermediate_size, s.hidden_size}});
    } else {
      t.push_back({p + "mlp.gate_proj.weight", {s.intermediate_size, s.hidden_size}});
      t.push_back({p + "mlp.up_proj.weight", {s.intermediate_size, s.hidden_size}});
    }
    t.push_back({p + "mlp.down_proj.weight", {s.hidden_size, s.intermediate_size}});
  }
  const bool gemma = s.architecture == "GemmaForCausalLM" || s.architecture == "Gemma2ForCausalLM" ||
                     s.architecture == "Gemma3ForCausalLM";
  const bool cohere = s.architecture == "CohereForCausalLM" || s.architecture == "Cohere2ForCausalLM";
  t.push_back({"model.norm.weight", {s.hidden_size}, !gemma && !cohere, gemma || cohere, gemma});
  if (!s.tie_word_embeddings) t.push_back({"lm_head.weight", {s.vocab_size, s.hidden_size}});
  return t;
}

std::int64_t elements(const TensorSpec& t) {
  std::int64_t n = 1;
  for (auto d : t.shape) n *= d;
  return n;
}

json config_json(const SyntheticSpec& s) {
  if (s.architecture == "BloomForCausalLM") {
    return json{{"architectures", {"BloomForCausalLM"}}, {"model_type", "bloom"}, {"hidden_size", s.hidden_size},
                {"n_layer", s.num_layers}, {"n_head", s.num_heads}, {"vocab_size", s.vocab_size},
                {"layer_norm_epsilon", 1e-5}, {"seq_length", s.max_position_embeddings}, {"tie_word_embeddings", true},
                {"bos_token_id", 1}, {"eos_token_id", 2}};
  }
  json config = json{{"architectures", {s.architecture}},
              {"model_type", s.architecture == "Qwen2ForCausalLM"     ? "qwen2"
                             : s.architecture == "Qwen3ForCausalLM"   ? "qwen3"
                             : s.architecture == "MistralForCausalLM" ? "mistral"
                             : s.architecture == "Phi3ForCausalLM"    ? "phi3"
                             : s.architecture == "GemmaForCausalLM"   ? "gemma"
                             : s.architecture == "Gemma2ForCausalLM"  ? "gemma2"
                             : s.architecture == "Gemma3ForCausalLM"  ? "gemma3_text"
                             : s.architecture == "MixtralForCausalLM" ? "mixtral"
                             : s.architecture == "Qwen3MoeForCausalLM" ? "qwen3_moe"
                             : s.architecture == "Qwen2MoeForCausalLM" ? "qwen2_moe"
                             : s.architecture == "GraniteForCausalLM" ? "granite"
                             : s.architecture == "GraniteMoeForCausalLM" ? "granitemoe"
                             : s.architecture == "GraniteMoeSharedForCausalLM" ? "granitemoeshared"
                             : s.architecture == "Olmo2ForCausalLM" ? "olmo2"
                             : s.architecture == "Olmo3ForCausalLM" ? "olmo3"
                             : s.architecture == "OlmoeForCausalLM" ? "olmoe"
                             : s.architecture == "SmolLM3ForCausalLM" ? "smollm3"
                             : s.architecture == "GptOssForCausalLM" ? "gpt_oss"
                             : s.architecture == "CohereForCausalLM" ? "cohere"
                             : s.architecture == "Cohere2ForCausalLM" ? "cohere2"
                             : s.architecture == "GlmForCausalLM" ? "glm"
                             : s.architecture == "Glm4ForCausalLM" ? "glm4"
                                                                      : "llama"},
              // Gemma's configs say "gelu" here and mean hidden_activation's tanh approximation.
              {"hidden_act", s.architecture == "GemmaForCausalLM" ? "gelu"
                             : s.architecture == "Gemma2ForCausalLM" || s.architecture == "Gemma3ForCausalLM" ? "gelu_pytorch_tanh"
                                                                                                              : "silu"},
              {"hidden_size", s.hidden_size},
              {"intermediate_size", s.intermediate_size},
              {"num_hidden_layers", s.num_layers},
              {"num_attention_heads", s.num_heads},
              {"num_key_value_heads", s.num_kv_heads},
              {"vocab_size", s.vocab_size},
              {"max_position_embeddings", s.max_position_embeddings},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 10000.0},
              {"tie_word_embeddings", s.tie_word_embeddings},
              {"bos_token_id", 1},
              {"eos_token_id", 2},
              {"torch_dtype", s.dtype == DType::kF32 ? "float32" : s.dtype == DType::kF16 ? "float16" : "bfloat16"}};
  const bool gemma3 = s.architecture == "Gemma3ForCausalLM";
  const bool gemma = s.architecture == "GemmaForCausalLM" || s.architecture == "Gemma2ForCausalLM" || gemma3;
  if (gemma) config["hidden_activation"] = "gelu_pytorch_tanh";
  if (gemma3) {  // no soft-capping; its own RoPE base on sliding blocks
    config["attn_logit_softcapping"] = nullptr;
    config["final_logit_softcapping"] = nullptr;
    config["sliding_window_pattern"] = s.sliding_window_pattern;
    config["rope_theta"] = 1000000.0;
    config["rope_local_base_freq"] = 10000.0;
    config["rope_scaling"] = s.linear_rope_factor > 0 ? json{{"rope_type", "linear"}, {"factor", s.linear_rope_factor}} : json();
  }
  if (s.architecture == "Gemma2ForCausalLM" || gemma3) {
    if (!gemma3) {
      config["attn_logit_softcapping"] = s.attention_softcap;
      config["final_logit_softcapping"] = s.final_logit_softcap;
    }
    config["query_pre_attn_scalar"] = s.query_pre_attn_scalar > 0 ? s.query_pre_attn_scalar
                                      : s.head_dim > 0            ? s.head_dim
                                                                  : s.hidden_size / s.num_heads;
  }
  if (s.head_dim > 0 || gemma) {
    config["head_dim"] = s.head_dim > 0 ? s.head_dim : s.hidden_size / s.num_heads;
  }
  if (s.sliding_window > 0) config["sliding_window"] = s.sliding_window;
  if (s.architecture == "GraniteForCausalLM" || s.architecture == "GraniteMoeForCausalLM" ||
      s.architecture == "GraniteMoeSharedForCausalLM") {
    config["embedding_multiplier"] = s.embedding_multiplier;
    config["residual_multiplier"] = s.residual_multiplier;
    config["attention_multiplier"] = s.attention_multiplier;
    config["logits_scaling"] = s.logits_scaling;
  }
  if (s.architecture == "MixtralForCausalLM" || s.architecture == "GraniteMoeForCausalLM" ||
      s.architecture == "GraniteMoeSharedForCausalLM") {
    config["num_local_experts"] = s.num_experts;
    config["num_experts_per_tok"] = s.experts_per_token;
    config["router_aux_loss_coef"] = 0.02;
  }
  if (s.architecture == "Qwen2MoeForCausalLM") {
    config["shared_expert_intermediate_size"] =
        s.shared_expert_intermediate_size > 0 ? s.shared_expert_intermediate_size : s.intermediate_size;
  }
  if (s.architecture == "GraniteMoeSharedForCausalLM") {
    config["shared_intermediate_size"] = s.shared_expert_intermediate_size > 0 ? s.shared_expert_intermediate_size : s.intermediate_size;
  }
  if (s.architecture == "Olmo3ForCausalLM") {  // a window on 3 of every 4 blocks, as OLMo 3's default
    config["sliding_window"] = s.sliding_window > 0 ? s.sliding_window : 4096;
    config["layer_types"] = json::array();
    for (std::int64_t l = 0; l < s.num_layers; ++l) config["layer_types"].push_back((l + 1) % 4 != 0 ? "sliding_attention" : "full_attention");
  }
  if (s.architecture == "SmolLM3ForCausalLM") {  // every fourth block without RoPE, listed as its configs list them
    config["no_rope_layers"] = json::array();
    for (std::int64_t l = 0; l < s.num_layers; ++l) config["no_rope_layers"].push_back((l + 1) % 4 != 0 ? 1 : 0);
    config["use_sliding_window"] = false;
  }
  if (s.architecture == "GptOssForCausalLM") {  // a window on every other block from the first, listed; experts of intermediate_size
    config["num_local_experts"] = s.num_experts;
    config["num_experts_per_tok"] = s.experts_per_token;
    config["experts_per_token"] = s.experts_per_token;
    config["attention_bias"] = true;
    config["swiglu_limit"] = s.swiglu_limit;
    config["sliding_window"] = s.sliding_window > 0 ? s.sliding_window : 128;
    config["layer_types"] = json::array();
    for (std::int64_t l = 0; l < s.num_layers; ++l) config["layer_types"].push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
    config["router_aux_loss_coef"] = 0.9;
    config["output_router_logits"] = false;
  }
  if (s.architecture == "CohereForCausalLM" || s.architecture == "Cohere2ForCausalLM") {
    // Its LayerNorms' epsilon and logit scale (Command R's); Cohere with q and k norms (as Command
    // R+), Cohere 2 with a window on 3 of every 4 blocks (which alone rotate).
    config["layer_norm_eps"] = 1e-5;
    config["logit_scale"] = 0.0625;
    config.erase("rms_norm_eps");
    if (s.architecture == "CohereForCausalLM") config["use_qk_norm"] = true;
    if (s.architecture == "Cohere2ForCausalLM") {
      config["sliding_window"] = s.sliding_window > 0 ? s.sliding_window : 4096;
      config["sliding_window_pattern"] = 4;
    }
  }
  if (s.architecture == "OlmoeForCausalLM") {  // experts of intermediate_size
    config["num_experts"] = s.num_experts;
    config["num_experts_per_tok"] = s.experts_per_token;
    config["norm_topk_prob"] = s.norm_topk_prob;
    config["clip_qkv"] = nullptr;
  }
  if (s.architecture == "Qwen3MoeForCausalLM" || s.architecture == "Qwen2MoeForCausalLM") {
    config["num_experts"] = s.num_experts;
    config["num_experts_per_tok"] = s.experts_per_token;
    config["moe_intermediate_size"] = s.moe_intermediate_size > 0 ? s.moe_intermediate_size : s.intermediate_size;
    config["norm_topk_prob"] = s.norm_topk_prob;
    config["decoder_sparse_step"] = 1;
    config["mlp_only_layers"] = s.mlp_only_layers;
    config["use_sliding_window"] = false;
  }
  const std::int64_t head_dim = s.head_dim > 0 ? s.head_dim : s.hidden_size / s.num_heads;
  const auto rotary_dims = static_cast<std::int64_t>(static_cast<double>(head_dim) * s.partial_rotary_factor);
  if (s.partial_rotary_factor != 1.0) config["partial_rotary_factor"] = s.partial_rotary_factor;
  if (s.architecture == "GlmForCausalLM" || s.architecture == "Glm4ForCausalLM") {  // half of each head rotates, as GLM's; q, k, v biases
    config["partial_rotary_factor"] = s.partial_rotary_factor != 1.0 ? s.partial_rotary_factor : 0.5;
    config["attention_bias"] = true;
  }
  if (s.long_rope_original > 0) {
    json short_factor = json::array(), long_factor = json::array();
    Rng rng(s.seed + 77);
    for (std::int64_t i = 0; i < rotary_dims / 2; ++i) {
      short_factor.push_back(1.0 + 3.0 * rng.uniform());
      long_factor.push_back(1.0 + 3.0 * rng.uniform());
    }
    config["original_max_position_embeddings"] = s.long_rope_original;
    config["rope_scaling"] = {{"type", "longrope"}, {"short_factor", short_factor}, {"long_factor", long_factor}};
  }
  return config;
}

// A byte-fallback BPE tokenizer: <unk>, <s>, </s>, the 256 byte pieces, then filler pieces.
json tokenizer_json(const SyntheticSpec& s) {
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  for (std::int64_t id = 259; id < s.vocab_size; ++id) vocab["\xE2\x96\x81t" + std::to_string(id)] = id;
  auto added = [](int id, const char* content) {
    return json{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  return json{
      {"version", "1.0"},
      {"added_tokens", {added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")}},
      {"normalizer", {{"type", "Sequence"},
                      {"normalizers", {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
      {"pre_tokenizer", nullptr},
      {"decoder", {{"type", "Sequence"},
                   {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
                                 {{"type", "ByteFallback"}},
                                 {{"type", "Fuse"}},
                                 {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", vocab}, {"merges", json::array()}}}};
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) fail("cannot write ", path.string());
}

}  // namespace

std::optional<SyntheticSpec> synthetic_preset(std::string_view name) {
  SyntheticSpec s;
  if (name == "tinyllama-1.1b") {
    s.hidden_size = 2048; s.intermediate_size = 5632; s.num_layers = 22; s.num_heads = 32;
    s.num_kv_heads = 4; s.vocab_size = 32000; s.max_position_embeddings = 2048;
  } else if (name == "llama-7b") {
    s.hidden_size = 4096; s.intermediate_size = 11008; s.num_layers = 32; s.num_heads = 32;
    s.num_kv_heads = 32; s.vocab_size = 32000; s.max_position_embeddings = 4096;
  } else if (name == "stories-110m") {
    s.hidden_size = 768; s.intermediate_size = 2048; s.num_layers = 12; s.num_heads = 12;
    s.num_kv_heads = 12; s.vocab_size = 32000; s.max_position_embeddings = 1024;
  } else if (name == "bloom-1.1b") {  // BLOOM blocks of about TinyLlama's size (BLOOM's own vocabulary is 250880)
    s.architecture = "BloomForCausalLM";
    s.hidden_size = 2048; s.intermediate_size = 8192; s.num_layers = 20; s.num_heads = 16;
    s.num_kv_heads = 16; s.vocab_size = 32000; s.max_position_embeddings = 2048; s.tie_word_embeddings = true;
  } else if (name == "qwen3-0.6b") {  // Qwen3-0.6B's shape: heads of 128, wider than hidden / heads
    s.architecture = "Qwen3ForCausalLM";
    s.hidden_size = 1024; s.intermediate_size = 3072; s.num_layers = 28; s.num_heads = 16; s.head_dim = 128;
    s.num_kv_heads = 8; s.vocab_size = 151936; s.max_position_embeddings = 40960; s.tie_word_embeddings = true;
  } else if (name == "phi3-mini") {  // Phi-3-mini-4k's shape: fused projections, a window of 2047
    s.architecture = "Phi3ForCausalLM";
    s.hidden_size = 3072; s.intermediate_size = 8192; s.num_layers = 32; s.num_heads = 32;
    s.num_kv_heads = 32; s.vocab_size = 32064; s.max_position_embeddings = 4096; s.sliding_window = 2047;
  } else if (name == "gemma-2b") {  // Gemma-2B's shape: one key/value head of 256, a vocabulary of 256000
    s.architecture = "GemmaForCausalLM";
    s.hidden_size = 2048; s.intermediate_size = 16384; s.num_layers = 18; s.num_heads = 8; s.head_dim = 256;
    s.num_kv_heads = 1; s.vocab_size = 256000; s.max_position_embeddings = 8192; s.tie_word_embeddings = true;
  } else if (name == "gemma2-2b") {  // Gemma-2-2B's shape: windows of 4096 on every other block
    s.architecture = "Gemma2ForCausalLM";
    s.hidden_size = 2304; s.intermediate_size = 9216; s.num_layers = 26; s.num_heads = 8; s.head_dim = 256;
    s.num_kv_heads = 4; s.vocab_size = 256000; s.max_position_embeddings = 8192; s.tie_word_embeddings = true;
    s.sliding_window = 4096;
  } else if (name == "gemma3-1b") {  // Gemma-3-1B's shape: windows of 512 on 5 blocks of 6
    s.architecture = "Gemma3ForCausalLM";
    s.hidden_size = 1152; s.intermediate_size = 6912; s.num_layers = 26; s.num_heads = 4; s.head_dim = 256;
    s.num_kv_heads = 1; s.vocab_size = 262144; s.max_position_embeddings = 32768; s.tie_word_embeddings = true;
    s.sliding_window = 512;
  } else if (name == "stories-15m") {
    s.hidden_size = 288; s.intermediate_size = 768; s.num_layers = 6; s.num_heads = 6;
    s.num_kv_heads = 6; s.vocab_size = 32000; s.max_position_embeddings = 256;
    s.tie_word_embeddings = true;
  } else {
    return std::nullopt;
  }
  return s;
}

void validate(const SyntheticSpec& s) {
  auto positive = [](std::int64_t v, const char* name) {
    if (v <= 0) fail("--", name, " must be positive, got ", v);
  };
  positive(s.hidden_size, "hidden");
  positive(s.intermediate_size, "intermediate");
  positive(s.num_layers, "layers");
  positive(s.num_heads, "heads");
  positive(s.num_kv_heads, "kv-heads");
  positive(s.vocab_size, "vocab");
  positive(s.max_position_embeddings, "max-positions");
  if (s.architecture != "LlamaForCausalLM" && s.architecture != "Qwen2ForCausalLM" && s.architecture != "Qwen3ForCausalLM" &&
      s.architecture != "MistralForCausalLM" && s.architecture != "Phi3ForCausalLM" && s.architecture != "GemmaForCausalLM" &&
      s.architecture != "Gemma2ForCausalLM" && s.architecture != "Gemma3ForCausalLM" && s.architecture != "BloomForCausalLM" &&
      s.architecture != "MixtralForCausalLM" && s.architecture != "Qwen3MoeForCausalLM" && s.architecture != "GraniteForCausalLM" &&
      s.architecture != "Qwen2MoeForCausalLM" && s.architecture != "Olmo2ForCausalLM" && s.architecture != "Olmo3ForCausalLM" &&
      s.architecture != "OlmoeForCausalLM" && s.architecture != "SmolLM3ForCausalLM" && s.architecture != "GraniteMoeForCausalLM" &&
      s.architecture != "GraniteMoeSharedForCausalLM" && s.architecture != "GptOssForCausalLM" &&
      s.architecture != "CohereForCausalLM" && s.architecture != "Cohere2ForCausalLM" && s.architecture != "GlmForCausalLM" &&
      s.architecture != "Glm4ForCausalLM") {
    fail("a synthetic checkpoint is LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM, Phi3ForCausalLM, "
         "GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, "
         "GraniteForCausalLM, GraniteMoeForCausalLM, GraniteMoeSharedForCausalLM, Olmo2ForCausalLM, Olmo3ForCausalLM, OlmoeForCausalLM, "
         "SmolLM3ForCausalLM, GptOssForCausalLM, CohereForCausalLM, Cohere2ForCausalLM, GlmForCausalLM, Glm4ForCausalLM or "
         "BloomForCausalLM, not ",
         s.architecture);
  }
  const bool moe = synthetic_mixture(s.architecture);
  if (moe && (s.num_experts < 1 || s.num_experts > 4096 || s.experts_per_token < 1 || s.experts_per_token > s.num_experts)) {
    fail("a mixture of experts needs 1 to 4096 --experts and 1 to that many --experts-per-token, got ", s.num_experts, " and ",
         s.experts_per_token);
  }
  for (double m : {s.embedding_multiplier, s.residual_multiplier, s.attention_multiplier, s.logits_scaling}) {
    if (!(m > 0) || !std::isfinite(m)) fail("Granite's multipliers must be positive");
  }
  if (!moe && s.num_experts != 0) fail("--experts is for MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM and OlmoeForCausalLM");
  if (s.architecture == "OlmoeForCausalLM" && s.moe_intermediate_size != 0) fail("OLMoE's experts are intermediate_size wide");
  if (!(s.swiglu_limit > 0) || !std::isfinite(s.swiglu_limit)) fail("the SwiGLU limit must be positive");
  if (s.shared_expert_intermediate_size < 0 || s.shared_expert_intermediate_size > (1 << 18)) fail("the shared expert's width must be positive");
  if (s.moe_intermediate_size < 0 || s.moe_intermediate_size > (1 << 18)) fail("--moe-intermediate must be positive");
  for (std::int64_t l : s.mlp_only_layers) {
    if ((s.architecture != "Qwen3MoeForCausalLM" && s.architecture != "Qwen2MoeForCausalLM") || l < 0 || l >= s.num_layers) {
      fail("dense blocks (mlp_only_layers) are for Qwen2MoeForCausalLM and Qwen3MoeForCausalLM, within its blocks");
    }
  }
  if (s.architecture == "BloomForCausalLM" &&
      (s.intermediate_size != 4 * s.hidden_size || s.num_kv_heads != s.num_heads || s.head_dim != 0)) {
    fail("a synthetic BLOOM has intermediate = 4 hidden, as many key/value heads as heads, and no head_dim");
  }
  if (s.sliding_window < 0 || (s.sliding_window > 0 && s.architecture != "MistralForCausalLM" && s.architecture != "Phi3ForCausalLM" &&
                                s.architecture != "MixtralForCausalLM" && s.architecture != "Olmo3ForCausalLM" &&
                                s.architecture != "GptOssForCausalLM" && s.architecture != "Cohere2ForCausalLM" &&
                                s.architecture != "Gemma2ForCausalLM" && s.architecture != "Gemma3ForCausalLM")) {
    fail("a sliding window is for MistralForCausalLM, MixtralForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, "
         "Olmo3ForCausalLM, GptOssForCausalLM and Cohere2ForCausalLM, and positive");
  }
  if (!(s.attention_softcap > 0) || !(s.final_logit_softcap > 0) || s.query_pre_attn_scalar < 0 || s.sliding_window_pattern < 1 ||
      !(s.linear_rope_factor >= 0) || !std::isfinite(s.linear_rope_factor)) {
    fail("soft-capping, query_pre_attn_scalar, the window pattern and the RoPE factor must be positive");
  }
  if (s.head_dim < 0) fail("--head-dim must be positive, got ", s.head_dim);
  if (!(s.partial_rotary_factor > 0.0 && s.partial_rotary_factor <= 1.0)) fail("partial_rotary_factor must be in (0, 1]");
  if (s.long_rope_original < 0 || s.long_rope_original > s.max_position_embeddings) {
    fail("LongRoPE's original context must be between 0 and max_position_embeddings");
  }
  if (s.head_dim == 0 && s.hidden_size % s.num_heads != 0) {
    fail("--hidden ", s.hidden_size, " must be a multiple of --heads ", s.num_heads, " (or give --head-dim)");
  }
  const std::int64_t head_dim = s.head_dim > 0 ? s.head_dim : s.hidden_size / s.num_heads;
  if (head_dim % 2 != 0) fail("head size ", head_dim, " must be even");
  if (s.num_heads % s.num_kv_heads != 0) fail("--heads ", s.num_heads, " must be a multiple of --kv-heads ", s.num_kv_heads);
  if (!(s.weight_std > 0.0) || !std::isfinite(s.weight_std)) fail("weight std must be positive");
  if (s.outlier_dims < 0 || s.outlier_dims > s.hidden_size) {
    fail("--outlier-dims must be between 0 and the hidden size (", s.hidden_size, "), got ", s.outlier_dims);
  }
  if (!std::isfinite(s.outlier_scale) || s.outlier_scale <= 0) fail("--outlier-scale must be a number above 0");
  if (s.vocab_size < 259) fail("--vocab must be at least 259 (3 special tokens and 256 byte tokens), got ", s.vocab_size);
  if (s.hidden_size > (1 << 16) || s.intermediate_size > (1 << 18) || s.num_layers > 1024 ||
      s.vocab_size > (1 << 20)) {
    fail("synthetic model shape is too large");
  }
}

void write_synthetic_checkpoint(const SyntheticSpec& spec, const std::filesystem::path& dir,
                                const std::function<void(double)>& progress) {
  validate(spec);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create ", dir.string(), ": ", ec.message());
  write_text(dir / "config.json", config_json(spec).dump(2) + "\n");
  write_text(dir / "tokenizer.json", tokenizer_json(spec).dump() + "\n");

  const auto tensors = tensor_specs(spec);
  const char* dtype_text = spec.dtype == DType::kF32 ? "F32" : spec.dtype == DType::kF16 ? "F16" : "BF16";
  const std::size_t esize = dtype_size(spec.dtype);
  json header = json::object();
  std::uint64_t offset = 0, total = 0;
  for (const auto& t : tensors) {
    const std::uint64_t bytes = static_cast<std::uint64_t>(elements(t)) * esize;
    header[t.name] = json{{"dtype", dtype_text}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  total = offset;
  header["__metadata__"] = json{{"format", "pt"}, {"generator", "sepal synth"}};
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // keeps tensor data 8-byte aligned

  const auto path = dir / "model.safetensors";
  std::FILE* out = std::fopen(path.c_str(), "wb");
  if (!out) fail("cannot write ", path.string());
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(out, std::fclose);
  const std::uint64_t header_len = header_text.size();
  std::fwrite(&header_len, 8, 1, out);
  std::fwrite(header_text.data(), 1, header_text.size(), out);

  // Weights are uniform with standard deviation weight_std (0.02 as Llama's initialiser), norms 1;
  // every 1 MiB-element chunk has its own seed so the output does not depend on thread count.
  constexpr std::int64_t kChunk = 1 << 20;
  const double half_width = spec.weight_std * std::sqrt(3.0);
  std::vector<std::byte> buffer(static_cast<std::size_t>(kChunk) * esize);
  std::uint64_t written = 0;
  for (std::size_t ti = 0; ti < tensors.size(); ++ti) {
    const auto& t = tensors[ti];
    const std::int64_t n = elements(t);
    for (std::int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const std::int64_t count = std::min(kChunk, n - c0);
      Rng rng(spec.seed * 0x9e3779b97f4a7c15ull + ti * 0x100000001b3ull + static_cast<std::uint64_t>(c0 / kChunk));
      for (std::int64_t i = 0; i < count; ++i) {
        float v = t.is_norm      ? 1.0f
                  : t.around_one ? static_cast<float>(1.0 + (rng.uniform() - 0.5))
                                 : static_cast<float>((rng.uniform() * 2.0 - 1.0) * half_width);
        if ((t.is_norm || t.less_one) && (t.name.find("layers.") != std::string::npos || t.name.find(".h.") != std::string::npos) &&
            is_outlier_dim(spec, c0 + i)) {
          v = static_cast<float>(spec.outlier_scale);
        }
        if (t.less_one) v -= 1.0f;
        std::byte* dst = buffer.data() + i * static_cast<std::int64_t>(esize);
        if (spec.dtype == DType::kF32) {
          std::memcpy(dst, &v, 4);
        } else {
          const std::uint16_t bits = spec.dtype == DType::kF16 ? f32_to_f16(v) : f32_to_bf16(v);
          std::memcpy(dst, &bits, 2);
        }
      }
      if (std::fwrite(buffer.data(), esize, static_cast<std::size_t>(count), out) != static_cast<std::size_t>(count)) {
        fail("cannot write ", path.string(), ": disk full?");
      }
      written += static_cast<std::uint64_t>(count) * esize;
      if (progress) progress(static_cast<double>(written) / static_cast<double>(total));
    }
  }
  if (std::fflush(out) != 0) fail("cannot write ", path.string(), ": disk full?");
}

}  // namespace sepal

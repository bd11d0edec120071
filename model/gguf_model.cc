#include "model/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "model/gguf_dequantize.h"

namespace sepal {
namespace {

using json = nlohmann::json;

constexpr const char* kRopeFactors = "rope_freqs.weight";
constexpr const char* kRopeFactorsShort = "rope_factors_short.weight";  // phi3: LongRoPE
constexpr const char* kRopeFactorsLong = "rope_factors_long.weight";

std::string architecture(const GgufFile& file) {
  const auto arch = file.string("general.architecture");
  if (!arch) fail(file.where(), ": no general.architecture");
  if (*arch != "llama" && *arch != "qwen2" && *arch != "qwen3" && *arch != "qwen3moe" && *arch != "phi3" && *arch != "gemma" &&
      *arch != "gemma2" && *arch != "gemma3" && *arch != "granite" && *arch != "granitemoe" && *arch != "olmo2" && *arch != "olmoe" &&
      *arch != "smollm3" && *arch != "qwen2moe" && *arch != "gpt-oss" && *arch != "command-r" && *arch != "cohere2" &&
      *arch != "glm4") {
    fail(file.where(), ": GGUF architecture '", *arch,
         "' is not supported (supported: llama, with or without experts, qwen2, qwen2moe, qwen3, qwen3moe, phi3, gemma, gemma2, gemma3, granite, granitemoe, "
         "olmo2 (and OLMo 3), olmoe, smollm3, gpt-oss, command-r, cohere2, glm4)");
  }
  return *arch;
}

std::int64_t required(const GgufFile& file, const std::string& key) {
  const auto v = file.integer(key);
  if (!v) fail(file.where(), ": no ", key);
  return *v;
}

// The Hugging Face name of a GGUF tensor of the architecture, or empty for one sepal does not use
// (biases but Qwen2's on q, k and v; Qwen3's q and k norms but in qwen3 files; in phi3 files, q, k
// and v apart or a gate apart: Phi-3 fuses them, as attn_qkv and, gate then up, ffn_up).
// A mixture of experts' tensors: a `llama` file with experts is Mixtral (block_sparse_moe: the
// router, experts' w1, w3, w2; a `granitemoe` file's take the same names, which Granite-MoE's
// loader reads where no stacked input_linear is), a `qwen3moe` (`qwen2moe`, `olmoe`) file's are
// under mlp (the router, experts' gate_proj, up_proj, down_proj), as a `gpt-oss` file's are (its
// router `router`, with a bias, and each expert's projections with biases, which GPT-OSS's loader
// reads where no transformers stack is). llama.cpp stacks each block's experts in one tensor per projection
// (ffn_gate_exps, ...; gpt-oss's biases too, ffn_gate_exps.bias); older Mixtral files hold one per expert (ffn_gate.E, ...).
struct ExpertNames {
  std::string prefix, gate, up, down;
};
ExpertNames expert_names(const std::string& arch, const std::string& layer) {
  if (arch == "qwen3moe" || arch == "qwen2moe" || arch == "olmoe" || arch == "gpt-oss") {
    return {"model.layers." + layer + ".mlp.", "gate_proj", "up_proj", "down_proj"};
  }
  return {"model.layers." + layer + ".block_sparse_moe.", "w1", "w3", "w2"};
}
// "blk.L.<part>" split into L and part; false for another name.
bool block_part(const std::string& name, std::string& layer, std::string& part) {
  if (name.rfind("blk.", 0) != 0) return false;
  const auto dot = name.find('.', 4);
  if (dot == std::string::npos) return false;
  layer = name.substr(4, dot - 4);
  part = name.substr(dot + 1);
  return !layer.empty() && layer.find_first_not_of("0123456789") == std::string::npos;
}
// The projection of a stacked experts tensor (ffn_gate_exps.weight: "gate", ...; with `bias`, of a
// stack of their biases, gpt-oss's ffn_gate_exps.bias), or empty.
std::string stacked_experts(const std::string& part, bool* bias = nullptr) {
  for (const char* p : {"gate", "up", "down"}) {
    for (const char* kind : {".weight", ".bias"}) {
      if (part == std::string("ffn_") + p + "_exps" + kind) {
        if (bias) *bias = std::string(kind) == ".bias";
        return p;
      }
    }
  }
  return {};
}

std::string hf_name(const std::string& name, const std::string& arch, bool experts) {
  static const std::map<std::string, std::string> top = {
      {"token_embd.weight", "model.embed_tokens.weight"}, {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"}};
  static const std::map<std::string, std::string> block = {
      {"attn_q.weight", "self_attn.q_proj.weight"},      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_norm.weight", "input_layernorm.weight"},    {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},       {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  static const std::map<std::string, std::string> qwen2_biases = {
      {"attn_q.bias", "self_attn.q_proj.bias"}, {"attn_k.bias", "self_attn.k_proj.bias"}, {"attn_v.bias", "self_attn.v_proj.bias"}};
  static const std::map<std::string, std::string> qwen3_norms = {
      {"attn_q_norm.weight", "self_attn.q_norm.weight"}, {"attn_k_norm.weight", "self_attn.k_norm.weight"}};
  if (auto it = top.find(name); it != top.end()) return it->second;
  static const std::map<std::string, std::string> phi3_block = {
      {"attn_qkv.weight", "self_attn.qkv_proj.weight"},  {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_norm.weight", "input_layernorm.weight"},    {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_up.weight", "mlp.gate_up_proj.weight"},      {"ffn_down.weight", "mlp.down_proj.weight"}};
  std::string layer, part;
  if (!block_part(name, layer, part)) return {};
  if (experts) {  // the router, and older Mixtral files' experts one by one; no dense MLP
    const ExpertNames e = expert_names(arch, layer);
    if (arch == "gpt-oss" && (part == "ffn_gate_inp.weight" || part == "ffn_gate_inp.bias")) {
      return e.prefix + "router" + part.substr(part.rfind('.'));
    }
    if (part == "ffn_gate_inp.weight") return e.prefix + "gate.weight";
    if (arch == "granitemoe") {  // Granite-MoE-Shared's shared MLP, its input_linear split into gate and up
      const std::string shared = "model.layers." + layer + ".shared_mlp.";
      if (part == "ffn_gate_shexp.weight") return shared + "gate_proj.weight";
      if (part == "ffn_up_shexp.weight") return shared + "up_proj.weight";
      if (part == "ffn_down_shexp.weight") return shared + "output_linear.weight";
    }
    if (arch == "qwen2moe") {  // Qwen2-MoE's shared expert and its gate
      if (part == "ffn_gate_inp_shexp.weight") return e.prefix + "shared_expert_gate.weight";
      for (const char* p : {"gate", "up", "down"}) {
        if (part == std::string("ffn_") + p + "_shexp.weight") return e.prefix + "shared_expert." + p + "_proj.weight";
      }
    }
    for (const auto& [file_name, hf] : {std::pair{"gate", e.gate}, std::pair{"up", e.up}, std::pair{"down", e.down}}) {
      const std::string head = std::string("ffn_") + file_name + ".";
      if (part.rfind(head, 0) == 0 && part.ends_with(".weight")) {
        const std::string index = part.substr(head.size(), part.size() - head.size() - 7);
        if (!index.empty() && index.find_first_not_of("0123456789") == std::string::npos) {
          return e.prefix + "experts." + index + "." + hf + ".weight";
        }
      }
    }
    if (part == "ffn_gate.weight" || part == "ffn_up.weight" || part == "ffn_down.weight") return {};
  }
  if (arch == "phi3") {
    const auto fused = phi3_block.find(part);
    return fused == phi3_block.end() ? std::string() : "model.layers." + layer + "." + fused->second;
  }
  // glm4: gate and up fused in ffn_up, as in its folders; the attention's output norm
  // post_attention_norm, the MLP's post_ffw_norm, and ffn_norm its MLP's input norm.
  static const std::map<std::string, std::string> glm4_block = {
      {"ffn_up.weight", "mlp.gate_up_proj.weight"},
      {"post_attention_norm.weight", "post_self_attn_layernorm.weight"},
      {"post_ffw_norm.weight", "post_mlp_layernorm.weight"}};
  if (arch == "glm4") {
    if (const auto it = glm4_block.find(part); it != glm4_block.end()) return "model.layers." + layer + "." + it->second;
    if (part == "ffn_gate.weight") return {};  // not a glm4 tensor
  }
  // Gemma 2's four norms: llama.cpp's ffn_norm is its pre_feedforward_layernorm (OLMo 2 has the
  // norms of the outputs only).
  static const std::map<std::string, std::string> gemma2_norms = {
      {"post_attention_norm.weight", "post_attention_layernorm.weight"}, {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
      {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"}};
  if (arch == "gemma2" || arch == "gemma3" || arch == "olmo2") {
    if (const auto norm = gemma2_norms.find(part); norm != gemma2_norms.end()) return "model.layers." + layer + "." + norm->second;
  }
  // gpt-oss: biases on every attention projection, a sink per head, and post_attention_norm the norm
  // before the MLP.
  static const std::map<std::string, std::string> gpt_oss_attention = {
      {"attn_q.bias", "self_attn.q_proj.bias"},         {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},         {"attn_output.bias", "self_attn.o_proj.bias"},
      {"attn_sinks.weight", "self_attn.sinks"},         {"post_attention_norm.weight", "post_attention_layernorm.weight"}};
  if (arch == "gpt-oss") {
    if (const auto it = gpt_oss_attention.find(part); it != gpt_oss_attention.end()) return "model.layers." + layer + "." + it->second;
    if (part == "ffn_norm.weight") return {};  // not a gpt-oss tensor
  }
  auto it = block.find(part);
  const bool qwen2 = arch == "qwen2" || arch == "qwen2moe" || arch == "glm4";  // biases on q, k and v
  if (it == block.end() && qwen2) it = qwen2_biases.find(part);
  // command-r's q and k norms (Command R+'s use_qk_norm), each head's own: [heads, head_dim].
  const bool qk_norms = arch == "qwen3" || arch == "qwen3moe" || arch == "gemma3" || arch == "olmo2" || arch == "olmoe" || arch == "command-r";
  // Cohere's blocks have one norm, the attention's and the MLP's input.
  if ((arch == "command-r" || arch == "cohere2") && part == "ffn_norm.weight") return {};
  if (it == block.end() && qk_norms) it = qwen3_norms.find(part);
  if (it == block.end() || (!qwen2 && qwen2_biases.count(part)) || (!qk_norms && qwen3_norms.count(part))) return {};
  return "model.layers." + layer + "." + it->second;
}

// llama.cpp stores each head's query and key rows interleaved (pairs rotated together); Hugging
// Face stores the two halves apart. Row h*d + 2j + s of the file is row h*d + s*d/2 + j here.
std::vector<float> unpermute_rows(const std::vector<float>& in, std::int64_t heads, std::int64_t rows, std::int64_t cols) {
  const std::int64_t d = rows / heads;
  std::vector<float> out(in.size());
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t j = 0; j < d / 2; ++j) {
      for (std::int64_t s = 0; s < 2; ++s) {
        const float* from = in.data() + (h * d + 2 * j + s) * cols;
        std::copy(from, from + cols, out.data() + (h * d + s * d / 2 + j) * cols);
      }
    }
  }
  return out;
}

// Llama 3.1's RoPE scaling as llama.cpp's converter stores it: rope_freqs.weight, one factor per
// pair of head dimensions, dividing that pair's inverse frequency; or LongRoPE's factors
// (rope_factors_short.weight, rope_factors_long.weight). Absent: no scaling.
std::optional<std::vector<double>> rope_frequency_factors(const GgufFile& file, std::int64_t rope_dims, const char* name) {
  const auto it = file.tensors().find(name);
  if (it == file.tensors().end()) return std::nullopt;
  const GgufTensor& t = it->second;
  if (t.dims.size() != 1 || t.dims[0] != rope_dims / 2) {
    fail(file.where(), ": ", name, " must hold ", rope_dims / 2, " factors (half of the ", rope_dims, " rotated dimensions), not ", t.elements());
  }
  std::vector<float> values(static_cast<std::size_t>(t.elements()));
  dequantize_ggml(t.type, t.data, t.elements(), values.data());
  std::vector<double> factors(values.begin(), values.end());
  for (const double f : factors) {
    if (!(f > 0.0) || !std::isfinite(f)) fail(file.where(), ": ", name, " holds ", f, " (factors must be positive)");
  }
  return factors;
}

// Phi-3's LongRoPE as llama.cpp's converter stores it: the factors as tensors, the attention factor
// and the original context as keys. As from config.json (model_config.cc): the short and the long
// factors and the attention factor.
void apply_longrope(const GgufFile& file, ModelConfig& config) {
  auto short_factors = rope_frequency_factors(file, config.rope_dims(), kRopeFactorsShort);
  auto long_factors = rope_frequency_factors(file, config.rope_dims(), kRopeFactorsLong);
  if (!short_factors && !long_factors) return;
  if (!short_factors || !long_factors) fail(file.where(), ": LongRoPE needs both ", kRopeFactorsShort, " and ", kRopeFactorsLong);
  const auto original = file.integer("phi3.rope.scaling.original_context_length");
  if (!original || *original < 2) fail(file.where(), ": LongRoPE factors without phi3.rope.scaling.original_context_length (of at least 2)");
  const double factor = static_cast<double>(config.max_position_embeddings) / static_cast<double>(*original);
  double attention = factor > 1.0 ? std::sqrt(1.0 + std::log(factor) / std::log(static_cast<double>(*original))) : 1.0;
  if (auto given = file.number("phi3.rope.scaling.attn_factor")) {
    if (!(*given > 0.0) || !std::isfinite(*given)) fail(file.where(), ": phi3.rope.scaling.attn_factor is ", *given, " (must be positive)");
    attention = *given;
  }
  config.rope_scaling.kind = RopeScaling::Kind::kFactors;
  config.rope_scaling.freq_factors = std::move(*short_factors);
  config.rope_scaling.long_freq_factors = std::move(*long_factors);
  config.rope_scaling.attention_factor = attention;
  config.rope_scaling.original_max_position_embeddings = static_cast<double>(*original);
}

}  // namespace

ModelConfig gguf_model_config(const GgufFile& file) {
  const std::string arch = architecture(file);
  json c;
  // qwen2: q, k, v biases; qwen3: q and k norms
  const std::int64_t experts = file.integer(arch + ".expert_count").value_or(0);
  c["architectures"] = {arch == "qwen2"   ? "Qwen2ForCausalLM"
                        : arch == "qwen3" ? "Qwen3ForCausalLM"
                        : arch == "qwen3moe" ? "Qwen3MoeForCausalLM"
                        : arch == "qwen2moe" ? "Qwen2MoeForCausalLM"
                        : arch == "llama" && experts > 0 ? "MixtralForCausalLM"
                        : arch == "granite" ? "GraniteForCausalLM"
                        : arch == "granitemoe" && file.integer("granitemoe.expert_shared_feed_forward_length").value_or(0) > 0
                            ? "GraniteMoeSharedForCausalLM"
                        : arch == "granitemoe" ? "GraniteMoeForCausalLM"
                        : arch == "phi3"  ? "Phi3ForCausalLM"
                        : arch == "gemma" ? "GemmaForCausalLM"
                        : arch == "gemma2" ? "Gemma2ForCausalLM"
                        : arch == "gemma3" ? "Gemma3ForCausalLM"
                        : arch == "olmoe" ? "OlmoeForCausalLM"
                        : arch == "olmo2" && file.integer("olmo2.attention.sliding_window").value_or(0) > 0 ? "Olmo3ForCausalLM"
                        : arch == "olmo2" ? "Olmo2ForCausalLM"
                        : arch == "smollm3" ? "SmolLM3ForCausalLM"  // llama.cpp's NoPE on every 4th block: the parser's default
                        : arch == "gpt-oss" ? "GptOssForCausalLM"
                        : arch == "command-r" ? "CohereForCausalLM"
                        : arch == "cohere2" ? "Cohere2ForCausalLM"
                        : arch == "glm4" ? "Glm4ForCausalLM"
                                          : "LlamaForCausalLM"};
  // glm4: its biases where the file has them; the rotated share from rope.dimension_count (below).
  if (arch == "glm4") c["attention_bias"] = file.tensors().count("blk.0.attn_q.bias") > 0;
  if (arch == "command-r" || arch == "cohere2") {  // as llama.cpp reads them; Cohere 2's window on 3 of every 4 blocks (the parser's default)
    const auto scale = file.number(arch + ".logit_scale");
    if (!scale) fail(file.where(), ": no ", arch, ".logit_scale");
    c["logit_scale"] = *scale;
    if (auto eps = file.number(arch + ".attention.layer_norm_epsilon")) c["layer_norm_eps"] = *eps;
    if (arch == "cohere2") c["sliding_window"] = required(file, "cohere2.attention.sliding_window");
    if (arch == "command-r") c["use_qk_norm"] = file.tensors().count("blk.0.attn_q_norm.weight") > 0;
  }
  if (arch == "gpt-oss") {  // its window, on every other block from the first (the parser's default, llama.cpp's pattern of 2)
    c["sliding_window"] = required(file, "gpt-oss.attention.sliding_window");
  }
  if (arch == "olmo2") {  // OLMo 3, as llama.cpp reads it: the window on 3 of every 4 blocks (the parser's default)
    if (auto window = file.integer("olmo2.attention.sliding_window"); window && *window > 0) c["sliding_window"] = *window;
  }
  if (auto clamp = file.number(arch + ".attention.clamp_kqv")) c["clip_qkv"] = *clamp;  // refused by the parser
  if (arch == "phi3") {
    if (auto window = file.integer("phi3.attention.sliding_window"); window && *window > 0) c["sliding_window"] = *window;
  }
  if (arch == "gemma2") {  // as llama.cpp reads them: 4096, 50 and 30 where the file has no key
    c["sliding_window"] = file.integer("gemma2.attention.sliding_window").value_or(4096);
    c["attn_logit_softcapping"] = file.number("gemma2.attn_logit_softcapping").value_or(50.0);
    c["final_logit_softcapping"] = file.number("gemma2.final_logit_softcapping").value_or(30.0);
  }
  if (arch == "gemma3") {  // as llama.cpp: a window on 5 blocks of 6, which rotate with a base of 10000
    c["sliding_window"] = required(file, "gemma3.attention.sliding_window");
    c["sliding_window_pattern"] = 6;
    c["rope_local_base_freq"] = 10000.0;
  }
  c["hidden_size"] = required(file, arch + ".embedding_length");
  c["intermediate_size"] = (arch == "qwen3moe" || arch == "qwen2moe") && !file.integer(arch + ".feed_forward_length")
                              ? required(file, arch + ".expert_feed_forward_length")
                              : required(file, arch + ".feed_forward_length");
  c["num_hidden_layers"] = required(file, arch + ".block_count");
  c["num_attention_heads"] = required(file, arch + ".attention.head_count");
  if (auto kv = file.integer(arch + ".attention.head_count_kv")) c["num_key_value_heads"] = *kv;
  if (auto k = file.integer(arch + ".attention.key_length")) c["head_dim"] = *k;
  if (auto v = file.integer(arch + ".attention.value_length"); v && (!c.contains("head_dim") || *v != c["head_dim"].get<std::int64_t>())) {
    fail(file.where(), ": ", arch, ".attention.value_length ", *v, " differs from the key length (heads of values as wide as keys are supported)");
  }
  c["max_position_embeddings"] = required(file, arch + ".context_length");
  if (auto eps = file.number(arch + ".attention.layer_norm_rms_epsilon")) c["rms_norm_eps"] = *eps;
  if (auto theta = file.number(arch + ".rope.freq_base")) c["rope_theta"] = *theta;
  if (auto scaling = file.string(arch + ".rope.scaling.type"); scaling && *scaling == "linear") {
    const auto factor = file.number(arch + ".rope.scaling.factor");
    if (!factor) fail(file.where(), ": linear RoPE scaling without ", arch, ".rope.scaling.factor");
    c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", *factor}};
  } else if (scaling && *scaling == "yarn") {  // as a Hugging Face config's (model_config.h)
    const std::string key = arch + ".rope.scaling.";
    const auto factor = file.number(key + "factor");
    if (!factor) fail(file.where(), ": YaRN RoPE scaling without ", key, "factor");
    c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", *factor}};
    if (auto original = file.integer(key + "original_context_length")) c["rope_scaling"]["original_max_position_embeddings"] = *original;
    if (auto beta = file.number(key + "yarn_beta_fast")) c["rope_scaling"]["beta_fast"] = *beta;
    if (auto beta = file.number(key + "yarn_beta_slow")) c["rope_scaling"]["beta_slow"] = *beta;
    if (arch == "gpt-oss") c["rope_scaling"]["truncate"] = false;  // as GPT-OSS was trained (its config.json's)
    // llama.cpp's own knobs, which Hugging Face's YaRN has no equal of (DeepSeek's log multiplier).
    for (const char* knob : {"yarn_log_multiplier", "yarn_ext_factor", "yarn_attn_factor"}) {
      if (auto v = file.number(key + knob); v && *v != (std::string(knob) == "yarn_log_multiplier" ? 0.0 : 1.0)) {
        fail(file.where(), ": ", key, knob, " ", *v, " is not supported (YaRN is read as Hugging Face configs give it)");
      }
    }
  } else if (scaling && *scaling != "none") {
    fail(file.where(), ": RoPE scaling '", *scaling, "' in GGUF files is not supported (supported: linear, yarn)");
  }
  if (arch == "granitemoe") {  // Granite-MoE-Shared, as llama.cpp's converter writes it: the shared MLP's width
    if (auto shared = file.integer("granitemoe.expert_shared_feed_forward_length"); shared && *shared > 0) {
      c["shared_intermediate_size"] = *shared;
    }
  }
  if (arch == "granite" || arch == "granitemoe") {  // its multipliers, under llama.cpp's names
    for (const auto& [key, field] : {std::pair{".embedding_scale", "embedding_multiplier"},
                                     std::pair{".residual_scale", "residual_multiplier"},
                                     std::pair{".attention.scale", "attention_multiplier"},
                                     std::pair{".logit_scale", "logits_scaling"}}) {
      if (auto v = file.number(arch + key)) c[field] = *v;
    }
  }
  if (experts > 0 && arch != "llama" && arch != "qwen3moe" && arch != "qwen2moe" && arch != "olmoe" && arch != "granitemoe" &&
      arch != "gpt-oss") {
    fail(file.where(), ": a mixture of experts in a ", arch, " file is not supported (llama, qwen2moe, qwen3moe, olmoe, granitemoe and gpt-oss files' are)");
  }
  if ((arch == "qwen3moe" || arch == "qwen2moe" || arch == "olmoe" || arch == "granitemoe" || arch == "gpt-oss") && experts <= 0) {
    fail(file.where(), ": a ", arch, " file without ", arch, ".expert_count");
  }
  // As llama.cpp runs them: a softmax over the experts, the picked ones' weights renormalised
  // (Qwen2-MoE's and OLMoE's not; OLMoE's experts feed_forward_length wide), and Qwen2-MoE's shared
  // expert of expert_shared_feed_forward_length.
  if (arch == "olmoe" || arch == "qwen2moe") c["norm_topk_prob"] = false;
  if (arch == "qwen2moe") {
    c["moe_intermediate_size"] = required(file, arch + ".expert_feed_forward_length");
    c["shared_expert_intermediate_size"] = required(file, arch + ".expert_shared_feed_forward_length");
    if (auto shared = file.integer(arch + ".expert_shared_count"); shared && *shared != 1) {
      fail(file.where(), ": ", arch, ".expert_shared_count ", *shared, " is not supported (Qwen2-MoE has one shared expert)");
    }
  }
  if (experts > 0) {
    c[arch == "llama" || arch == "granitemoe" || arch == "gpt-oss" ? "num_local_experts" : "num_experts"] = experts;
    if (arch == "gpt-oss") c["intermediate_size"] = required(file, arch + ".expert_feed_forward_length");
    c["num_experts_per_tok"] = required(file, arch + ".expert_used_count");
    if (arch == "qwen3moe") {
      c["moe_intermediate_size"] = required(file, arch + ".expert_feed_forward_length");
      c["norm_topk_prob"] = true;
    }
    if (auto shared = file.integer(arch + ".expert_shared_count"); shared && *shared > 0 && arch != "qwen2moe") {
      fail(file.where(), ": shared experts (", arch, ".expert_shared_count ", *shared, ") are not supported");
    }
    if (auto gating = file.integer(arch + ".expert_gating_func"); gating && *gating != 1) {
      fail(file.where(), ": ", arch, ".expert_gating_func ", *gating, " is not supported (1, a softmax, is)");
    }
    if (auto scale = file.number(arch + ".expert_weights_scale"); scale && *scale != 1.0) {
      fail(file.where(), ": ", arch, ".expert_weights_scale ", *scale, " is not supported");
    }
  }
  const auto* tokens = file.array("tokenizer.ggml.tokens");
  const auto embd = file.tensors().find("token_embd.weight");
  if (embd == file.tensors().end() || embd->second.dims.size() != 2) fail(file.where(), ": no token_embd.weight matrix");
  c["vocab_size"] = embd->second.dims[1];
  if (tokens && static_cast<std::int64_t>(tokens->size()) != embd->second.dims[1]) {
    fail(file.where(), ": the vocabulary has ", tokens->size(), " tokens but token_embd.weight ", embd->second.dims[1], " rows");
  }
  // GLM-4's vocabularies add no BOS, whatever the file says: its chat template writes [gMASK]<sop>
  // itself (llama.cpp drops the BOS of these pre-tokenizers).
  const std::string pre = file.string("tokenizer.ggml.pre").value_or("");
  const bool no_bos = pre == "glm4" || pre == "chatglm-bpe";
  if (auto bos = file.integer("tokenizer.ggml.bos_token_id"); bos && !no_bos && file.boolean("tokenizer.ggml.add_bos_token").value_or(true)) {
    c["bos_token_id"] = *bos;
  }
  // Generation ends at the end of a text and, as llama.cpp ends it, at the end of a turn or of a
  // message where the file names those tokens (Llama 3's <|eot_id|>, <|eom_id|>).
  json eos = json::array();
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    if (auto id = file.integer(key); id && std::find(eos.begin(), eos.end(), json(*id)) == eos.end()) eos.push_back(*id);
  }
  // GPT-OSS's turn also ends at a call (<|call|>), as its generation_config.json says.
  if (arch == "gpt-oss" && tokens) {
    for (std::size_t id = 0; id < tokens->size(); ++id) {
      const auto* text = std::get_if<std::string>(&(*tokens)[id]);
      if (text && *text == "<|call|>" && std::find(eos.begin(), eos.end(), json(id)) == eos.end()) eos.push_back(id);
    }
  }
  if (!eos.empty()) c["eos_token_id"] = eos;
  c["tie_word_embeddings"] = file.tensors().count("output.weight") == 0;
  if (auto rope = file.integer(arch + ".rope.dimension_count")) {
    const std::int64_t head_dim = c.contains("head_dim") ? c["head_dim"].get<std::int64_t>()
                                                          : c["hidden_size"].get<std::int64_t>() / c["num_attention_heads"].get<std::int64_t>();
    // Rotary embeddings on part of each head (Phi-4-mini's 96 of 128).
    // glm4's always: its config's default is half.
    if (*rope != head_dim || arch == "glm4") c["partial_rotary_factor"] = static_cast<double>(*rope) / static_cast<double>(head_dim);
  }
  // Gemma 2's and 3's query_pre_attn_scalar is not in the file: llama.cpp takes hidden / heads for
  // the 27B models (46 and 62 blocks), as gemma_pytorch does, and head_dim for the others.
  if ((arch == "gemma2" && c["num_hidden_layers"] == 46) || (arch == "gemma3" && c["num_hidden_layers"] == 62)) {
    c["query_pre_attn_scalar"] = c["hidden_size"].get<std::int64_t>() / c["num_attention_heads"].get<std::int64_t>();
  } else if (arch == "gemma2" || arch == "gemma3") {
    c["query_pre_attn_scalar"] = c.contains("head_dim") ? c["head_dim"].get<std::int64_t>()
                                                        : c["hidden_size"].get<std::int64_t>() / c["num_attention_heads"].get<std::int64_t>();
  }
  ModelConfig config = parse_model_config(c.dump(), file.where());
  if (auto factors = rope_frequency_factors(file, config.rope_dims(), kRopeFactors)) {
    config.rope_scaling.kind = RopeScaling::Kind::kFactors;
    config.rope_scaling.freq_factors = std::move(*factors);
  }
  if (arch == "phi3") apply_longrope(file, config);
  // llama.cpp's converter stores Gemma's norms as the 1 + weight they scale by.
  if (arch == "gemma" || arch == "gemma2" || arch == "gemma3") config.norm_weight_plus_one = false;
  return config;
}

namespace {

// One stacked experts tensor of a block ([experts, rows, cols], the experts' matrices one after
// another; with `bias`, [experts, rows], their biases) as each expert's tensor: slices of the file
// where stored as F32, F16 or BF16, otherwise each expert's slice dequantized when first asked for.
void add_stacked_experts(const GgufFile& file, const std::shared_ptr<const GgufFile>& shared, const std::string& name,
                         const ExpertNames& names, const std::string& projection, bool bias, const ModelConfig& config,
                         std::map<std::string, TensorRef>& tensors, std::map<std::string, Checkpoint::Conversion>& conversions) {
  const GgufTensor& t = file.tensors().at(name);
  if (t.dims.size() != (bias ? 2u : 3u) || t.dims.back() != config.num_experts) {
    fail(file.where(), ": tensor ", name, " must stack ", config.num_experts, " experts' ", bias ? "biases (2" : "matrices (3", " dimensions)");
  }
  const auto experts = static_cast<std::size_t>(config.num_experts);
  if (t.bytes % experts != 0) fail(file.where(), ": tensor ", name, " does not split into ", experts, " experts");
  const std::size_t slice = t.bytes / experts;
  const std::string& hf = projection == "gate" ? names.gate : projection == "up" ? names.up : names.down;
  const auto type = static_cast<GgmlType>(t.type);
  for (std::size_t e = 0; e < experts; ++e) {
    TensorRef ref;
    ref.name = names.prefix + "experts." + std::to_string(e) + "." + hf + (bias ? ".bias" : ".weight");
    ref.shape = bias ? std::vector<std::int64_t>{t.dims[0]} : std::vector<std::int64_t>{t.dims[1], t.dims[0]};
    if (type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16) {
      ref.dtype = type == GgmlType::kF32 ? DType::kF32 : type == GgmlType::kF16 ? DType::kF16 : DType::kBF16;
      ref.data = t.data + e * slice;
      ref.bytes = slice;
      ref.storage = file.file();
      ref.mapped = true;
    } else {
      ref.dtype = DType::kF32;
      const std::int64_t count = bias ? t.dims[0] : t.dims[0] * t.dims[1];
      ref.bytes = static_cast<std::size_t>(count) * sizeof(float);
      conversions[ref.name] = [shared, name, e, slice, count](TensorRef& out) {
        const GgufTensor& t = shared->tensors().at(name);
        auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(count));
        dequantize_ggml(t.type, t.data + e * slice, count, values->data());
        out.data = reinterpret_cast<const std::byte*>(values->data());
        out.storage = values;
      };
    }
    tensors.emplace(ref.name, std::move(ref));
  }
}

}  // namespace

Checkpoint gguf_checkpoint(const GgufFile& file) {
  const ModelConfig config = gguf_model_config(file);
  // llama.cpp's converter interleaves a llama (or granite) model's query and key rows for its rotation; a
  // qwen2, qwen3, phi3 or gemma (1 to 3) model's it leaves as they are (llama.cpp rotates those halves
  // apart, as Hugging Face); command-r's, cohere2's and glm4's are interleaved in Hugging Face's files
  // too, and rotate so (ModelConfig::rope_adjacent_pairs).
  const std::string arch = architecture(file);
  const bool interleaved = arch == "llama" || arch == "granite" || arch == "granitemoe" || arch == "smollm3";
  auto shared = std::make_shared<const GgufFile>(file);
  std::map<std::string, TensorRef> tensors;
  std::map<std::string, Checkpoint::Conversion> conversions;
  for (const auto& [name, t] : file.tensors()) {
    std::string layer, part;
    bool bias = false;
    if (config.mixture_of_experts() && block_part(name, layer, part) && !stacked_experts(part, &bias).empty() &&
        (!bias || arch == "gpt-oss")) {
      add_stacked_experts(file, shared, name, expert_names(arch, layer), stacked_experts(part), bias, config, tensors, conversions);
      continue;
    }
    const std::string hf = hf_name(name, arch, config.mixture_of_experts());
    if (name == kRopeFactors || (arch == "phi3" && (name == kRopeFactorsShort || name == kRopeFactorsLong))) {
      continue;  // read into the configuration
    }
    if (hf.empty()) {
      // A tensor of a variant sepal does not run (biases, experts, ...): left out, the model
      // would compute something else.
      fail(file.where(), ": tensor ", name, " is not one sepal reads (a variant of ", arch, " it does not support)");
    }
    TensorRef ref;
    ref.name = hf;
    ref.shape.assign(t.dims.rbegin(), t.dims.rend());  // ggml lists the contiguous dimension first
    if (hf.ends_with("shared_expert_gate.weight") && ref.shape.size() == 1) ref.shape.insert(ref.shape.begin(), 1);  // [1, hidden]
    const bool query = interleaved && hf.find("q_proj") != std::string::npos,
               key = interleaved && hf.find("k_proj") != std::string::npos;
    const auto type = static_cast<GgmlType>(t.type);
    if (!query && !key && (type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16)) {
      ref.dtype = type == GgmlType::kF32 ? DType::kF32 : type == GgmlType::kF16 ? DType::kF16 : DType::kBF16;
      ref.data = t.data;
      ref.bytes = t.bytes;
      ref.storage = file.file();
      ref.mapped = true;
    } else {
      std::int64_t heads = 0;
      if (query || key) {
        heads = query ? config.num_heads : config.num_kv_heads;
        if (ref.shape.size() != 2 || ref.shape[0] != heads * config.head_dim) {
          fail(file.where(), ": tensor ", name, " has ", ref.shape[0], " rows, not ", heads * config.head_dim);
        }
      }
      ref.dtype = DType::kF32;
      ref.bytes = static_cast<std::size_t>(t.elements()) * sizeof(float);
      conversions[hf] = [shared, name = name, heads](TensorRef& out) {
        const GgufTensor& t = shared->tensors().at(name);
        auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(t.elements()));
        dequantize_ggml(t.type, t.data, t.elements(), values->data());
        if (heads > 0) *values = unpermute_rows(*values, heads, out.shape[0], out.shape[1]);
        out.data = reinterpret_cast<const std::byte*>(values->data());
        out.storage = values;
      };
    }
    tensors.emplace(hf, std::move(ref));
  }
  return Checkpoint::from_tensors(file.file()->path(), std::move(tensors), std::move(conversions));
}

}  // namespace sepal

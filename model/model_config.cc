#include "model/model_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kernels/error.h"
#include "model/fp8.h"
#include "model/packed_integers.h"
#include "model/gguf_model.h"

namespace sepal {
namespace {

using nlohmann::json;

const std::vector<std::string> kSupportedArchitectures = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                                          "Qwen3ForCausalLM", "Phi3ForCausalLM", "GemmaForCausalLM",
                                                          "Gemma2ForCausalLM", "Gemma3ForCausalLM", "BloomForCausalLM",
                                                          "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM",
                                                          "GraniteForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM",
                                                          "OlmoeForCausalLM", "SmolLM3ForCausalLM", "GraniteMoeForCausalLM",
                                                          "GraniteMoeSharedForCausalLM", "GptOssForCausalLM",
                                                          "CohereForCausalLM", "Cohere2ForCausalLM", "GlmForCausalLM",
                                                          "Glm4ForCausalLM"};

std::int64_t positive_int(const json& config, const std::string& key, const std::string& where,
                          std::int64_t fallback = -1) {
  if (!config.contains(key) || config[key].is_null()) {
    if (fallback > 0) return fallback;
    fail(where, ": missing '", key, "'");
  }
  const json& v = config[key];
  if (!v.is_number_integer()) fail(where, ": '", key, "' must be an integer, got ", v.dump());
  // Far above any real model, far below what overflows a size computed from these.
  constexpr std::int64_t kLimit = std::int64_t{1} << 24;
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(kLimit)) {
    fail(where, ": '", key, "' is ", v.dump(), ", more than the limit of ", kLimit);
  }
  const auto value = v.get<std::int64_t>();
  if (value <= 0) fail(where, ": '", key, "' must be positive, got ", value);
  if (value > kLimit) fail(where, ": '", key, "' is ", value, ", more than the limit of ", kLimit);
  return value;
}

std::int64_t non_negative_int(const json& config, const std::string& key, const std::string& where) {
  const json& v = config[key];
  constexpr std::int64_t kLimit = std::int64_t{1} << 24;
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<std::int64_t>() < 0) ||
      (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(kLimit))) {
    fail(where, ": '", key, "' must be an integer from 0 to ", kLimit, ", got ", v.dump());
  }
  return v.get<std::int64_t>();
}

double positive_number(const json& config, const std::string& key, const std::string& where,
                       double fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  const json& v = config[key];
  if (!v.is_number()) fail(where, ": '", key, "' must be a number, got ", v.dump());
  const double value = v.get<double>();
  if (!(value > 0.0) || !std::isfinite(value)) fail(where, ": '", key, "' must be positive, got ", value);
  // Far outside any model's, and inside float's range: several of these (and their reciprocals)
  // become floats.
  if (value < 1e-30 || value > 1e30) fail(where, ": '", key, "' is ", value, ", outside the limits of 1e-30 to 1e30");
  return value;
}

// LongRoPE (Phi-3's long-context variants, Phi-3.5, Phi-4-mini): each inverse frequency divided
// by its short factor, or its long factor in a session longer than
// original_max_position_embeddings (ModelConfig::long_rope_for), and the rotation scaled by the
// attention factor.
RopeScaling parse_longrope(const json& config, const json& s, const std::string& where, std::int64_t head_dim,
                           std::int64_t max_positions) {
  RopeScaling scaling;
  const auto factors = [&](const char* key) {
    if (!s.contains(key) || !s[key].is_array() || static_cast<std::int64_t>(s[key].size()) != head_dim / 2) {
      fail(where, ": rope_scaling '", key, "' must list ", head_dim / 2, " factors (half of the ", head_dim, " rotated dimensions)");
    }
    std::vector<double> out;
    for (const json& f : s[key]) {
      if (!f.is_number() || !(f.get<double>() > 0.0) || !std::isfinite(f.get<double>())) {
        fail(where, ": rope_scaling '", key, "' holds ", f.dump(), " (factors must be positive numbers)");
      }
      out.push_back(f.get<double>());
    }
    return out;
  };
  scaling.kind = RopeScaling::Kind::kFactors;
  scaling.freq_factors = factors("short_factor");
  scaling.long_freq_factors = factors("long_factor");
  double original = 0, factor = 0;
  if (config.contains("original_max_position_embeddings") && !config["original_max_position_embeddings"].is_null()) {
    original = static_cast<double>(positive_int(config, "original_max_position_embeddings", where));
    factor = static_cast<double>(max_positions) / original;
  } else {
    original = static_cast<double>(max_positions);
    factor = positive_number(s, "factor", where + " rope_scaling", 1.0);
  }
  scaling.original_max_position_embeddings = original;
  if (s.contains("attention_factor") && !s["attention_factor"].is_null()) {
    scaling.attention_factor = positive_number(s, "attention_factor", where + " rope_scaling", 1.0);
  } else if (factor > 1.0) {
    if (original < 2) fail(where, ": LongRoPE needs an original context of at least 2 positions, not ", original);
    scaling.attention_factor = std::sqrt(1.0 + std::log(factor) / std::log(original));
  }
  return scaling;
}

// YaRN as Hugging Face reads it: `factor` (required), the original context from the section or
// else max_position_embeddings, beta_fast and beta_slow (32 and 1), `truncate` (true), and the
// attention factor given, or 0.1 ln(factor) + 1 (DeepSeek's: the ratio of that with `mscale` and
// with `mscale_all_dim`).
RopeScaling parse_yarn(const json& s, const std::string& where, std::int64_t max_positions) {
  RopeScaling scaling;
  scaling.kind = RopeScaling::Kind::kYarn;
  const std::string at = where + " rope_scaling";
  scaling.factor = positive_number(s, "factor", at, 0.0);
  if (scaling.factor <= 0.0) fail(where, ": rope_scaling needs 'factor'");
  scaling.original_max_position_embeddings =
      positive_number(s, "original_max_position_embeddings", at, static_cast<double>(max_positions));
  const auto optional = [&](const char* key, double fallback) {
    return s.contains(key) && !s[key].is_null() ? positive_number(s, key, at, fallback) : fallback;
  };
  scaling.beta_fast = optional("beta_fast", 32.0);
  scaling.beta_slow = optional("beta_slow", 1.0);
  if (scaling.beta_fast <= scaling.beta_slow) fail(where, ": rope_scaling beta_fast must exceed beta_slow");
  if (s.contains("truncate") && !s["truncate"].is_null()) {
    if (!s["truncate"].is_boolean()) fail(where, ": rope_scaling 'truncate' must be true or false");
    scaling.truncate = s["truncate"].get<bool>();
  }
  const auto mscale = [&](double m) { return scaling.factor <= 1.0 ? 1.0 : 0.1 * m * std::log(scaling.factor) + 1.0; };
  if (s.contains("attention_factor") && !s["attention_factor"].is_null()) {
    scaling.attention_factor = positive_number(s, "attention_factor", at, 1.0);
  } else {
    const double m = optional("mscale", 0.0), all = optional("mscale_all_dim", 0.0);
    scaling.attention_factor = m > 0.0 && all > 0.0 ? mscale(m) / mscale(all) : mscale(1.0);
  }
  return scaling;
}

RopeScaling parse_rope_scaling(const json& config, const std::string& where, std::int64_t head_dim,
                               std::int64_t max_positions) {
  RopeScaling scaling;
  if (!config.contains("rope_scaling") || config["rope_scaling"].is_null()) return scaling;
  const json& s = config["rope_scaling"];
  if (!s.is_object()) fail(where, ": 'rope_scaling' must be an object or null");
  std::string type;
  if (s.contains("rope_type") && s["rope_type"].is_string()) type = s["rope_type"];
  else if (s.contains("type") && s["type"].is_string()) type = s["type"];
  if (type == "default") return scaling;
  if (type == "longrope" || type == "su") return parse_longrope(config, s, where, head_dim, max_positions);
  if (type == "linear") {  // positions interpolated: every inverse frequency divided by the factor
    scaling.kind = RopeScaling::Kind::kLinear;
    scaling.factor = positive_number(s, "factor", where + " rope_scaling", 0.0);
    if (scaling.factor <= 0.0) fail(where, ": rope_scaling needs 'factor'");
    return scaling;
  }
  if (type == "yarn") return parse_yarn(s, where, max_positions);
  if (type != "llama3") {
    fail(where, ": rope_scaling type '", type, "' is not supported (supported: linear, llama3, longrope, yarn, default)");
  }
  scaling.kind = RopeScaling::Kind::kLlama3;
  scaling.factor = positive_number(s, "factor", where + " rope_scaling", 0.0);
  if (scaling.factor <= 0.0) fail(where, ": rope_scaling needs 'factor'");
  scaling.low_freq_factor = positive_number(s, "low_freq_factor", where + " rope_scaling", 1.0);
  scaling.high_freq_factor = positive_number(s, "high_freq_factor", where + " rope_scaling", 4.0);
  scaling.original_max_position_embeddings =
      positive_number(s, "original_max_position_embeddings", where + " rope_scaling", 8192.0);
  if (scaling.high_freq_factor <= scaling.low_freq_factor) {
    fail(where, ": rope_scaling high_freq_factor must exceed low_freq_factor");
  }
  return scaling;
}

std::vector<std::int32_t> token_ids(const json& config, const std::string& key,
                                    const std::string& where) {
  std::vector<std::int32_t> ids;
  if (!config.contains(key) || config[key].is_null()) return ids;
  const json& v = config[key];
  auto add = [&](const json& x) {
    // Checked before narrowing: 2^32 + 2 must not become 2.
    const bool in_range = x.is_number_unsigned() ? x.get<std::uint64_t>() <= INT32_MAX
                          : x.is_number_integer() ? x.get<std::int64_t>() >= 0 && x.get<std::int64_t>() <= INT32_MAX
                                                  : false;
    if (!in_range) fail(where, ": '", key, "' must be a token id (0 to 2^31 - 1) or a list of them");
    ids.push_back(static_cast<std::int32_t>(x.get<std::int64_t>()));
  };
  if (v.is_array()) {
    for (const auto& x : v) add(x);
  } else {
    add(v);
  }
  return ids;
}

// Token ids shared by both families: BOS (one) and EOS (one or several), inside the vocabulary.
void parse_special_tokens(const json& config, ModelConfig& c, const std::string& where);

// BLOOM's config.json: hidden_size (or n_embed), n_layer, n_head, layer_norm_epsilon; no
// positions limit of its own (ALiBi), so seq_length when given, else 2048.
ModelConfig parse_bloom_config(const json& config, ModelConfig c, const std::string& where) {
  c.family = ModelFamily::kBloom;
  if (config.value("apply_residual_connection_post_layernorm", false)) {
    fail(where, ": apply_residual_connection_post_layernorm=true is not supported");
  }
  c.hidden_size = positive_int(config, config.contains("n_embed") && !config.contains("hidden_size") ? "n_embed" : "hidden_size", where);
  c.num_layers = positive_int(config, config.contains("n_layer") ? "n_layer" : "num_hidden_layers", where);
  c.num_heads = positive_int(config, config.contains("n_head") ? "n_head" : "num_attention_heads", where);
  if (c.hidden_size % c.num_heads != 0) {
    fail(where, ": hidden_size ", c.hidden_size, " is not a multiple of n_head ", c.num_heads);
  }
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = 4 * c.hidden_size;
  c.vocab_size = positive_int(config, "vocab_size", where);
  c.max_position_embeddings = positive_int(config, "seq_length", where, 2048);
  c.rms_norm_eps = positive_number(config, "layer_norm_epsilon", where, 1e-5);
  c.tie_word_embeddings = config.value("tie_word_embeddings", true);
  if (!c.tie_word_embeddings) fail(where, ": BLOOM with an untied head is not supported");
  parse_special_tokens(config, c, where);
  return c;
}

// Gemma 2's additions to Gemma (Gemma 3's too): soft-capping of attention scores and of the logits
// (null: none), norms on the attention's and the MLP's outputs, a window on some blocks. The scale
// of its scores (query_pre_attn_scalar) and the blocks' windows need head_dim and
// num_hidden_layers, and are set once those are read.
void parse_gemma2(const json& config, ModelConfig& c, const std::string& where) {
  const auto cap = [&](const char* key) {
    if (!config.contains(key) || config[key].is_null()) return 0.0f;
    return static_cast<float>(positive_number(config, key, where, 0.0));
  };
  c.attention_softcap = cap("attn_logit_softcapping");
  c.final_logit_softcap = cap("final_logit_softcapping");
  c.output_norms = true;
  if (config.contains("sliding_window") && !config["sliding_window"].is_null()) {
    c.sliding_window = positive_int(config, "sliding_window", where);
  }
}

ModelConfig parse_model_config(const json& config, const std::string& where);

// compressed-tensors' quantization_config as sepal reads it: float-quantized weights, each group's
// 8-bit floats, symmetric, a scale a row or a tensor, stored (not dynamic); activations quantized
// on the fly or not at all (sepal computes them in its own precision).
void check_compressed_fp8(const json& q, const std::string& where) {
  const auto named = [](const json& object, const char* key) {
    return object.is_object() && object.contains(key) ? object[key] : json();
  };
  const json format = named(q, "format");
  if (format != "float-quantized") {
    fail(where, ": compressed-tensors format ", format.dump(), " is not supported (float-quantized FP8 is)");
  }
  const json groups = named(q, "config_groups");
  if (!groups.is_object() || groups.empty()) fail(where, ": compressed-tensors needs config_groups");
  for (const auto& [group, g] : groups.items()) {
    const json w = named(g, "weights"), a = named(g, "input_activations");
    const std::string what = where + ": compressed-tensors group '" + group + "'";
    if (named(w, "type") != "float" || named(w, "num_bits") != 8) {
      fail(what, " weights must be 8-bit floats, not ", w.dump());
    }
    if (named(w, "symmetric") == false || named(w, "dynamic") == true ||
        (named(w, "strategy") != "channel" && named(w, "strategy") != "tensor")) {
      fail(what, " weights must be symmetric and stored with a scale a row (channel) or a tensor, not ", w.dump());
    }
    if (!a.is_null() && named(a, "dynamic") != true) {
      fail(what, ": static input activation scales are not supported (dynamic ones are): ", a.dump());
    }
  }
}

// A quantized checkpoint's quantization_config: sepal reads GPT-OSS's MXFP4 experts
// (model/mxfp4.h), FP8 weights (model/fp8.h: transformers' block-wise, compressed-tensors' per
// row or tensor; activations quantized on the fly, which sepal computes in its own precision
// instead), packed integer weights (model/packed_integers.h: GPTQ, AWQ, compressed-tensors'
// pack-quantized), bitsandbytes' 4-bit NF4 and FP4 (model/bnb4.h) and LLM.int8() rows with their
// SCB scales (bitsandbytes' 8-bit, and `sepal quantize`'s); others (HQQ, EXL2, ...) are refused
// by name before a tensor is read.
void check_quantization(const json& config, const ModelConfig& c, const std::string& where) {
  if (!config.contains("quantization_config") || config["quantization_config"].is_null()) return;
  const json& q = config["quantization_config"];
  const std::string method = q.is_object() && q.contains("quant_method") && q["quant_method"].is_string() ? q["quant_method"].get<std::string>() : "";
  if (method == "mxfp4" && c.architecture == "GptOssForCausalLM") return;
  if (method == "bitsandbytes" && q.value("load_in_8bit", false) && !q.value("load_in_4bit", false)) return;
  if (method == "bitsandbytes" && q.value("load_in_4bit", false)) {  // model/bnb4.h
    const json type = q.value("bnb_4bit_quant_type", json("fp4"));
    if (type != "nf4" && type != "fp4") fail(where, ": bitsandbytes bnb_4bit_quant_type ", type.dump(), " is not supported (nf4 and fp4 are)");
    return;
  }
  if (method == "fp8") {
    const auto text = [&](const char* key, const char* fallback) {
      return q.contains(key) && q[key].is_string() ? q[key].get<std::string>() : q.contains(key) ? q[key].dump() : fallback;
    };
    if (text("fmt", "e4m3") != "e4m3") fail(where, ": fp8 quantization_config fmt '", text("fmt", ""), "' is not supported (e4m3 is)");
    if (text("activation_scheme", "dynamic") != "dynamic") {
      fail(where, ": fp8 quantization_config activation_scheme '", text("activation_scheme", ""),
           "' is not supported (dynamic is: static input scales are not read)");
    }
    (void)fp8_weight_block_size(q, where);
    return;
  }
  if (packed_integers(q, where)) return;  // GPTQ, AWQ, compressed-tensors' pack-quantized
  if (method == "compressed-tensors") {
    check_compressed_fp8(q, where);
    return;
  }
  fail(where, ": quantization_config ", method.empty() ? q.dump() : "'" + method + "'",
       " is not supported (supported: GPT-OSS's mxfp4, fp8 with E4M3 blocks, GPTQ, AWQ, compressed-tensors' FP8 and "
       "pack-quantized integers, bitsandbytes' 8-bit and 4-bit)");
}

// Gemma 3's larger checkpoints (4B, 12B, 27B) are multimodal: the language model's settings are
// in text_config, where the released configs name few of them and transformers' defaults
// (Gemma3TextConfig) fill the rest. sepal serves the language model alone (its tensors:
// Checkpoint::open); the special tokens at the top level are the chat model's.
ModelConfig parse_gemma3_multimodal(const json& config, const std::string& where) {
  if (!config.contains("text_config") || !config["text_config"].is_object()) {
    fail(where, ": Gemma3ForConditionalGeneration needs a 'text_config' object (its language model's settings)");
  }
  // Those Gemma3ForCausalLM's parsing requires; it defaults the rest as transformers does.
  json text = {{"vocab_size", 262208},      {"hidden_size", 2304},          {"intermediate_size", 9216},
               {"num_hidden_layers", 26},   {"num_attention_heads", 8},     {"num_key_value_heads", 4},
               {"max_position_embeddings", 131072}, {"sliding_window", 4096}, {"bos_token_id", 2},
               {"eos_token_id", 1}};
  text.update(config["text_config"]);
  for (const char* key : {"bos_token_id", "eos_token_id"}) {
    if (config.contains(key)) text[key] = config[key];
  }
  text["architectures"] = json::array({"Gemma3ForCausalLM"});
  ModelConfig c = parse_model_config(text, where + " (text_config)");
  c.architecture = "Gemma3ForConditionalGeneration";
  return c;
}

// Each block's window (ModelConfig::layer_windows) from c.sliding_window: the blocks layer_types
// lists as "sliding_attention", or where it is absent those `sliding` says.
template <typename Sliding>
void set_layer_windows(const json& config, ModelConfig& c, const std::string& where, Sliding&& sliding) {
  c.layer_windows.assign(static_cast<std::size_t>(c.num_layers), 0);
  const bool listed = config.contains("layer_types") && !config["layer_types"].is_null();
  if (listed && (!config["layer_types"].is_array() || config["layer_types"].size() != static_cast<std::size_t>(c.num_layers))) {
    fail(where, ": 'layer_types' must list one type per layer (", c.num_layers, ")");
  }
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    bool slides = sliding(l);
    if (listed) {
      const json& type = config["layer_types"][static_cast<std::size_t>(l)];
      if (type != "sliding_attention" && type != "full_attention") {
        fail(where, ": layer_types[", l, "] is ", type.dump(), " (sliding_attention or full_attention)");
      }
      slides = type == "sliding_attention";
    }
    c.layer_windows[static_cast<std::size_t>(l)] = slides ? c.sliding_window : 0;
  }
  c.sliding_window = 0;
}

// SmolLM3's blocks without RoPE: no_rope_layers lists 1 for a block that rotates and 0 for one
// that does not (at least one entry per block), or else every no_rope_layer_interval-th block (4)
// does not, as transformers builds them.
void parse_no_rope_layers(const json& config, ModelConfig& c, const std::string& where) {
  c.rope_layers.assign(static_cast<std::size_t>(c.num_layers), true);
  if (config.contains("no_rope_layers") && !config["no_rope_layers"].is_null()) {
    const json& list = config["no_rope_layers"];
    if (!list.is_array() || list.size() < static_cast<std::size_t>(c.num_layers)) {
      fail(where, ": 'no_rope_layers' must list 1 (RoPE) or 0 (none) for each of the ", c.num_layers, " layers");
    }
    for (std::size_t l = 0; l < c.rope_layers.size(); ++l) {
      if (list[l] != 0 && list[l] != 1) fail(where, ": no_rope_layers[", l, "] is ", list[l].dump(), " (1: RoPE, 0: none)");
      c.rope_layers[l] = list[l] == 1;
    }
    return;
  }
  const std::int64_t interval = positive_int(config, "no_rope_layer_interval", where, 4);
  for (std::int64_t l = 0; l < c.num_layers; ++l) c.rope_layers[static_cast<std::size_t>(l)] = (l + 1) % interval != 0;
}

// Qwen2's and Qwen3's use_sliding_window (none of their released models sets it): the window on
// the blocks from max_window_layers on (28 by default), or on those layer_types lists, as
// transformers builds them; SmolLM3's: on its blocks without RoPE, or those layer_types lists.
void parse_qwen_windows(const json& config, ModelConfig& c, const std::string& where) {
  const bool smollm3 = c.architecture == "SmolLM3ForCausalLM";
  if (c.architecture != "Qwen2ForCausalLM" && c.architecture != "Qwen3ForCausalLM" && c.architecture != "Qwen2MoeForCausalLM" &&
      c.architecture != "Qwen3MoeForCausalLM" && !smollm3) {
    fail(where, ": use_sliding_window is read for Qwen2, Qwen3, their mixtures of experts and SmolLM3, not ", c.architecture);
  }
  c.sliding_window = positive_int(config, "sliding_window", where);
  if (smollm3) {
    set_layer_windows(config, c, where, [&](std::int64_t l) { return !c.rotates(l); });
    return;
  }
  const std::int64_t from = config.contains("max_window_layers") && !config["max_window_layers"].is_null()
                                ? non_negative_int(config, "max_window_layers", where)
                                : 28;
  set_layer_windows(config, c, where, [&](std::int64_t l) { return l >= from; });
}

// A mixture of experts: Mixtral's (num_local_experts experts of intermediate_size, their
// probabilities renormalised over the picked ones) or Qwen2-MoE's and Qwen3-MoE's (num_experts of
// moe_intermediate_size, renormalised where norm_topk_prob says; dense blocks where
// mlp_only_layers lists them or decoder_sparse_step skips them, as transformers builds them;
// Qwen2-MoE's shared expert of shared_expert_intermediate_size, gated; Granite-MoE-Shared's of
// shared_intermediate_size, none where 0, ungated).
void parse_experts(const json& config, ModelConfig& c, const std::string& where) {
  constexpr std::int64_t kMaxExperts = 4096;
  // Mixtral's, Granite-MoE's and GPT-OSS's experts are intermediate_size wide, counted by
  // num_local_experts, their weights renormalised over the picked ones (GPT-OSS: the softmax of
  // the picked logits, the same).
  const bool granite = c.architecture == "GraniteMoeForCausalLM" || c.architecture == "GraniteMoeSharedForCausalLM";
  const bool mixtral = c.architecture == "MixtralForCausalLM" || granite || c.architecture == "GptOssForCausalLM";
  const bool olmoe = c.architecture == "OlmoeForCausalLM";
  const std::string count_key = mixtral ? "num_local_experts" : "num_experts";
  c.num_experts = positive_int(config, count_key, where);
  if (c.num_experts > kMaxExperts) fail(where, ": '", count_key, "' is ", c.num_experts, ", more than the limit of ", kMaxExperts);
  c.experts_per_token = positive_int(config, "num_experts_per_tok", where);
  if (c.experts_per_token > c.num_experts) {
    fail(where, ": num_experts_per_tok ", c.experts_per_token, " is more than the ", c.num_experts, " experts");
  }
  if (mixtral) {
    c.moe_intermediate_size = c.intermediate_size;
    if (c.architecture == "GraniteMoeSharedForCausalLM" && config.contains("shared_intermediate_size") &&
        !config["shared_intermediate_size"].is_null()) {
      c.shared_expert_intermediate_size = non_negative_int(config, "shared_intermediate_size", where);
      c.shared_expert_gated = false;
    }
    return;
  }
  // OLMoE's experts are intermediate_size wide, and every block is sparse.
  c.moe_intermediate_size = olmoe ? c.intermediate_size : positive_int(config, "moe_intermediate_size", where);
  if (c.architecture == "Qwen2MoeForCausalLM") {
    c.shared_expert_intermediate_size = positive_int(config, "shared_expert_intermediate_size", where);
  }
  if (config.contains("norm_topk_prob") && !config["norm_topk_prob"].is_null()) {
    if (!config["norm_topk_prob"].is_boolean()) fail(where, ": 'norm_topk_prob' must be true or false");
    c.moe_renormalize = config["norm_topk_prob"];
  } else {
    c.moe_renormalize = false;  // transformers' default
  }
  if (olmoe) return;
  const std::int64_t step = positive_int(config, "decoder_sparse_step", where, 1);
  std::vector<bool> dense(static_cast<std::size_t>(c.num_layers), false);
  if (config.contains("mlp_only_layers") && !config["mlp_only_layers"].is_null()) {
    if (!config["mlp_only_layers"].is_array()) fail(where, ": 'mlp_only_layers' must be a list of block indices");
    for (const json& l : config["mlp_only_layers"]) {
      if (!l.is_number_integer() || l.get<std::int64_t>() < 0 || l.get<std::int64_t>() >= c.num_layers) {
        fail(where, ": mlp_only_layers holds ", l.dump(), " (block indices from 0 to ", c.num_layers - 1, ")");
      }
      dense[static_cast<std::size_t>(l.get<std::int64_t>())] = true;
    }
  }
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    if (dense[static_cast<std::size_t>(l)] || (l + 1) % step != 0) c.dense_layers.push_back(l);
  }
}

ModelConfig parse_model_config(const json& config, const std::string& where) {
  ModelConfig c;
  if (config.contains("architectures") && config["architectures"].is_array() &&
      !config["architectures"].empty() && config["architectures"][0].is_string()) {
    c.architecture = config["architectures"][0];
  } else if (config.value("model_type", "") == "llama") {
    c.architecture = "LlamaForCausalLM";
  } else {
    fail(where, ": no 'architectures' entry naming the model class");
  }
  if (c.architecture == "Gemma3ForConditionalGeneration") return parse_gemma3_multimodal(config, where);
  bool supported = false;
  for (const auto& a : kSupportedArchitectures) supported |= (a == c.architecture);
  if (!supported) {
    fail(where, ": unsupported architecture '", c.architecture, "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration (its language model), MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, GraniteForCausalLM, GraniteMoeForCausalLM, GraniteMoeSharedForCausalLM, Olmo2ForCausalLM, Olmo3ForCausalLM, OlmoeForCausalLM, SmolLM3ForCausalLM, GptOssForCausalLM, CohereForCausalLM, Cohere2ForCausalLM, GlmForCausalLM, Glm4ForCausalLM, BloomForCausalLM)");
  }
  check_quantization(config, c, where);
  if (c.architecture == "BloomForCausalLM") return parse_bloom_config(config, c, where);
  // Gemma 3 (its text model) is Gemma 2 with q and k norms, no soft-capping, and its own RoPE
  // base on sliding blocks.
  const bool gemma3 = c.architecture == "Gemma3ForCausalLM";
  const bool gemma2 = c.architecture == "Gemma2ForCausalLM" || gemma3;
  const bool gemma = c.architecture == "GemmaForCausalLM" || gemma2;
  // OLMo 2 and 3 normalise the attention's and the MLP's outputs, not their inputs (3: with a
  // window on 3 of 4 blocks); OLMo 2 and OLMoE normalise the whole of q and of k.
  const bool olmo3 = c.architecture == "Olmo3ForCausalLM";
  const bool olmo2 = c.architecture == "Olmo2ForCausalLM" || olmo3;
  const bool olmoe = c.architecture == "OlmoeForCausalLM";
  // GPT-OSS: biases on every attention projection, a sink per head, a window on every other block,
  // and experts with biases and a clamped SwiGLU.
  const bool gpt_oss = c.architecture == "GptOssForCausalLM";
  // Cohere (Command R, Aya) and Cohere 2 (Command R7B, Command A): LayerNorms without biases, the
  // attention and the MLP side by side on one norm, RoPE over adjacent pairs, logits scaled;
  // Cohere's use_qk_norm: a LayerNorm of each head of q and k with that head's own weights;
  // Cohere 2: a window on 3 of every 4 blocks, which alone rotate.
  const bool cohere2 = c.architecture == "Cohere2ForCausalLM";
  const bool cohere = c.architecture == "CohereForCausalLM" || cohere2;
  // GLM (glm-4-9b-chat-hf) and GLM-4 (the 0414 models): biases on q, k and v, RoPE over adjacent
  // pairs of the first half of each head (partial_rotary_factor 0.5 unless the config says), gate
  // and up fused; GLM-4 also normalises the attention's and the MLP's outputs (post_self_attn_layernorm,
  // post_mlp_layernorm), its MLP's input norm being post_attention_layernorm.
  const bool glm4 = c.architecture == "Glm4ForCausalLM";
  const bool glm = c.architecture == "GlmForCausalLM" || glm4;
  if (gemma) {
    // Gemma was trained with GELU's tanh approximation. Its first configs say "hidden_act": "gelu",
    // which transformers read as the exact GELU until it switched to "hidden_activation" (absent
    // there, the approximation); sepal does as transformers does now.
    const json act = config.contains("hidden_activation") ? config["hidden_activation"] : json();
    if (!act.is_null() && !(act.is_string() && (act == "gelu_pytorch_tanh" || act == "gelu_new"))) {
      fail(where, ": unsupported hidden_activation ", act.dump(), " for Gemma (supported: gelu_pytorch_tanh)");
    }
    c.mlp_activation = GateActivation::kGeluTanh;
    c.norm_weight_plus_one = true;
  } else {
    const std::string act = config.value("hidden_act", std::string("silu"));
    if (act != "silu") fail(where, ": unsupported hidden_act '", act, "' (supported: silu)");
  }
  // Qwen2's q, k and v projections always have biases (its config does not say so). Llama's and
  // Qwen3's attention_bias puts one on o_proj too, which sepal does not apply: refused, not left
  // out. Qwen3 normalises each head of q and k (q_norm, k_norm) before RoPE.
  c.attention_bias = c.architecture == "Qwen2ForCausalLM" || c.architecture == "Qwen2MoeForCausalLM" || gpt_oss;
  if (glm) {  // true unless the config says (transformers' default)
    const bool listed = config.contains("attention_bias") && !config["attention_bias"].is_null();
    if (listed && !config["attention_bias"].is_boolean()) fail(where, ": 'attention_bias' must be true or false");
    c.attention_bias = !listed || config["attention_bias"].get<bool>();
    c.rope_adjacent_pairs = c.fused_gate_up = true;
    c.output_norms = glm4;
  }
  c.attention_output_bias = c.attention_sinks = c.expert_biases = gpt_oss;
  if (gpt_oss) {
    c.mlp_activation = GateActivation::kClampedSwiglu;
    c.swiglu_limit = static_cast<float>(positive_number(config, "swiglu_limit", where, 7.0));
  }
  c.qk_norm = c.architecture == "Qwen3ForCausalLM" || c.architecture == "Qwen3MoeForCausalLM" || gemma3 || olmo2 || olmoe;
  if (cohere) {
    c.layer_norms = c.parallel_block = c.rope_adjacent_pairs = true;
    if (!cohere2 && config.contains("use_qk_norm") && !config["use_qk_norm"].is_null()) {
      if (!config["use_qk_norm"].is_boolean()) fail(where, ": 'use_qk_norm' must be true or false");
      c.qk_norm = c.qk_norm_per_head_weights = config["use_qk_norm"].get<bool>();
    }
  }
  c.qk_norm_across_heads = olmo2 || olmoe;
  if (olmo2) {
    c.output_norms = true;
    c.input_norms = false;
  }
  if (config.contains("clip_qkv") && !config["clip_qkv"].is_null()) {
    fail(where, ": clip_qkv (q, k and v clamped, OLMo's first models) is not supported");
  }
  // Phi-3 fuses q, k, v and gate, up.
  if (c.architecture == "Phi3ForCausalLM") c.fused_qkv = c.fused_gate_up = true;
  if (!c.attention_bias && !glm && config.value("attention_bias", false)) {
    fail(where, ": attention_bias=true (biases on every attention projection, o_proj's too) is not supported for ",
         c.architecture, " (Qwen2's biases on q, k and v are)");
  }
  if ((c.architecture == "MistralForCausalLM" || c.architecture == "MixtralForCausalLM" || c.architecture == "Phi3ForCausalLM") &&
      config.contains("sliding_window") &&
      !config["sliding_window"].is_null()) {
    c.sliding_window = positive_int(config, "sliding_window", where);
  }
  if (config.value("mlp_bias", false)) fail(where, ": mlp_bias=true is not supported");
  if (gemma2) parse_gemma2(config, c, where);

  c.hidden_size = positive_int(config, "hidden_size", where);
  c.intermediate_size = positive_int(config, "intermediate_size", where);
  c.num_layers = positive_int(config, "num_hidden_layers", where);
  c.num_heads = positive_int(config, "num_attention_heads", where);
  c.num_kv_heads = positive_int(config, "num_key_value_heads", where, c.num_heads);
  c.vocab_size = positive_int(config, "vocab_size", where);
  c.max_position_embeddings = positive_int(config, "max_position_embeddings", where);
  if (c.architecture == "MixtralForCausalLM" || c.architecture == "Qwen2MoeForCausalLM" || c.architecture == "Qwen3MoeForCausalLM" ||
      olmoe || c.architecture == "GraniteMoeForCausalLM" || c.architecture == "GraniteMoeSharedForCausalLM" || gpt_oss) {
    parse_experts(config, c, where);
  }
  if (c.architecture == "SmolLM3ForCausalLM") parse_no_rope_layers(config, c, where);
  if (config.contains("use_sliding_window") && !config["use_sliding_window"].is_null()) {
    if (!config["use_sliding_window"].is_boolean()) fail(where, ": 'use_sliding_window' must be true or false");
    if (config["use_sliding_window"].get<bool>()) parse_qwen_windows(config, c, where);
  }
  if (c.hidden_size % c.num_heads != 0 && !gemma && !(config.contains("head_dim") && !config["head_dim"].is_null())) {
    fail(where, ": hidden_size ", c.hidden_size, " is not a multiple of num_attention_heads ",
         c.num_heads, " and no head_dim is given");
  }
  // Gemma's heads are 256 wide unless its config says otherwise (transformers' default).
  c.head_dim = positive_int(config, "head_dim", where, gemma ? 256 : c.hidden_size / c.num_heads);
  if (c.head_dim % 2 != 0) fail(where, ": head_dim ", c.head_dim, " must be even for rotary embeddings");
  if (c.num_heads % c.num_kv_heads != 0) {
    fail(where, ": num_attention_heads ", c.num_heads, " is not a multiple of num_key_value_heads ",
         c.num_kv_heads);
  }
  // Rotary embeddings on the first int(head_dim * partial_rotary_factor) dimensions of each head
  // (Phi-4-mini: 0.75), as transformers computes them.
  if ((config.contains("partial_rotary_factor") && !config["partial_rotary_factor"].is_null()) || glm) {
    const double factor = positive_number(config, "partial_rotary_factor", where, glm ? 0.5 : 1.0);  // GLM's default: half
    if (factor != 1.0 && c.architecture != "Phi3ForCausalLM" && !glm) {
      fail(where, ": partial_rotary_factor ", factor, " (rotary embeddings on part of each head) is supported for Phi3ForCausalLM, GlmForCausalLM and Glm4ForCausalLM only, not ", c.architecture);
    }
    // int() as transformers takes it, past a rounding error (a GGUF file's 40 / 120 times 120).
    const auto dims = static_cast<std::int64_t>(static_cast<double>(c.head_dim) * factor + 1e-9);
    if (factor > 1.0 || dims < 2 || dims % 2 != 0) {
      fail(where, ": partial_rotary_factor ", factor, " rotates ", dims, " of head_dim ", c.head_dim,
           " dimensions (an even number from 2 to head_dim is needed)");
    }
    if (dims < c.head_dim) c.rotary_dim = dims;
  }
  c.rms_norm_eps = cohere ? positive_number(config, "layer_norm_eps", where, 1e-5) : positive_number(config, "rms_norm_eps", where, 1e-6);
  c.rope_theta = positive_number(config, "rope_theta", where,  // transformers' defaults
                                 gemma3 ? 1000000.0 : c.architecture == "SmolLM3ForCausalLM" ? 2000000.0 : 10000.0);
  c.rope_scaling = parse_rope_scaling(config, where, c.rope_dims(), c.max_position_embeddings);
  if (c.rope_scaling.kind == RopeScaling::Kind::kYarn) {
    // YaRN stretches the original context by its factor (Qwen2.5 and Qwen3 leave
    // max_position_embeddings at the original), as vLLM takes it.
    const double stretched = c.rope_scaling.original_max_position_embeddings * c.rope_scaling.factor;
    if (stretched > 1e9) fail(where, ": rope_scaling stretches the context to ", stretched, " positions");
    c.max_position_embeddings = std::max(c.max_position_embeddings, static_cast<std::int64_t>(std::llround(stretched)));
  }
  if (gemma) {
    c.embedding_scale = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size)));
    c.tie_word_embeddings = true;  // Gemma's default
  }
  if (cohere) {
    c.tie_word_embeddings = true;  // Cohere's default
    c.logit_divisor = static_cast<float>(1.0 / positive_number(config, "logit_scale", where, 0.0625));
  }
  if (config.contains("tie_word_embeddings")) {
    if (!config["tie_word_embeddings"].is_boolean()) fail(where, ": 'tie_word_embeddings' must be true or false");
    c.tie_word_embeddings = config["tie_word_embeddings"];
  }
  if (gemma2) {
    c.attention_scale = static_cast<float>(1.0 / std::sqrt(positive_number(config, "query_pre_attn_scalar", where, 256.0)));
    // Sliding blocks: layer_types where the config lists them, else all but every
    // sliding_window_pattern-th (Gemma 2: every other block from the first; Gemma 3: 5 of 6).
    const std::int64_t pattern = positive_int(config, "sliding_window_pattern", where, gemma3 ? 6 : 2);
    if (gemma3) c.local_rope_theta = positive_number(config, "rope_local_base_freq", where, 10000.0);
    if (c.sliding_window > 0) set_layer_windows(config, c, where, [&](std::int64_t l) { return (l + 1) % pattern != 0; });
  }
  if (olmo3) {
    // A window (4096 unless the config says) on the blocks layer_types lists, or on 3 of every 4;
    // the sliding blocks rotate without the rope_scaling, as OLMo 3 was trained (OLMo-core; some
    // transformers versions scale every block).
    c.sliding_window = positive_int(config, "sliding_window", where, 4096);
    set_layer_windows(config, c, where, [](std::int64_t l) { return (l + 1) % 4 != 0; });
    if (c.rope_scaling.kind != RopeScaling::Kind::kNone) c.local_rope_theta = c.rope_theta;
  }
  if (cohere2) {  // a window (4096 unless the config says) on the blocks layer_types lists, or on all but every sliding_window_pattern-th; only those rotate
    c.sliding_window = positive_int(config, "sliding_window", where, 4096);
    const std::int64_t pattern = positive_int(config, "sliding_window_pattern", where, 4);
    set_layer_windows(config, c, where, [&](std::int64_t l) { return (l + 1) % pattern != 0; });
    c.rope_layers.assign(static_cast<std::size_t>(c.num_layers), false);
    for (std::int64_t l = 0; l < c.num_layers; ++l) c.rope_layers[static_cast<std::size_t>(l)] = c.window_of(l) > 0;
  }
  if (gpt_oss) {  // a window (128 unless the config says) on the blocks layer_types lists, or on every other from the first
    c.sliding_window = positive_int(config, "sliding_window", where, 128);
    set_layer_windows(config, c, where, [](std::int64_t l) { return l % 2 == 0; });
  }
  if (c.architecture == "GraniteForCausalLM" || c.architecture == "GraniteMoeForCausalLM" ||
      c.architecture == "GraniteMoeSharedForCausalLM") {  // its multipliers, 1 where absent (transformers' defaults)
    c.embedding_scale = static_cast<float>(positive_number(config, "embedding_multiplier", where, 1.0));
    c.attention_scale = static_cast<float>(positive_number(config, "attention_multiplier", where, 1.0));
    c.residual_scale = static_cast<float>(positive_number(config, "residual_multiplier", where, 1.0));
    c.logit_divisor = static_cast<float>(positive_number(config, "logits_scaling", where, 1.0));
  }
  parse_special_tokens(config, c, where);
  return c;
}

void parse_special_tokens(const json& config, ModelConfig& c, const std::string& where) {
  const auto bos = token_ids(config, "bos_token_id", where);
  if (bos.size() > 1) fail(where, ": 'bos_token_id' must be a single id");
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  c.eos_token_ids = token_ids(config, "eos_token_id", where);
  for (auto id : c.eos_token_ids) {
    if (id >= c.vocab_size) fail(where, ": eos_token_id ", id, " is outside the vocabulary (", c.vocab_size, ")");
  }
  if (c.bos_token_id >= c.vocab_size) {
    fail(where, ": bos_token_id ", c.bos_token_id, " is outside the vocabulary (", c.vocab_size, ")");
  }
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& where) {
  json config;
  try {
    config = json::parse(json_text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 4e94967298
    fail(where, ": not valid JSON (", e.what(), ")");
  }
  if (!config.is_object()) fail(where, ": not a JSON object");
  try {
    return parse_model_config(config, where);
  } catch (const json::exception& e) {  // a value of the wrong type where the code did not look
    fail(where, ": a value has the wrong type (", e.what(), ")");
  }
}

ModelConfig read_model_config(const std::filesystem::path& dir) {
  if (is_gguf_file(dir)) return gguf_model_config(GgufFile::open(dir));
  if (!std::filesystem::is_directory(dir)) fail("model folder ", dir.string(), " does not exist");
  const auto path = dir / "config.json";
  std::ifstream in(path);
  if (!in) fail("cannot read ", path.string(), ": no such file");
  std::stringstream text;
  text << in.rdbuf();
  ModelConfig config = parse_model_config(text.str(), path.string());
  // generation_config.json's eos_token_id, where it has one, is what generation stops at, as in
  // transformers' generate(): Phi-3's <|end|> and Llama 3's <|eot_id|> are only there.
  if (std::ifstream generation(dir / "generation_config.json"); generation) {
    const std::string where = (dir / "generation_config.json").string();
    const json g = json::parse(generation, nullptr, /*allow_exceptions=*/false);
    if (g.is_discarded() || !g.is_object()) fail("cannot parse ", where, ": not a JSON object");
    if (g.contains("eos_token_id") && !g["eos_token_id"].is_null()) {
      config.eos_token_ids = token_ids(g, "eos_token_id", where);
      for (auto id : config.eos_token_ids) {
        if (id >= config.vocab_size) fail(where, ": eos_token_id ", id, " is outside the vocabulary (", config.vocab_size, ")");
      }
    }
  }
  // The tokenizer decides whether prompts start with BOS: Qwen2's config.json names a BOS id that
  // its tokenizer never adds.
  if (std::ifstream tokenizer_config(dir / "tokenizer_config.json"); tokenizer_config) {
    const json t = json::parse(tokenizer_config, nullptr, /*allow_exceptions=*/false);
    if (t.is_discarded()) fail("cannot parse ", (dir / "tokenizer_config.json").string(), ": not JSON");
    if (t.is_object() && t.contains("add_bos_token") && t["add_bos_token"].is_boolean() && !t["add_bos_token"].get<bool>()) {
      config.bos_token_id = -1;
    }
  }
  return config;
}

}  // namespace sepal

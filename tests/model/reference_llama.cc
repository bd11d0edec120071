#include "tests/model/reference_llama.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <numbers>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "kernels/rope.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weight_holding.h"
#include "model/weights.h"
#include "tests/test_util.h"

namespace sepal::test {
namespace {

std::vector<double> matrix(const HeldMatrix& m) {
  std::vector<double> out(static_cast<std::size_t>(m.view.rows * m.view.cols));
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (m.view.dtype == DType::kI8) {
      out[i] = static_cast<double>(static_cast<const std::int8_t*>(m.view.data)[i]) *
               m.view.scales[i / static_cast<std::size_t>(m.view.cols)];
      continue;
    }
    out[i] = m.view.dtype == DType::kBF16 ? bf16_to_f32(static_cast<const std::uint16_t*>(m.view.data)[i])
                                          : static_cast<const float*>(m.view.data)[i];
  }
  return out;
}

// y[t, r] = Σ_c x[t, c] w[r, c]
std::vector<double> linear(const std::vector<double>& x, const HeldMatrix& m) {
  const std::vector<double> w = matrix(m);
  const std::int64_t rows = m.view.rows, cols = m.view.cols, n = static_cast<std::int64_t>(x.size()) / cols;
  std::vector<double> y(static_cast<std::size_t>(n * rows));
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (std::int64_t c = 0; c < cols; ++c) s += x[t * cols + c] * w[r * cols + c];
      y[t * rows + r] = s;
    }
  return y;
}

// y[t, r] = Σ_c x[t, c] w[first + r, c] over `count` rows of an f32 tensor of the file (one part of
// Phi-3's fused qkv_proj or gate_up_proj, or of Granite-MoE's stacked experts, whose rows run on
// from one expert's matrix to the next, read here without the loader's split).
std::vector<double> linear_rows(const std::vector<double>& x, const TensorRef& w, std::int64_t first, std::int64_t count) {
  EXPECT_EQ(w.dtype, DType::kF32) << w.name;
  const std::int64_t cols = w.shape.back(), n = static_cast<std::int64_t>(x.size()) / cols;
  const auto* values = reinterpret_cast<const float*>(w.data);
  std::vector<double> y(static_cast<std::size_t>(n * count));
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t r = 0; r < count; ++r) {
      double s = 0;
      for (std::int64_t c = 0; c < cols; ++c) s += x[t * cols + c] * values[(first + r) * cols + c];
      y[t * count + r] = s;
    }
  return y;
}

bool is_gemma(const ModelConfig& c) {
  return c.architecture == "GemmaForCausalLM" || c.architecture == "Gemma2ForCausalLM" || c.architecture == "Gemma3ForCausalLM";
}

// The weights an RMSNorm scales by, read from the file: Gemma's scale by 1 + weight.
std::vector<double> norm_weights(const Checkpoint& ckpt, const ModelConfig& c, const std::string& name) {
  const TensorRef& t = ckpt.get(name);
  std::vector<double> w(static_cast<std::size_t>(t.elements()));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = element_as_f32(t, static_cast<std::int64_t>(i)) + (is_gemma(c) ? 1.0 : 0.0);
  return w;
}

// Gemma 2's and 3's settings, read from config.json itself: the score scale
// (query_pre_attn_scalar), the soft-capping of scores and logits (0: none), the window, which
// blocks slide (layer_types, else all but every sliding_window_pattern-th: 2 for Gemma 2, 6 for
// Gemma 3), and Gemma 3's RoPE bases (rope_local_base_freq on sliding blocks) and linear factor.
struct Gemma2Settings {
  double scale = 0, attention_cap = 0, logit_cap = 0;
  std::int64_t window = 0, pattern = 2;
  std::vector<bool> listed_sliding;
  double local_theta = 0, global_theta = 0, linear_factor = 1;

  bool sliding(std::int64_t layer) const {
    if (window <= 0) return false;
    return listed_sliding.empty() ? (layer + 1) % pattern != 0 : listed_sliding.at(static_cast<std::size_t>(layer));
  }
};

Gemma2Settings gemma2_settings(const std::filesystem::path& dir, const ModelConfig& c) {
  Gemma2Settings g;
  const bool gemma3 = c.architecture == "Gemma3ForCausalLM";
  if (c.architecture != "Gemma2ForCausalLM" && !gemma3) return g;
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  g.scale = 1 / std::sqrt(j.value("query_pre_attn_scalar", 256.0));  // transformers' default
  const auto number = [&](const char* key) { return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0; };
  g.attention_cap = number("attn_logit_softcapping");
  g.logit_cap = number("final_logit_softcapping");
  g.window = j.contains("sliding_window") && j["sliding_window"].is_number() ? j["sliding_window"].get<std::int64_t>() : 0;
  g.pattern = j.contains("sliding_window_pattern") ? j["sliding_window_pattern"].get<std::int64_t>() : gemma3 ? 6 : 2;
  if (j.contains("layer_types") && j["layer_types"].is_array()) {
    for (const auto& type : j["layer_types"]) g.listed_sliding.push_back(type == "sliding_attention");
  }
  if (gemma3) {
    g.local_theta = j.value("rope_local_base_freq", 10000.0);
    g.global_theta = j.value("rope_theta", 1000000.0);  // transformers' default for Gemma 3
    if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) g.linear_factor = j["rope_scaling"]["factor"].get<double>();
  }
  return g;
}

// Inverse frequencies theta^(-2i / head_dim) / factor.
std::vector<double> plain_inverse_frequencies(std::int64_t head_dim, double theta, double factor) {
  std::vector<double> f(static_cast<std::size_t>(head_dim / 2));
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim)) / factor;
  return f;
}

std::vector<double> rms(const std::vector<double>& x, const std::vector<double>& weight, double eps) {
  const auto dim = static_cast<std::int64_t>(weight.size()), n = static_cast<std::int64_t>(x.size()) / dim;
  std::vector<double> y(x.size());
  for (std::int64_t t = 0; t < n; ++t) {
    double ms = 0;
    for (std::int64_t i = 0; i < dim; ++i) ms += x[t * dim + i] * x[t * dim + i];
    const double r = 1 / std::sqrt(ms / dim + eps);
    for (std::int64_t i = 0; i < dim; ++i) y[t * dim + i] = x[t * dim + i] * r * weight[static_cast<std::size_t>(i)];
  }
  return y;
}

// Layer normalisation without a bias (Cohere): (x - mean) / sqrt(var + eps) * weight per row of weight's width.
std::vector<double> layer_norm(const std::vector<double>& x, const std::vector<double>& weight, double eps) {
  const auto dim = static_cast<std::int64_t>(weight.size()), n = static_cast<std::int64_t>(x.size()) / dim;
  std::vector<double> y(x.size());
  for (std::int64_t t = 0; t < n; ++t) {
    double mean = 0, var = 0;
    for (std::int64_t i = 0; i < dim; ++i) mean += x[t * dim + i];
    mean /= static_cast<double>(dim);
    for (std::int64_t i = 0; i < dim; ++i) var += (x[t * dim + i] - mean) * (x[t * dim + i] - mean);
    const double r = 1 / std::sqrt(var / static_cast<double>(dim) + eps);
    for (std::int64_t i = 0; i < dim; ++i) y[t * dim + i] = (x[t * dim + i] - mean) * r * weight[static_cast<std::size_t>(i)];
  }
  return y;
}

// Cohere's and GLM's RoPE: pairs (2i, 2i + 1) of the first rd dimensions of each head turn by
// inv_freq[i] (their rotate_half takes the even and odd dimensions); the rest stay.
void rotate_pairs(std::vector<double>& x, std::int64_t heads, std::int64_t hd, std::int64_t rd, const std::vector<std::int64_t>& pos,
                  const std::vector<double>& inv_freq, double magnitude) {
  for (std::size_t t = 0; t < pos.size(); ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < rd / 2; ++i) {
        double* v = &x[(t * heads + h) * hd];
        const double a = v[2 * i], b = v[2 * i + 1], angle = pos[t] * inv_freq[i];
        v[2 * i] = magnitude * (a * std::cos(angle) - b * std::sin(angle));
        v[2 * i + 1] = magnitude * (b * std::cos(angle) + a * std::sin(angle));
      }
}

// Rotates the first `rd` dimensions of each head (pairs i, i + rd/2); the rest stay.
// Rows whose `long_rows` entry is set rotate with long_freq instead of inv_freq.
void rotate(std::vector<double>& x, std::int64_t heads, std::int64_t hd, std::int64_t rd, const std::vector<std::int64_t>& pos,
            const std::vector<double>& inv_freq, double magnitude, const std::vector<double>& long_freq,
            const std::vector<bool>& long_rows) {
  for (std::size_t t = 0; t < pos.size(); ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < rd / 2; ++i) {
        double* v = &x[(t * heads + h) * hd];
        const double freq = long_rows[t] ? long_freq[i] : inv_freq[i];
        const double a = v[i], b = v[i + rd / 2], angle = pos[t] * freq;
        v[i] = magnitude * (a * std::cos(angle) - b * std::sin(angle));
        v[i + rd / 2] = magnitude * (b * std::cos(angle) + a * std::sin(angle));
      }
}

// rope_theta from config.json itself (10000 where absent, as transformers' default for Cohere).
double j_rope_theta(const std::filesystem::path& dir) {
  std::ifstream in(dir / "config.json");
  return nlohmann::json::parse(in).value("rope_theta", 10000.0);
}

// The dimensions of each head that rotate, from config.json itself: int(head_dim *
// partial_rotary_factor), as transformers computes them.
std::int64_t rotary_dims(const std::filesystem::path& dir, std::int64_t hd) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::string arch = j["architectures"][0];
  const bool glm = arch == "GlmForCausalLM" || arch == "Glm4ForCausalLM";  // half by default
  if (!j.contains("partial_rotary_factor") || !j["partial_rotary_factor"].is_number()) return glm ? hd / 2 : hd;
  return static_cast<std::int64_t>(static_cast<double>(hd) * j["partial_rotary_factor"].get<double>());
}

// LongRoPE from config.json itself: a sequence longer than original_max_position_embeddings
// rotates every position with the frequencies of theta divided by rope_scaling's long factors (as
// Hugging Face's forward of such a sequence does); none: an empty table.
struct LongRope {
  std::vector<double> freq;
  std::int64_t original = 0;
};
LongRope long_rope(const std::filesystem::path& dir, std::int64_t rd, double theta) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  LongRope out;
  if (!j.contains("rope_scaling") || !j["rope_scaling"].is_object() || !j["rope_scaling"].contains("long_factor")) return out;
  out.freq = plain_inverse_frequencies(rd, theta, 1);
  const auto factors = j["rope_scaling"]["long_factor"].get<std::vector<double>>();
  for (std::size_t i = 0; i < out.freq.size(); ++i) out.freq[i] /= factors.at(i);
  out.original = j.value("original_max_position_embeddings", std::int64_t{0});
  return out;
}

// Qwen2's, Qwen3's and SmolLM3's window of block `layer` from config.json itself: with
// use_sliding_window, sliding_window on the blocks from max_window_layers on (SmolLM3: those
// without RoPE), or those layer_types lists, else 0; -1 for other architectures.
std::int64_t qwen_window_of(const std::filesystem::path& dir, std::int64_t layer) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::string arch = j["architectures"][0];
  const bool smollm3 = arch == "SmolLM3ForCausalLM";
  if (arch != "Qwen2ForCausalLM" && arch != "Qwen3ForCausalLM" && arch != "Qwen3MoeForCausalLM" && !smollm3) return -1;
  if (!j.value("use_sliding_window", false)) return 0;
  const bool slides = j.contains("layer_types") ? j["layer_types"][static_cast<std::size_t>(layer)] == "sliding_attention"
                      : smollm3                 ? j["no_rope_layers"][static_cast<std::size_t>(layer)] == 0
                                                : layer >= j.value("max_window_layers", std::int64_t{28});
  return slides ? j["sliding_window"].get<std::int64_t>() : 0;
}

// Granite's multipliers from config.json itself (transformers' defaults of 1 where absent; other
// architectures: residuals and logits as they are, attention 0 for the usual scale).
struct GraniteSettings {
  double attention = 0, residual = 1, logits = 1;
};
GraniteSettings granite_settings(const std::filesystem::path& dir) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  if (j["architectures"][0] != "GraniteForCausalLM" && j["architectures"][0] != "GraniteMoeForCausalLM" &&
      j["architectures"][0] != "GraniteMoeSharedForCausalLM") {
    return {};
  }
  return {j.value("attention_multiplier", 1.0), j.value("residual_multiplier", 1.0), j.value("logits_scaling", 1.0)};
}

// OLMo's settings from config.json itself: OLMo 2 and 3 normalise the attention's and the MLP's
// outputs and not their inputs; OLMo 2, 3 and OLMoE normalise the whole of q and of k; OLMo 3 has a
// window (4096 by default) on the blocks layer_types lists as sliding (else 3 of every 4), which
// rotate with plain RoPE of rope_theta, without the rope_scaling.
struct OlmoSettings {
  bool output_norms_only = false, whole_qk_norms = false;
  std::int64_t window = 0;
  std::vector<bool> sliding;
  double theta = 0;
};
OlmoSettings olmo_settings(const std::filesystem::path& dir) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::string arch = j["architectures"][0];
  OlmoSettings o;
  o.output_norms_only = arch == "Olmo2ForCausalLM" || arch == "Olmo3ForCausalLM";
  o.whole_qk_norms = o.output_norms_only || arch == "OlmoeForCausalLM";
  if (arch != "Olmo3ForCausalLM") return o;
  o.window = j.value("sliding_window", std::int64_t{4096});
  o.theta = j.value("rope_theta", 10000.0);
  const std::int64_t layers = j["num_hidden_layers"];
  for (std::int64_t l = 0; l < layers; ++l) {
    o.sliding.push_back(j.contains("layer_types") ? j["layer_types"][static_cast<std::size_t>(l)] == "sliding_attention" : (l + 1) % 4 != 0);
  }
  return o;
}

// GPT-OSS's settings from config.json itself: a window (128 by default) on the blocks layer_types
// lists as sliding (else every other block from the first), and the clamp of its SwiGLU
// (swiglu_limit, 7 by default); biases on o_proj and a sink per head; 0 and none for other
// architectures.
struct GptOssSettings {
  bool on = false;
  std::int64_t window = 0;
  std::vector<bool> sliding;
  double limit = 0;
};
GptOssSettings gpt_oss_settings(const std::filesystem::path& dir) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  GptOssSettings g;
  if (j["architectures"][0] != "GptOssForCausalLM") return g;
  g.on = true;
  g.window = j.value("sliding_window", std::int64_t{128});
  g.limit = j.value("swiglu_limit", 7.0);
  const std::int64_t layers = j["num_hidden_layers"];
  for (std::int64_t l = 0; l < layers; ++l) {
    g.sliding.push_back(j.contains("layer_types") ? j["layer_types"][static_cast<std::size_t>(l)] == "sliding_attention" : l % 2 == 0);
  }
  return g;
}

// Cohere's settings from config.json itself: LayerNorms without biases (layer_norm_eps, 1e-5 by
// default), the attention and the MLP side by side on input_layernorm's output, RoPE over adjacent
// pairs, logits times logit_scale (0.0625 by default); Cohere's use_qk_norm: each head of q and k
// layer-normalised with its own weights; Cohere 2: a window (4096 by default) on the blocks
// layer_types lists as sliding, else on all but every sliding_window_pattern-th (4), and only
// those rotate.
struct CohereSettings {
  bool on = false, qk_norm = false;
  double eps = 1e-5, logit_scale = 1;
  std::int64_t window = 0;
  std::vector<bool> sliding;  // Cohere 2's; empty for Cohere
};
CohereSettings cohere_settings(const std::filesystem::path& dir) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::string arch = j["architectures"][0];
  CohereSettings o;
  if (arch != "CohereForCausalLM" && arch != "Cohere2ForCausalLM") return o;
  o.on = true;
  o.eps = j.value("layer_norm_eps", 1e-5);
  o.logit_scale = j.value("logit_scale", 0.0625);
  if (arch == "CohereForCausalLM") {
    o.qk_norm = j.value("use_qk_norm", false);
    return o;
  }
  o.window = j.value("sliding_window", std::int64_t{4096});
  const std::int64_t layers = j["num_hidden_layers"], pattern = j.value("sliding_window_pattern", std::int64_t{4});
  for (std::int64_t l = 0; l < layers; ++l) {
    o.sliding.push_back(j.contains("layer_types") ? j["layer_types"][static_cast<std::size_t>(l)] == "sliding_attention"
                                                  : (l + 1) % pattern != 0);
  }
  return o;
}

// GLM's and GLM-4's settings from config.json itself: RoPE over adjacent pairs (of the first
// partial_rotary_factor of each head, 0.5 by default: rotary_dims reads it); GLM-4 normalises the
// attention's output (post_self_attn_layernorm) and the MLP's (post_mlp_layernorm).
struct GlmSettings {
  bool on = false, sandwich = false;
};
GlmSettings glm_settings(const std::filesystem::path& dir) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::string arch = j["architectures"][0];
  return {arch == "GlmForCausalLM" || arch == "Glm4ForCausalLM", arch == "Glm4ForCausalLM"};
}

// A vector tensor of the file, or row `row` of a matrix one, as doubles.
std::vector<double> file_vector(const Checkpoint& ckpt, const std::string& name, std::int64_t row = 0) {
  const TensorRef& t = ckpt.get(name);
  const std::int64_t width = t.shape.back();
  std::vector<double> v(static_cast<std::size_t>(width));
  for (std::int64_t i = 0; i < width; ++i) v[static_cast<std::size_t>(i)] = element_as_f32(t, row * width + i);
  return v;
}

// SmolLM3's blocks that rotate, from config.json itself: no_rope_layers' 1s (true for every block
// of other architectures).
bool rotates_in_config(const std::filesystem::path& dir, std::int64_t layer) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  if (j["architectures"][0] != "SmolLM3ForCausalLM") return true;
  return j["no_rope_layers"][static_cast<std::size_t>(layer)] == 1;
}

// A mixture of experts from config.json itself (Mixtral: num_local_experts, always renormalised,
// tensors block_sparse_moe.experts.E.w1 (gate), w3 (up), w2 (down); Qwen3-MoE: num_experts,
// norm_topk_prob, mlp_only_layers, tensors mlp.experts.E.gate_proj, ...); count 0 for a dense block.
struct Experts {
  std::int64_t count = 0, per_token = 0;
  bool renormalize = true;
  std::string prefix, gate, up, down;
  bool shared = false;  // Qwen2-MoE: shared_expert, weighted by sigmoid(shared_expert_gate)
  bool stacked = false;  // Granite-MoE: router.layer; input_linear [experts, gate's rows and up's, hidden], output_linear
  // Granite-MoE-Shared: the block's shared_mlp, input_linear [2 · width, hidden] (gate's rows, then
  // up's) and output_linear [hidden, width], added ungated; width 0: none.
  std::string shared_mlp;
  std::int64_t shared_width = 0;
};
Experts experts_of(const std::filesystem::path& dir, std::int64_t layer) {
  std::ifstream in(dir / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  const std::string arch = j["architectures"][0];
  Experts out;
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  if (arch == "MixtralForCausalLM") {
    out = {j["num_local_experts"], j["num_experts_per_tok"], true, p + "block_sparse_moe.", "w1", "w3", "w2"};
  } else if (arch == "GraniteMoeForCausalLM" || arch == "GraniteMoeSharedForCausalLM") {  // the softmax of the top logits: the picked probabilities renormalised
    out = {j["num_local_experts"], j["num_experts_per_tok"], true, p + "block_sparse_moe.", "", "", "", false, true};
    if (arch == "GraniteMoeSharedForCausalLM") {
      out.shared_mlp = p + "shared_mlp.";
      out.shared_width = j.value("shared_intermediate_size", std::int64_t{0});
    }
  } else if (arch == "OlmoeForCausalLM") {  // every block sparse, experts of intermediate_size
    out = {j["num_experts"], j["num_experts_per_tok"], j.value("norm_topk_prob", false), p + "mlp.", "gate_proj", "up_proj", "down_proj"};
  } else if (arch == "Qwen3MoeForCausalLM" || arch == "Qwen2MoeForCausalLM") {
    for (const auto& l : j.value("mlp_only_layers", nlohmann::json::array())) {
      if (l.get<std::int64_t>() == layer) return out;
    }
    out = {j["num_experts"], j["num_experts_per_tok"], j.value("norm_topk_prob", false), p + "mlp.", "gate_proj", "up_proj", "down_proj",
           arch == "Qwen2MoeForCausalLM"};
  }
  return out;
}

}  // namespace

std::vector<double> reference_forward(const std::filesystem::path& dir, DType dtype, std::vector<double> x,
                                      const std::vector<std::int64_t>& lengths, std::int64_t first,
                                      std::int64_t blocks, const std::vector<double>& prompts,
                                      std::int64_t prompt_count, std::int64_t offset,
                                      const ReferenceAdapters* adapters) {
  const ModelConfig c = read_model_config(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  const std::int64_t h = c.hidden_size, hd = c.head_dim, group = c.num_heads / c.num_kv_heads;
  const std::int64_t rd = rotary_dims(dir, hd);
  const auto inv_freq = rope_inverse_frequencies(rd, c.rope_theta, c.rope_scaling);
  const Gemma2Settings gemma2 = gemma2_settings(dir, c);
  const GraniteSettings granite = granite_settings(dir);
  const OlmoSettings olmo = olmo_settings(dir);
  const GptOssSettings gpt_oss = gpt_oss_settings(dir);
  const CohereSettings cohere = cohere_settings(dir);
  const GlmSettings glm = glm_settings(dir);
  const bool sandwich = c.architecture == "Gemma2ForCausalLM" || c.architecture == "Gemma3ForCausalLM";
  const LongRope longrope = long_rope(dir, rd, c.rope_theta);
  std::vector<std::int64_t> pos, starts;
  std::vector<bool> long_rows;
  for (std::int64_t n : lengths) {
    starts.push_back(static_cast<std::int64_t>(pos.size()));
    for (std::int64_t p = 0; p < n; ++p) {
      pos.push_back(p);
      long_rows.push_back(!longrope.freq.empty() && n > longrope.original);
    }
  }
  for (std::int64_t b = 0; b < blocks; ++b) {
    const BlockWeights w = load_block_weights(ckpt, c, first + b, WeightLoading(dtype));
    // y = in · Wᵀ of projection p (of expert `copy` in a sparse block), adapted in place.
    auto adapt = [&](std::vector<double>& y, const std::vector<double>& in, Projection p, std::int64_t rows, std::int64_t cols,
                     std::int64_t copy) {
      if (!adapters || !adapters->shape.targets_projection(p)) return;
      const std::int64_t n = static_cast<std::int64_t>(in.size()) / cols;
      const double* v = adapters->values.data() + b * adapters->shape.values_per_block(c) + adapters->shape.offset_in_block(c, p, first + b, copy);
      if (adapters->shape.method == AdapterMethod::kPeqa) {
        for (std::int64_t t = 0; t < n; ++t)
          for (std::int64_t r = 0; r < rows; ++r) y[t * rows + r] *= 1 + v[r];
        return;
      }
      const std::int64_t rank = adapters->shape.rank;
      const double scaling = adapters->shape.alpha / static_cast<double>(rank);
      for (std::int64_t t = 0; t < n; ++t) {
        std::vector<double> u(static_cast<std::size_t>(rank));
        for (std::int64_t j = 0; j < rank; ++j)
          for (std::int64_t i = 0; i < cols; ++i) u[j] += in[t * cols + i] * v[j * cols + i];
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t j = 0; j < rank; ++j) y[t * rows + r] += scaling * v[rank * cols + r * rank + j] * u[j];
      }
    };
    // x · Wᵀ of projection p, adapted.
    auto linear = [&](const std::vector<double>& in, Projection p) {
      const HeldMatrix& m = p == Projection::kQ ? w.q_proj : p == Projection::kK ? w.k_proj : p == Projection::kV ? w.v_proj
                          : p == Projection::kO ? w.o_proj : p == Projection::kGate ? w.gate_proj
                          : p == Projection::kUp ? w.up_proj : w.down_proj;
      std::vector<double> y;
      const bool fused = p == Projection::kGate || p == Projection::kUp ? c.fused_gate_up
                         : p == Projection::kO || p == Projection::kDown ? false
                                                                         : c.fused_qkv;
      if (fused) {
        // Phi-3: qkv_proj holds q's rows, then k's, then v's; gate_up_proj gate's, then up's.
        const std::string layer = "model.layers." + std::to_string(first + b) + ".";
        const std::int64_t q_rows = c.num_heads * hd, kv_rows = c.num_kv_heads * hd, ffn = c.intermediate_size;
        if (p == Projection::kGate || p == Projection::kUp) {
          y = linear_rows(in, ckpt.get(layer + "mlp.gate_up_proj.weight"), p == Projection::kGate ? 0 : ffn, ffn);
        } else {
          const std::int64_t at = p == Projection::kQ ? 0 : p == Projection::kK ? q_rows : q_rows + kv_rows;
          y = linear_rows(in, ckpt.get(layer + "self_attn.qkv_proj.weight"), at, p == Projection::kQ ? q_rows : kv_rows);
        }
      } else {
        y = sepal::test::linear(in, m);
      }
      adapt(y, in, p, m.view.rows, m.view.cols, 0);
      return y;
    };
    for (std::int64_t start : starts)
      for (std::int64_t i = 0; i < prompt_count * h; ++i) x[(start + offset) * h + i] += prompts[(b * prompt_count) * h + i];
    const std::string layer = "model.layers." + std::to_string(first + b) + ".";
    const std::int64_t qwen_window = qwen_window_of(dir, first + b);
    const bool olmo_slides = !olmo.sliding.empty() && olmo.sliding.at(static_cast<std::size_t>(first + b));
    const auto n1 = olmo.output_norms_only ? x
                    : cohere.on           ? layer_norm(x, norm_weights(ckpt, c, layer + "input_layernorm.weight"), cohere.eps)
                                          : rms(x, norm_weights(ckpt, c, layer + "input_layernorm.weight"), c.rms_norm_eps);
    auto q = linear(n1, Projection::kQ), k = linear(n1, Projection::kK);
    auto v = linear(n1, Projection::kV);
    if (c.attention_bias) {  // read from the file here, not through the loader's bias fields
      const std::string p = "model.layers." + std::to_string(first + b) + ".self_attn.";
      for (auto [name, rows] : {std::pair{"q_proj.bias", &q}, std::pair{"k_proj.bias", &k}, std::pair{"v_proj.bias", &v}}) {
        const TensorRef& t = ckpt.get(p + name);
        const auto width = static_cast<std::size_t>(t.elements());
        const auto* values = reinterpret_cast<const float*>(t.data);
        for (std::size_t i = 0; i < rows->size(); ++i) (*rows)[i] += values[i % width];
      }
    }
    if (cohere.qk_norm) {  // Cohere: each head of q and k layer-normalised with that head's weights [heads, head_dim]
      const std::string p = "model.layers." + std::to_string(first + b) + ".self_attn.";
      for (auto [name, rows, heads] : {std::tuple{"q_norm.weight", &q, c.num_heads}, std::tuple{"k_norm.weight", &k, c.num_kv_heads}}) {
        const std::vector<double> weight = norm_weights(ckpt, c, p + name);
        EXPECT_EQ(static_cast<std::int64_t>(weight.size()), heads * hd);
        for (std::size_t part = 0; part < rows->size() / static_cast<std::size_t>(hd); ++part) {
          const auto head = static_cast<std::int64_t>(part) % heads;
          const std::vector<double> one(rows->begin() + static_cast<std::ptrdiff_t>(part) * hd, rows->begin() + static_cast<std::ptrdiff_t>(part + 1) * hd);
          const auto normed = layer_norm(one, std::vector<double>(weight.begin() + head * hd, weight.begin() + (head + 1) * hd), cohere.eps);
          std::copy(normed.begin(), normed.end(), rows->begin() + static_cast<std::ptrdiff_t>(part) * hd);
        }
      }
    } else if (c.qk_norm) {  // Qwen3, Gemma 3: each head of q and k RMS-normalised with its own weights, read from the file; OLMo: each whole row
      const std::string p = "model.layers." + std::to_string(first + b) + ".self_attn.";
      for (auto [name, rows] : {std::pair{"q_norm.weight", &q}, std::pair{"k_norm.weight", &k}}) {
        const std::vector<double> weight = norm_weights(ckpt, c, p + name);
        const auto width = static_cast<std::int64_t>(olmo.whole_qk_norms ? weight.size() : static_cast<std::size_t>(hd));
        EXPECT_EQ(static_cast<std::int64_t>(weight.size()), width);
        for (std::size_t part = 0; part < rows->size() / static_cast<std::size_t>(width); ++part) {
          double* r = rows->data() + part * static_cast<std::size_t>(width);
          double ms = 0;
          for (std::int64_t e = 0; e < width; ++e) ms += r[e] * r[e];
          const double scale = 1 / std::sqrt(ms / static_cast<double>(width) + c.rms_norm_eps);
          for (std::int64_t e = 0; e < width; ++e) r[e] *= scale * weight[static_cast<std::size_t>(e)];
        }
      }
    }
    // Gemma 3: sliding blocks rotate with their own base, the others with rope_theta and its linear factor.
    // OLMo 3: sliding blocks rotate with plain RoPE, unscaled; the others as rope_scaling says.
    const auto block_freq = olmo_slides                ? plain_inverse_frequencies(rd, olmo.theta, 1)
                            : gemma2.local_theta <= 0 ? inv_freq
                            : gemma2.sliding(first + b) ? plain_inverse_frequencies(rd, gemma2.local_theta, 1)
                                                        : plain_inverse_frequencies(rd, gemma2.global_theta, gemma2.linear_factor);
    const double magnitude = olmo_slides ? 1.0 : c.rope_scaling.attention_factor;
    const bool cohere_slides = !cohere.sliding.empty() && cohere.sliding.at(static_cast<std::size_t>(first + b));
    if (cohere.on) {  // adjacent pairs; Cohere 2's sliding blocks alone
      if (cohere.sliding.empty() || cohere_slides) {
        rotate_pairs(q, c.num_heads, hd, hd, pos, plain_inverse_frequencies(hd, j_rope_theta(dir), 1), 1.0);
        rotate_pairs(k, c.num_kv_heads, hd, hd, pos, plain_inverse_frequencies(hd, j_rope_theta(dir), 1), 1.0);
      }
    } else if (glm.on) {  // adjacent pairs of the first rd dimensions
      rotate_pairs(q, c.num_heads, hd, rd, pos, plain_inverse_frequencies(rd, j_rope_theta(dir), 1), 1.0);
      rotate_pairs(k, c.num_kv_heads, hd, rd, pos, plain_inverse_frequencies(rd, j_rope_theta(dir), 1), 1.0);
    } else if (rotates_in_config(dir, first + b)) {
      rotate(q, c.num_heads, hd, rd, pos, block_freq, magnitude, longrope.freq, long_rows);
      rotate(k, c.num_kv_heads, hd, rd, pos, block_freq, magnitude, longrope.freq, long_rows);
    }
    std::vector<double> attn(q.size());
    for (std::size_t s = 0; s < starts.size(); ++s)
      for (std::int64_t i = 0; i < lengths[s]; ++i)
        for (std::int64_t head = 0; head < c.num_heads; ++head) {
          const std::int64_t ti = starts[s] + i, g = head / group;
          std::vector<double> p(static_cast<std::size_t>(i + 1));
          double top = -INFINITY, z = 0;
          // A sliding window (Mistral; Gemma 2's even blocks) keeps positions (i - window, i].
          const std::int64_t window = cohere.on ? (cohere_slides ? cohere.window : 0)
                                      : gpt_oss.on ? (gpt_oss.sliding.at(static_cast<std::size_t>(first + b)) ? gpt_oss.window : 0)
                                      : sandwich ? (gemma2.sliding(first + b) ? gemma2.window : 0)
                                      : !olmo.sliding.empty() ? (olmo_slides ? olmo.window : 0)
                                      : qwen_window >= 0 ? qwen_window : c.sliding_window;
          const std::int64_t lowest = window > 0 ? std::max<std::int64_t>(0, i - window + 1) : 0;
          for (std::int64_t j = 0; j < lowest; ++j) p[j] = -INFINITY;
          for (std::int64_t j = lowest; j <= i; ++j) {
            double d = 0;
            for (std::int64_t e = 0; e < hd; ++e)
              d += q[(ti * c.num_heads + head) * hd + e] * k[((starts[s] + j) * c.num_kv_heads + g) * hd + e];
            d *= granite.attention > 0 ? granite.attention : gemma2.scale > 0 ? gemma2.scale : 1 / std::sqrt(static_cast<double>(hd));
            if (gemma2.attention_cap > 0) d = gemma2.attention_cap * std::tanh(d / gemma2.attention_cap);
            top = std::max(top, p[j] = d);
          }
          // GPT-OSS: the head's sink joins the softmax as one more score, weighting no value.
          const double sink = gpt_oss.on ? file_vector(ckpt, layer + "self_attn.sinks")[static_cast<std::size_t>(head)] : -INFINITY;
          top = std::max(top, sink);
          for (double& e : p) z += (e = std::exp(e - top));
          z += std::exp(sink - top);
          for (std::int64_t j = lowest; j <= i; ++j)
            for (std::int64_t e = 0; e < hd; ++e)
              attn[(ti * c.num_heads + head) * hd + e] += p[j] / z * v[((starts[s] + j) * c.num_kv_heads + g) * hd + e];
        }
    auto o = linear(attn, Projection::kO);
    if (gpt_oss.on) {  // o_proj's bias
      const auto bias = file_vector(ckpt, layer + "self_attn.o_proj.bias");
      for (std::size_t i = 0; i < o.size(); ++i) o[i] += bias[i % bias.size()];
    }
    if (sandwich || olmo.output_norms_only) o = rms(o, norm_weights(ckpt, c, layer + "post_attention_layernorm.weight"), c.rms_norm_eps);
    if (glm.sandwich) o = rms(o, norm_weights(ckpt, c, layer + "post_self_attn_layernorm.weight"), c.rms_norm_eps);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += granite.residual * o[i];
    const auto n2 = cohere.on ? n1  // Cohere's MLP reads the attention's input norm
                    : olmo.output_norms_only
                        ? x
                        : rms(x, norm_weights(ckpt, c, layer + (sandwich ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight")),
                              c.rms_norm_eps);
    auto gated = [&](std::vector<double> gate, const std::vector<double>& up) {
      for (std::size_t i = 0; i < gate.size(); ++i) {
        const double g = gate[i];
        gate[i] = is_gemma(c)  // GELU, tanh approximation; else SiLU
                      ? 0.5 * g * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (g + 0.044715 * g * g * g))) * up[i]
                      : g / (1 + std::exp(-g)) * up[i];
      }
      return gate;
    };
    const Experts experts = experts_of(dir, first + b);
    std::vector<double> down;
    if (gpt_oss.on) {
      // GPT-OSS: router logits with a bias, the softmax of the k largest, and each expert from the
      // file's stacks, which hold it transposed (inputs by outputs) with the gate's and the up's
      // columns interleaved: g = min(gate, limit), u = clamp(up, ±limit), g σ(1.702 g) (u + 1),
      // then down with its bias.
      const std::string moe = layer + "mlp.";
      const std::int64_t count = c.num_experts, per_token = c.experts_per_token, inter = c.moe_intermediate_size;
      const TensorRef& gate_up = ckpt.get(moe + "experts.gate_up_proj");
      const TensorRef& down_w = ckpt.get(moe + "experts.down_proj");
      const auto router_bias = file_vector(ckpt, moe + "router.bias");
      const auto logits = linear_rows(n2, ckpt.get(moe + "router.weight"), 0, count);
      const std::int64_t rows = static_cast<std::int64_t>(n2.size()) / h;
      down.assign(n2.size(), 0.0);
      for (std::int64_t t = 0; t < rows; ++t) {
        std::vector<double> l(logits.begin() + t * count, logits.begin() + (t + 1) * count);
        for (std::int64_t e = 0; e < count; ++e) l[e] += router_bias[e];
        std::vector<std::int64_t> order(static_cast<std::size_t>(count));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return l[a] > l[b]; });
        order.resize(static_cast<std::size_t>(per_token));
        double z = 0;
        for (std::int64_t e : order) z += std::exp(l[e] - l[order[0]]);
        for (std::int64_t e : order) {
          const auto gu_bias = file_vector(ckpt, moe + "experts.gate_up_proj_bias", e);
          const auto d_bias = file_vector(ckpt, moe + "experts.down_proj_bias", e);
          std::vector<double> act(static_cast<std::size_t>(inter));
          for (std::int64_t i = 0; i < inter; ++i) {
            double g = gu_bias[2 * i], u = gu_bias[2 * i + 1];
            for (std::int64_t d = 0; d < h; ++d) {
              g += n2[t * h + d] * element_as_f32(gate_up, (e * h + d) * 2 * inter + 2 * i);
              u += n2[t * h + d] * element_as_f32(gate_up, (e * h + d) * 2 * inter + 2 * i + 1);
            }
            g = std::min(g, gpt_oss.limit);
            u = std::clamp(u, -gpt_oss.limit, gpt_oss.limit);
            act[i] = g / (1 + std::exp(-1.702 * g)) * (u + 1);
          }
          const double weight = std::exp(l[e] - l[order[0]]) / z;
          for (std::int64_t d = 0; d < h; ++d) {
            double y = d_bias[d];
            for (std::int64_t i = 0; i < inter; ++i) y += act[i] * element_as_f32(down_w, (e * inter + i) * h + d);
            down[t * h + d] += weight * y;
          }
        }
      }
    } else if (experts.count == 0) {
      down = linear(gated(linear(n2, Projection::kGate), linear(n2, Projection::kUp)), Projection::kDown);
    } else {
      // A mixture of experts, from the file's tensors (f32) or the loader's (other types): the
      // router's softmax, the k likeliest experts, their probabilities renormalised where the
      // config says, and their outputs weighted and summed.
      auto product = [&](const std::vector<double>& in, const std::string& name, const HeldMatrix& held) {
        return dtype == DType::kF32 ? linear_rows(in, ckpt.get(name), 0, ckpt.get(name).shape.at(0)) : sepal::test::linear(in, held);
      };
      const std::int64_t rows = static_cast<std::int64_t>(n2.size()) / h;
      const auto logits = product(n2, experts.prefix + (experts.stacked ? "router.layer.weight" : "gate.weight"), w.router);
      // Granite-MoE's expert e: rows [e · 2 · inter, + inter) of input_linear its gate, the next inter its up.
      const std::int64_t inter = c.moe_intermediate_size;
      auto stacked = [&](const std::vector<double>& in, const char* module, std::int64_t first, std::int64_t count, const HeldMatrix& held) {
        return dtype == DType::kF32 ? linear_rows(in, ckpt.get(experts.prefix + module + ".weight"), first, count)
                                    : sepal::test::linear(in, held);
      };
      down.assign(n2.size(), 0.0);
      for (std::int64_t t = 0; t < rows; ++t) {
        const double* l = logits.data() + t * experts.count;
        const double top = *std::max_element(l, l + experts.count);
        std::vector<double> p(static_cast<std::size_t>(experts.count));
        double z = 0;
        for (std::int64_t e = 0; e < experts.count; ++e) z += p[e] = std::exp(l[e] - top);
        for (double& v : p) v /= z;
        std::vector<std::int64_t> order(p.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return p[a] > p[b]; });
        order.resize(static_cast<std::size_t>(experts.per_token));
        double picked = 0;
        for (std::int64_t e : order) picked += p[e];
        const std::vector<double> row(n2.begin() + t * h, n2.begin() + (t + 1) * h);
        for (std::int64_t e : order) {
          const std::string ex = experts.prefix + "experts." + std::to_string(e) + ".";
          const BlockWeights::Expert& held = w.experts.at(static_cast<std::size_t>(e));
          const auto y = experts.stacked
                             ? stacked(gated(stacked(row, "input_linear", e * 2 * inter, inter, held.gate_proj),
                                             stacked(row, "input_linear", e * 2 * inter + inter, inter, held.up_proj)),
                                       "output_linear", e * h, h, held.down_proj)
                             : [&] {  // each expert's own adapters
                                 const std::int64_t inter_e = held.gate_proj.view.rows;
                                 auto g = product(row, ex + experts.gate + ".weight", held.gate_proj);
                                 adapt(g, row, Projection::kGate, inter_e, h, e);
                                 auto u = product(row, ex + experts.up + ".weight", held.up_proj);
                                 adapt(u, row, Projection::kUp, inter_e, h, e);
                                 const auto act = gated(g, u);
                                 auto d = product(act, ex + experts.down + ".weight", held.down_proj);
                                 adapt(d, act, Projection::kDown, h, inter_e, e);
                                 return d;
                               }();
          const double weight = experts.renormalize ? p[e] / picked : p[e];
          for (std::int64_t i = 0; i < h; ++i) down[t * h + i] += weight * y[i];
        }
        if (experts.shared) {
          const std::string sh = experts.prefix + "shared_expert.";
          const std::int64_t si = w.shared_expert.gate_proj.view.rows, shared = experts.count;  // its adapters follow the experts'
          auto gate = product(row, sh + "gate_proj.weight", w.shared_expert.gate_proj);
          adapt(gate, row, Projection::kGate, si, h, shared);
          auto up = product(row, sh + "up_proj.weight", w.shared_expert.up_proj);
          adapt(up, row, Projection::kUp, si, h, shared);
          const auto act = gated(gate, up);
          auto y = product(act, sh + "down_proj.weight", w.shared_expert.down_proj);
          adapt(y, act, Projection::kDown, h, si, shared);
          const double g = 1 / (1 + std::exp(-product(row, experts.prefix + "shared_expert_gate.weight", w.shared_expert_gate)[0]));
          for (std::int64_t i = 0; i < h; ++i) down[t * h + i] += g * y[i];
        }
        if (const std::int64_t si = experts.shared_width; si > 0) {
          auto part = [&](const std::vector<double>& in, const char* module, std::int64_t first, std::int64_t count, const HeldMatrix& held) {
            return dtype == DType::kF32 ? linear_rows(in, ckpt.get(experts.shared_mlp + module + ".weight"), first, count)
                                        : sepal::test::linear(in, held);
          };
          const auto y = part(gated(part(row, "input_linear", 0, si, w.shared_expert.gate_proj),
                                    part(row, "input_linear", si, si, w.shared_expert.up_proj)),
                              "output_linear", 0, h, w.shared_expert.down_proj);
          for (std::int64_t i = 0; i < h; ++i) down[t * h + i] += y[i];
        }
      }
    }
    if (sandwich || olmo.output_norms_only) down = rms(down, norm_weights(ckpt, c, layer + "post_feedforward_layernorm.weight"), c.rms_norm_eps);
    if (glm.sandwich) down = rms(down, norm_weights(ckpt, c, layer + "post_mlp_layernorm.weight"), c.rms_norm_eps);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += granite.residual * down[i];
  }
  return x;
}

double reference_cross_entropy(const std::filesystem::path& dir, const std::vector<double>& x,
                               const std::vector<std::int32_t>& targets) {
  const ModelConfig c = read_model_config(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  const EmbeddingWeights embedding = load_embedding_weights(ckpt, c, WeightLoading(DType::kF32));
  const HeadWeights head = load_head_weights(ckpt, c, WeightLoading(DType::kF32), &embedding);
  const CohereSettings cohere = cohere_settings(dir);
  const auto final_weights = norm_weights(ckpt, c, "model.norm.weight");
  auto logits = linear(cohere.on ? layer_norm(x, final_weights, cohere.eps) : rms(x, final_weights, c.rms_norm_eps), head.lm_head);
  for (double& l : logits) l /= granite_settings(dir).logits;
  if (cohere.on) {
    for (double& l : logits) l *= cohere.logit_scale;
  }
  if (const double cap = gemma2_settings(dir, c).logit_cap; cap > 0) {
    for (double& l : logits) l = cap * std::tanh(l / cap);
  }
  double total = 0;
  for (std::size_t t = 0; t < targets.size(); ++t) {
    if (targets[t] < 0) continue;
    const double* row = &logits[t * c.vocab_size];
    const double top = *std::max_element(row, row + c.vocab_size);
    double z = 0;
    for (std::int64_t v = 0; v < c.vocab_size; ++v) z += std::exp(row[v] - top);
    total += top + std::log(z) - row[targets[t]];
  }
  return total;
}

double reference_batch_loss(const std::filesystem::path& dir, const PromptedBatch& batch, const PromptParameters& p,
                            const std::vector<double>& soft, const std::vector<double>& deep) {
  std::vector<double> x(batch.hidden.begin(), batch.hidden.end());
  std::int64_t start = 0;
  for (std::int64_t length : batch.lengths) {
    std::copy(soft.begin(), soft.end(), x.begin() + (start + p.offset) * p.hidden_size);
    start += length;
  }
  const auto out = reference_forward(dir, DType::kF32, x, batch.lengths, 0, p.layers, deep,
                                     deep.empty() ? 0 : p.tokens, p.offset);
  return reference_cross_entropy(dir, out, batch.targets) / static_cast<double>(batch.scored);
}

void expect_prompt_gradient(const std::filesystem::path& dir, const PromptedBatch& batch, const PromptParameters& p,
                            const std::vector<float>& grad, std::uint64_t seed, double tolerance) {
  const std::vector<double> soft(p.soft.begin(), p.soft.end()), deep(p.deep.begin(), p.deep.end());
  constexpr double kStep = 1e-5;
  for (std::uint64_t k = 0; k < 2; ++k) {
    const auto u = random_floats(p.size(), seed + k);
    std::vector<double> s_up = soft, s_down = soft, d_up = deep, d_down = deep;
    for (std::size_t i = 0; i < soft.size(); ++i) {
      s_up[i] += kStep * u[i];
      s_down[i] -= kStep * u[i];
    }
    for (std::size_t i = 0; i < deep.size(); ++i) {
      d_up[i] += kStep * u[soft.size() + i];
      d_down[i] -= kStep * u[soft.size() + i];
    }
    const double numeric =
        (reference_batch_loss(dir, batch, p, s_up, d_up) - reference_batch_loss(dir, batch, p, s_down, d_down)) /
        (2 * kStep);
    double analytic = 0;
    for (std::size_t i = 0; i < u.size(); ++i) analytic += static_cast<double>(grad[i]) * u[i];
    EXPECT_NEAR(numeric, analytic, tolerance * std::max(1.0, std::abs(analytic))) << "direction " << k;
  }
}

}  // namespace sepal::test

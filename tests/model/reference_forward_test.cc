// The whole forward pass against an independent double-precision Llama written here from the
// Hugging Face definition, on shapes the shared models do not have: head_dim != hidden/heads,
// llama3 RoPE scaling, an untied head, weights stored as BF16 and F16, GQA with 3 query heads per
// key/value head, dimensions that are not multiples of 16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numbers>

#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/synthetic_checkpoint.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using Matrix = std::vector<double>;  // row-major

// A tensor of the checkpoint as doubles.
Matrix load(const Checkpoint& c, const std::string& name) {
  const TensorRef& t = c.get(name);
  Matrix m(static_cast<std::size_t>(t.elements()));
  for (std::size_t i = 0; i < m.size(); ++i) {
    std::uint16_t h;
    switch (t.dtype) {
      case DType::kF32: {
        float f;
        std::memcpy(&f, t.data + 4 * i, 4);
        m[i] = f;
        break;
      }
      case DType::kBF16:
        std::memcpy(&h, t.data + 2 * i, 2);
        m[i] = bf16_to_f32(h);
        break;
      case DType::kF16:
        std::memcpy(&h, t.data + 2 * i, 2);
        m[i] = f16_to_f32(h);
        break;
      case DType::kI8:
        ADD_FAILURE() << name << " is int8; the reference reads float checkpoints";
        return m;
    }
  }
  return m;
}

// y[n, rows] = x[n, cols] · Wᵀ
Matrix linear(const Matrix& x, std::size_t n, const Matrix& w, std::size_t rows, std::size_t cols) {
  Matrix y(n * rows, 0.0);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t k = 0; k < cols; ++k) y[t * rows + r] += x[t * cols + k] * w[r * cols + k];
  return y;
}

Matrix rmsnorm_ref(const Matrix& x, std::size_t n, std::size_t d, const Matrix& w, double eps) {
  Matrix y(x.size());
  for (std::size_t t = 0; t < n; ++t) {
    double ms = 0;
    for (std::size_t i = 0; i < d; ++i) ms += x[t * d + i] * x[t * d + i];
    const double s = 1.0 / std::sqrt(ms / d + eps);
    for (std::size_t i = 0; i < d; ++i) y[t * d + i] = x[t * d + i] * s * w[i];
  }
  return y;
}

// Llama 3.1's frequency rule, written from its published definition.
std::vector<double> llama3_frequencies(std::size_t hd, double theta, double factor, double low,
                                       double high, double old_len) {
  std::vector<double> f(hd / 2);
  for (std::size_t i = 0; i < hd / 2; ++i) {
    const double base = 1.0 / std::pow(theta, static_cast<double>(2 * i) / hd);
    const double wavelen = 2 * std::numbers::pi / base;
    if (wavelen < old_len / high) f[i] = base;
    else if (wavelen > old_len / low) f[i] = base / factor;
    else {
      const double smooth = (old_len / wavelen - low) / (high - low);
      f[i] = (1 - smooth) * base / factor + smooth * base;
    }
  }
  return f;
}

void rotate(Matrix& x, std::size_t n, std::size_t heads, std::size_t hd, const std::vector<double>& freq) {
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t h = 0; h < heads; ++h)
      for (std::size_t i = 0; i < hd / 2; ++i) {
        double& a = x[(t * heads + h) * hd + i];
        double& b = x[(t * heads + h) * hd + i + hd / 2];
        const double c = std::cos(t * freq[i]), s = std::sin(t * freq[i]);
        const double a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = b0 * c + a0 * s;
      }
}

Matrix reference_logits(const std::filesystem::path& dir, const std::vector<std::int32_t>& ids) {
  const ModelConfig cfg = read_model_config(dir);
  const Checkpoint c = Checkpoint::open(dir);
  const std::size_t n = ids.size(), d = cfg.hidden_size, hd = cfg.head_dim, H = cfg.num_heads,
                    KV = cfg.num_kv_heads, F = cfg.intermediate_size, V = cfg.vocab_size;
  const auto freq = llama3_frequencies(hd, cfg.rope_theta, cfg.rope_scaling.factor, cfg.rope_scaling.low_freq_factor,
                                       cfg.rope_scaling.high_freq_factor, cfg.rope_scaling.original_max_position_embeddings);
  const Matrix embed = load(c, "model.embed_tokens.weight");
  Matrix h(n * d);
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t i = 0; i < d; ++i) h[t * d + i] = embed[ids[t] * d + i];
  for (std::int64_t l = 0; l < cfg.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const Matrix x = rmsnorm_ref(h, n, d, load(c, p + "input_layernorm.weight"), cfg.rms_norm_eps);
    Matrix q = linear(x, n, load(c, p + "self_attn.q_proj.weight"), H * hd, d);
    Matrix k = linear(x, n, load(c, p + "self_attn.k_proj.weight"), KV * hd, d);
    const Matrix v = linear(x, n, load(c, p + "self_attn.v_proj.weight"), KV * hd, d);
    rotate(q, n, H, hd, freq);
    rotate(k, n, KV, hd, freq);
    Matrix attn(n * H * hd, 0.0);
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t head = 0; head < H; ++head) {
        const std::size_t g = head / (H / KV);
        std::vector<double> s(t + 1);
        double mx = -1e300, z = 0;
        for (std::size_t u = 0; u <= t; ++u) {
          double dot = 0;
          for (std::size_t i = 0; i < hd; ++i) dot += q[(t * H + head) * hd + i] * k[(u * KV + g) * hd + i];
          s[u] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[u]);
        }
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (std::size_t u = 0; u <= t; ++u)
          for (std::size_t i = 0; i < hd; ++i) attn[(t * H + head) * hd + i] += s[u] / z * v[(u * KV + g) * hd + i];
      }
    const Matrix o = linear(attn, n, load(c, p + "self_attn.o_proj.weight"), d, H * hd);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += o[i];
    const Matrix x2 = rmsnorm_ref(h, n, d, load(c, p + "post_attention_layernorm.weight"), cfg.rms_norm_eps);
    Matrix gate = linear(x2, n, load(c, p + "mlp.gate_proj.weight"), F, d);
    const Matrix up = linear(x2, n, load(c, p + "mlp.up_proj.weight"), F, d);
    for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
    const Matrix down = linear(gate, n, load(c, p + "mlp.down_proj.weight"), d, F);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] += down[i];
  }
  const Matrix normed = rmsnorm_ref(h, n, d, load(c, "model.norm.weight"), cfg.rms_norm_eps);
  return linear(normed, n, load(c, "lm_head.weight"), V, d);
}

class ReferenceForward : public ::testing::TestWithParam<DType> {};

TEST_P(ReferenceForward, LogitsMatchAnIndependentDoubleImplementation) {
  test::TempDir dir;
  SyntheticSpec spec;
  spec.hidden_size = 80;
  spec.num_heads = 6;
  spec.num_kv_heads = 2;
  spec.head_dim = 14;  // q_size 84 != hidden 80
  spec.intermediate_size = 172;
  spec.num_layers = 3;
  spec.vocab_size = 300;
  spec.max_position_embeddings = 64;
  spec.dtype = GetParam();
  spec.seed = 7;
  spec.weight_std = 0.15;  // sharp attention, so that positions and RoPE matter
  write_synthetic_checkpoint(spec, dir.path());
  // Turn on llama3 scaling with a short original context so every branch of the rule is used.
  auto config = nlohmann::json::parse(test::read_file(dir / "config.json"));
  config["rope_theta"] = 50000.0;
  config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 4.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  test::write_file(dir / "config.json", config.dump());

  const std::vector<std::int32_t> ids = {1, 17, 250, 42, 42, 299, 3, 128, 77, 5, 6, 200};
  const Matrix ref = reference_logits(dir.path(), ids);

  const ModelConfig cfg = read_model_config(dir.path());
  ASSERT_EQ(cfg.rope_scaling.kind, RopeScaling::Kind::kLlama3);
  const Checkpoint ckpt = Checkpoint::open(dir.path());
  const ModelEnds ends = ModelEnds::load(ckpt, cfg, DType::kF32);
  const BlockStack blocks = BlockStack::load(ckpt, cfg, 0, cfg.num_layers, DType::kF32);
  // Prompt of 7 (blocked path), then 5 single decode steps (streaming path).
  KvCache cache = blocks.new_cache(32);
  std::vector<float> logits(ids.size() * cfg.vocab_size);
  std::vector<float> hidden(7 * cfg.hidden_size);
  ends.embed(ids.data(), 7, hidden.data());
  blocks.forward(hidden.data(), 7, cache);
  ends.logits(hidden.data(), 7, logits.data());
  for (std::size_t t = 7; t < ids.size(); ++t) {
    ends.embed(&ids[t], 1, hidden.data());
    blocks.forward(hidden.data(), 1, cache);
    ends.logits(hidden.data(), 1, logits.data() + t * cfg.vocab_size);
  }
  EXPECT_LT(test::normalized_error(logits, ref), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(StoredTypes, ReferenceForward,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace sepal

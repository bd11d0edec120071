// BLOOM shapes that are not in ../shared: 12 heads (ALiBi's extra slopes), names without the
// "transformer." prefix as published checkpoints store them, bf16 weights in two shards, the
// width given as n_embed. The logits of a prompt and of each decoded token must be those of a
// float64 implementation written here from Hugging Face's modeling_bloom (fused QKV per head,
// ALiBi from the slopes' definition, LayerNorms, tanh GELU), and speculative trees the same as
// decoding.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "model/generation.h"
#include "model/model_ends.h"
#include "model/safetensors.h"
#include "model/synthetic_checkpoint.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

constexpr int kHidden = 96, kHeads = 12, kLayers = 2, kVocab = 64, kFfn = 4 * kHidden;
constexpr int kHd = kHidden / kHeads;

// Weights as bf16 would hold them, kept as double for the reference.
struct Tensor {
  std::vector<std::int64_t> shape;
  std::vector<double> values;
};

class SyntheticBloom {
 public:
  SyntheticBloom() : rng_(42) {
    add("word_embeddings.weight", {kVocab, kHidden}, 1.0);
    add("word_embeddings_layernorm.weight", {kHidden}, 0.2, 1.0);
    add("word_embeddings_layernorm.bias", {kHidden}, 0.1);
    for (int l = 0; l < kLayers; ++l) {
      const std::string p = "h." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {kHidden}, 0.2, 1.0);
      add(p + "input_layernorm.bias", {kHidden}, 0.1);
      add(p + "self_attention.query_key_value.weight", {3 * kHidden, kHidden}, 0.15);
      add(p + "self_attention.query_key_value.bias", {3 * kHidden}, 0.1);
      add(p + "self_attention.dense.weight", {kHidden, kHidden}, 0.1);
      add(p + "self_attention.dense.bias", {kHidden}, 0.05);
      add(p + "post_attention_layernorm.weight", {kHidden}, 0.2, 1.0);
      add(p + "post_attention_layernorm.bias", {kHidden}, 0.1);
      add(p + "mlp.dense_h_to_4h.weight", {kFfn, kHidden}, 0.1);
      add(p + "mlp.dense_h_to_4h.bias", {kFfn}, 0.05);
      add(p + "mlp.dense_4h_to_h.weight", {kHidden, kFfn}, 0.05);
      add(p + "mlp.dense_4h_to_h.bias", {kHidden}, 0.05);
    }
    add("ln_f.weight", {kHidden}, 0.2, 1.0);
    add("ln_f.bias", {kHidden}, 0.1);
  }

  // Writes the checkpoint: config.json, two bf16 shards and their index.
  void write(const std::filesystem::path& dir) const {
    const nlohmann::json config = {{"architectures", {"BloomForCausalLM"}}, {"n_embed", kHidden}, {"n_layer", kLayers},
                                   {"n_head", kHeads}, {"vocab_size", kVocab}, {"layer_norm_epsilon", 1e-5},
                                   {"bos_token_id", 1}, {"eos_token_id", 2}, {"seq_length", 64}};
    test::write_file(dir / "config.json", config.dump());
    std::vector<TensorToWrite> shards[2];
    nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
    int k = 0;
    for (const auto& [name, t] : tensors_) {
      TensorToWrite w{name, "BF16", t.shape, std::vector<std::byte>(t.values.size() * 2)};
      for (std::size_t i = 0; i < t.values.size(); ++i) {
        const std::uint16_t b = f32_to_bf16(static_cast<float>(t.values[i]));
        std::memcpy(w.bytes.data() + 2 * i, &b, 2);
      }
      const int shard = k++ % 2;
      index["weight_map"][name] = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
      shards[shard].push_back(std::move(w));
    }
    for (int s = 0; s < 2; ++s) write_safetensors(dir / ("model-0000" + std::to_string(s + 1) + "-of-00002.safetensors"), shards[s]);
    test::write_file(dir / "model.safetensors.index.json", index.dump());
  }

  const Tensor& operator[](const std::string& name) const { return tensors_.at(name); }

 private:
  void add(const std::string& name, std::vector<std::int64_t> shape, double scale, double offset = 0.0) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    std::normal_distribution<double> normal(0.0, 1.0);
    Tensor t{std::move(shape), {}};
    for (std::int64_t i = 0; i < n; ++i) t.values.push_back(bf16_to_f32(f32_to_bf16(static_cast<float>(offset + scale * normal(rng_)))));
    tensors_[name] = std::move(t);
  }
  std::mt19937 rng_;
  std::map<std::string, Tensor> tensors_;
};

// ---- the float64 reference ----

std::vector<double> layer_norm(const std::vector<double>& x, const Tensor& w, const Tensor& b) {
  std::vector<double> y(x.size());
  for (std::size_t t = 0; t < x.size() / kHidden; ++t) {
    double mean = 0, var = 0;
    for (int i = 0; i < kHidden; ++i) mean += x[t * kHidden + i] / kHidden;
    for (int i = 0; i < kHidden; ++i) var += (x[t * kHidden + i] - mean) * (x[t * kHidden + i] - mean) / kHidden;
    for (int i = 0; i < kHidden; ++i) y[t * kHidden + i] = (x[t * kHidden + i] - mean) / std::sqrt(var + 1e-5) * w.values[i] + b.values[i];
  }
  return y;
}

std::vector<double> linear(const std::vector<double>& x, const Tensor& w, const Tensor& b) {
  const std::int64_t out = w.shape[0], in = w.shape[1], n = static_cast<std::int64_t>(x.size()) / in;
  std::vector<double> y(static_cast<std::size_t>(n * out));
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t o = 0; o < out; ++o) {
      double acc = b.values[o];
      for (std::int64_t i = 0; i < in; ++i) acc += x[t * in + i] * w.values[o * in + i];
      y[t * out + o] = acc;
    }
  return y;
}

// LoRA on every projection of every block (model/block_adapters.h's layout: block by block, q, k,
// v, o, up, down, each A [rank, in] then B [out, rank]), in float64.
struct ReferenceLora {
  int rank = 0;
  double scaling = 0;
  std::vector<double> values;
  // c (x Aᵀ) Bᵀ of projection `which` (0..5) of block l, for x [n, in].
  std::vector<double> delta(int l, int which, const std::vector<double>& x) const {
    const int ins[] = {kHidden, kHidden, kHidden, kHidden, kHidden, kFfn};
    const int outs[] = {kHidden, kHidden, kHidden, kHidden, kFfn, kHidden};
    std::size_t offset = 0;
    for (int b = 0; b < l; ++b)
      for (int j = 0; j < 6; ++j) offset += static_cast<std::size_t>(rank * (ins[j] + outs[j]));
    for (int j = 0; j < which; ++j) offset += static_cast<std::size_t>(rank * (ins[j] + outs[j]));
    const double* a = values.data() + offset;
    const double* bm = a + rank * ins[which];
    const int in = ins[which], out = outs[which], n = static_cast<int>(x.size()) / in;
    std::vector<double> y(static_cast<std::size_t>(n * out));
    for (int t = 0; t < n; ++t) {
      std::vector<double> low(static_cast<std::size_t>(rank));
      for (int r = 0; r < rank; ++r)
        for (int i = 0; i < in; ++i) low[r] += x[t * in + i] * a[r * in + i];
      for (int o = 0; o < out; ++o)
        for (int r = 0; r < rank; ++r) y[t * out + o] += scaling * low[r] * bm[o * rank + r];
    }
    return y;
  }
};

// The blocks over one sequence of hidden states x [n, hidden] (causal), as modeling_bloom
// computes them; with `lora`, each projection adapted before its bias.
std::vector<double> reference_blocks(const SyntheticBloom& m, std::vector<double> x, const ReferenceLora* lora = nullptr) {
  const int n = static_cast<int>(x.size() / kHidden);
  // ALiBi slopes by their definition: 8 heads' 2^(-8i/8), then 16 heads' odd ones.
  std::vector<double> slopes;
  for (int i = 1; i <= 8; ++i) slopes.push_back(std::pow(2.0, -8.0 * i / 8));
  for (int i = 1; slopes.size() < kHeads; i += 2) slopes.push_back(std::pow(2.0, -8.0 * i / 16));
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    const auto normed = layer_norm(x, m[p + "input_layernorm.weight"], m[p + "input_layernorm.bias"]);
    auto qkv = linear(normed, m[p + "self_attention.query_key_value.weight"], m[p + "self_attention.query_key_value.bias"]);
    if (lora) {  // q, k and v are the fused output's per-head thirds
      for (int which = 0; which < 3; ++which) {
        const auto d = lora->delta(l, which, normed);
        for (int t = 0; t < n; ++t)
          for (int h = 0; h < kHeads; ++h)
            for (int i = 0; i < kHd; ++i) qkv[t * 3 * kHidden + h * 3 * kHd + which * kHd + i] += d[t * kHidden + h * kHd + i];
      }
    }
    std::vector<double> context(x.size());
    for (int h = 0; h < kHeads; ++h) {
      auto at = [&](int t, int which, int i) { return qkv[t * 3 * kHidden + h * 3 * kHd + which * kHd + i]; };
      for (int t = 0; t < n; ++t) {
        std::vector<double> s(static_cast<std::size_t>(t + 1));
        double mx = -1e300, z = 0;
        for (int u = 0; u <= t; ++u) {
          double d = 0;
          for (int i = 0; i < kHd; ++i) d += at(t, 0, i) * at(u, 1, i);
          s[u] = d / std::sqrt(static_cast<double>(kHd)) + slopes[h] * u;
          mx = std::max(mx, s[u]);
        }
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (int i = 0; i < kHd; ++i) {
          double acc = 0;
          for (int u = 0; u <= t; ++u) acc += s[u] / z * at(u, 2, i);
          context[t * kHidden + h * kHd + i] = acc;
        }
      }
    }
    auto attn = linear(context, m[p + "self_attention.dense.weight"], m[p + "self_attention.dense.bias"]);
    auto add = [](std::vector<double>& y, const std::vector<double>& d) {
      for (std::size_t i = 0; i < y.size(); ++i) y[i] += d[i];
    };
    if (lora) add(attn, lora->delta(l, 3, context));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += attn[i];
    const auto normed2 = layer_norm(x, m[p + "post_attention_layernorm.weight"], m[p + "post_attention_layernorm.bias"]);
    auto up = linear(normed2, m[p + "mlp.dense_h_to_4h.weight"], m[p + "mlp.dense_h_to_4h.bias"]);
    if (lora) add(up, lora->delta(l, 4, normed2));
    for (auto& v : up) v = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    auto down = linear(up, m[p + "mlp.dense_4h_to_h.weight"], m[p + "mlp.dense_4h_to_h.bias"]);
    if (lora) add(down, lora->delta(l, 5, up));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  }
  return x;
}

// The blocks over packed sequences of `lengths` rows each (each causal on its own).
std::vector<double> reference_packed(const SyntheticBloom& m, const std::vector<double>& x,
                                     std::span<const std::int64_t> lengths, const ReferenceLora* lora = nullptr) {
  std::vector<double> out;
  std::size_t offset = 0;
  for (const std::int64_t n : lengths) {
    const std::vector<double> one(x.begin() + static_cast<std::ptrdiff_t>(offset),
                                  x.begin() + static_cast<std::ptrdiff_t>(offset + n * kHidden));
    const auto o = reference_blocks(m, one, lora);
    out.insert(out.end(), o.begin(), o.end());
    offset += static_cast<std::size_t>(n * kHidden);
  }
  return out;
}

// Logits of hidden states after the blocks: ln_f, then the tied head.
std::vector<double> reference_head(const SyntheticBloom& m, const std::vector<double>& hidden) {
  const int n = static_cast<int>(hidden.size() / kHidden);
  const auto x = layer_norm(hidden, m["ln_f.weight"], m["ln_f.bias"]);
  std::vector<double> logits(static_cast<std::size_t>(n * kVocab));
  for (int t = 0; t < n; ++t)
    for (int v = 0; v < kVocab; ++v) {
      double acc = 0;
      for (int i = 0; i < kHidden; ++i) acc += x[t * kHidden + i] * m["word_embeddings.weight"].values[v * kHidden + i];
      logits[t * kVocab + v] = acc;
    }
  return logits;
}

// Logits of every position of `ids`, all at once (causal), as modeling_bloom computes them.
std::vector<double> reference_logits(const SyntheticBloom& m, const std::vector<std::int32_t>& ids) {
  const int n = static_cast<int>(ids.size());
  std::vector<double> x(static_cast<std::size_t>(n * kHidden));
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < kHidden; ++i) x[t * kHidden + i] = m["word_embeddings.weight"].values[ids[t] * kHidden + i];
  x = layer_norm(x, m["word_embeddings_layernorm.weight"], m["word_embeddings_layernorm.bias"]);
  return reference_head(m, reference_blocks(m, std::move(x)));
}

TEST(Bloom, TrainingGradientsMatchCentralDifferencesOfTheFloat64Reference) {
  const SyntheticBloom model;
  test::TempDir dir;
  model.write(dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, kLayers, DType::kF32);
  // The blocks: two packed sequences; loss Σ dy · blocks(x).
  const std::vector<std::int64_t> lengths = {7, 5};
  const auto x = test::random_floats(static_cast<std::size_t>(12 * kHidden), 51);
  const auto dy = test::random_floats(x.size(), 52);
  std::vector<float> grad = dy;
  blocks.backward_sequences(x.data(), lengths, 0, kLayers, nullptr, grad.data(), nullptr);
  test::expect_directional(
      [&](const std::vector<double>& at) {
        const auto out = reference_packed(model, at, lengths);
        double s = 0;
        for (std::size_t i = 0; i < out.size(); ++i) s += dy[i] * out[i];
        return s;
      },
      x, grad, 60, 1e-3);
  // The head: cross-entropy through ln_f and the tied head.
  const std::vector<std::int32_t> targets = {5, -1, 17, 63, 0, 40};
  const auto hidden = test::random_floats(targets.size() * kHidden, 53, 2.0f);
  std::vector<float> head_grad(hidden.size());
  ends.cross_entropy(hidden.data(), static_cast<std::int64_t>(targets.size()), targets.data(), 1.0f, head_grad.data());
  test::expect_directional(
      [&](const std::vector<double>& at) {
        const auto logits = reference_head(model, at);
        double s = 0;
        for (std::size_t t = 0; t < targets.size(); ++t) {
          if (targets[t] < 0) continue;
          double top = -1e300, z = 0;
          for (int v = 0; v < kVocab; ++v) top = std::max(top, logits[t * kVocab + v]);
          for (int v = 0; v < kVocab; ++v) z += std::exp(logits[t * kVocab + v] - top);
          s += top + std::log(z) - logits[t * kVocab + targets[t]];
        }
        return s;
      },
      hidden, head_grad, 70, 1e-3);
}

// LoRA on every projection of BLOOM's blocks: the training pass's forward and the cached forward
// against the float64 reference, and the gradients of the input and of every LoRA value against
// its central differences; gate_proj, which BLOOM does not have, is refused.
TEST(Bloom, LoraMatchesTheFloat64ReferenceAndItsCentralDifferences) {
  const SyntheticBloom model;
  test::TempDir dir;
  model.write(dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, kLayers, DType::kF32);
  const AdapterShape shape{AdapterMethod::kLora, 2, 5.0,
                           {Projection::kQ, Projection::kK, Projection::kV, Projection::kO, Projection::kUp, Projection::kDown}};
  validate(shape, config);
  try {
    validate(AdapterShape{AdapterMethod::kLora, 2, 5.0, {Projection::kGate}}, config);
    ADD_FAILURE() << "gate_proj accepted on BLOOM";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no gate_proj"), std::string::npos) << e.what();
  }
  const auto values = test::random_floats(static_cast<std::size_t>(kLayers * shape.values_per_block(config)), 61, 0.3f);
  const BlockAdapters adapters{shape, 0, kLayers, values.data()};
  auto reference = [&](const std::vector<double>& lora_values, const std::vector<double>& x, std::span<const std::int64_t> lengths) {
    const ReferenceLora lora{2, 2.5, lora_values};
    return reference_packed(model, x, lengths, &lora);
  };
  const std::vector<std::int64_t> lengths = {7, 5};
  const auto x = test::random_floats(static_cast<std::size_t>(12 * kHidden), 62);
  const std::vector<double> x0(x.begin(), x.end()), v0(values.begin(), values.end());
  auto out = x;
  blocks.forward_sequences(out.data(), lengths, 0, kLayers, nullptr, &adapters);
  const auto want = reference(v0, x0, lengths);
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(out[i] - want[i]) / (1 + std::abs(want[i])));
  EXPECT_LT(worst, 2e-5) << "adapted forward";
  // The cached forward (a prompt of 4, then decode steps) adapts the same way.
  KvCache cache = blocks.new_cache(8, 0, kLayers);
  std::vector<float> cached(x.begin(), x.begin() + 7 * kHidden);
  blocks.forward(cached.data(), 4, cache, 0, nullptr, &adapters);
  for (std::int64_t t = 4; t < 7; ++t) blocks.forward(cached.data() + t * kHidden, 1, cache, 0, nullptr, &adapters);
  for (std::int64_t i = 0; i < 7 * kHidden; ++i) EXPECT_NEAR(cached[i], out[i], 1e-4 * (1 + std::abs(out[i]))) << i;
  // Gradients of Σ dy · blocks(x).
  const auto dy = test::random_floats(x.size(), 63);
  std::vector<float> grad = dy, lora_grads(values.size(), 0.0f);
  blocks.backward_sequences(x.data(), lengths, 0, kLayers, nullptr, grad.data(), nullptr, &adapters, lora_grads.data());
  auto loss = [&](const std::vector<double>& lora_values, const std::vector<double>& at) {
    const auto o = reference(lora_values, at, lengths);
    double s = 0;
    for (std::size_t i = 0; i < o.size(); ++i) s += dy[i] * o[i];
    return s;
  };
  test::expect_directional([&](const std::vector<double>& v) { return loss(v, x0); }, values, lora_grads, 50, 1e-3);
  test::expect_directional([&](const std::vector<double>& at) { return loss(v0, at); }, x, grad, 60, 1e-3);
}

TEST(Bloom, AnotherShapeMatchesAFloat64Reference) {
  const SyntheticBloom model;
  test::TempDir dir;
  model.write(dir.path());
  const ModelConfig config = read_model_config(dir.path());
  EXPECT_EQ(config.family, ModelFamily::kBloom);
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, kLayers, DType::kF32);
  const std::vector<std::int32_t> ids = {1, 17, 5, 33, 60, 9, 41, 12, 3, 28};
  const auto ref = reference_logits(model, ids);
  // A prompt of 6, then 4 tokens decoded one by one.
  KvCache cache = blocks.new_cache(16);
  std::vector<float> hidden(static_cast<std::size_t>(ids.size() * kHidden)), logits(static_cast<std::size_t>(ids.size() * kVocab));
  ends.embed(ids.data(), 6, hidden.data());
  blocks.forward(hidden.data(), 6, cache);
  for (std::size_t t = 6; t < ids.size(); ++t) {
    ends.embed(&ids[t], 1, hidden.data() + t * kHidden);
    blocks.forward(hidden.data() + t * kHidden, 1, cache);
  }
  ends.logits(hidden.data(), static_cast<std::int64_t>(ids.size()), logits.data());
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    worst = std::max(worst, std::abs(logits[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  EXPECT_LT(worst, 1e-4 * std::max(1.0, scale)) << "largest logit " << scale;
}

TEST(Bloom, SpeculationGivesDecodingsTokens) {
  const SyntheticBloom model;
  test::TempDir dir;
  model.write(dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, kLayers, DType::kF32);
  GenerationRequest request;
  request.prompt_ids = {1, 17, 5, 33};
  request.max_new_tokens = 30;
  for (const std::uint64_t seed : {0u, 1u, 2u}) {
    request.seed = seed;
    request.sampling = seed == 0 ? SamplingParams{} : SamplingParams{0.9f, 0, 1.0f};
    LocalPipeline plain(blocks, session_capacity(config, request));
    const auto want = generate(ends, plain, request, [](std::int32_t) {}).generated_ids;
    LocalPipeline tree(blocks, session_capacity(config, request));
    ModelDraft draft(blocks, 1, ends, session_capacity(config, request));
    const Speculation speculation{&draft, 8, {}};
    EXPECT_EQ(generate(ends, tree, request, [](std::int32_t) {}, &speculation).generated_ids, want) << "seed " << seed;
  }
}

TEST(Bloom, SyntheticCheckpointsLoadAndGenerate) {
  // sepal synth's BLOOM (the decode benchmark's bloom-1.1b preset, here small).
  SyntheticSpec spec;
  spec.architecture = "BloomForCausalLM";
  spec.hidden_size = 64;
  spec.intermediate_size = 256;
  spec.num_layers = 2;
  spec.num_heads = 4;
  spec.num_kv_heads = 4;
  spec.vocab_size = 300;
  spec.tie_word_embeddings = true;
  test::TempDir dir;
  write_synthetic_checkpoint(spec, dir.path());
  const ModelConfig config = read_model_config(dir.path());
  EXPECT_EQ(config.family, ModelFamily::kBloom);
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kI8);
  GenerationRequest request;
  request.prompt_ids = {1, 40, 50};
  request.max_new_tokens = 6;
  LocalPipeline pipeline(blocks, session_capacity(config, request));
  EXPECT_EQ(generate(ends, pipeline, request, [](std::int32_t) {}).generated_ids.size(), 6u);
  spec.intermediate_size = 200;  // not 4 hidden
  EXPECT_THROW(validate(spec), Error);
}

}  // namespace
}  // namespace sepal

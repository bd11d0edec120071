// Loading checkpoints (config, safetensors, dtypes, shards, tied heads), running block ranges
// independently, rollback, and touching only the weights of the blocks a process runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "model/block_stack.h"
#include "model/generation.h"
#include "model/huge_buffer.h"
#include "model/int8_checkpoint.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/fp8.h"
#include "model/mxfp4.h"
#include "model/safetensors.h"
#include "model/synthetic_checkpoint.h"
#include "model/weight_holding.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using nlohmann::json;
using test::TempDir;

// Expects `f` to throw sepal::Error whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "error spans lines: " << e.what();
  }
}

std::string safetensors_blob(const json& header, const std::string& data) {
  std::string h = header.dump();
  std::uint64_t len = h.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &len, 8);
  return out + h + data;
}

std::map<std::string, TensorRef> parse_blob(const TempDir& dir, const std::string& blob) {
  test::write_file(dir / "x.safetensors", blob);
  return read_safetensors(MappedFile::open(dir / "x.safetensors"));
}

// ---- config.json ----

const char* kGoodConfig = R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":172,
  "num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":4,"vocab_size":100,
  "max_position_embeddings":32,"rms_norm_eps":1e-5,"bos_token_id":1,"eos_token_id":[2,3]})";

TEST(ModelConfig, ParsesFieldsAndDefaults) {
  const ModelConfig c = parse_model_config(kGoodConfig, "config.json");
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.eos_token_ids, (std::vector<std::int32_t>{2, 3}));
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
}

// A folder's prompts start with config.json's BOS unless tokenizer_config.json says its tokenizer
// adds none (Qwen2); a tokenizer_config.json that is not JSON is an error, not ignored.
TEST(ModelConfig, TokenizerConfigDecidesWhetherPromptsStartWithBos) {
  const test::TempDir dir;
  test::write_file(dir / "config.json", kGoodConfig);
  EXPECT_EQ(read_model_config(dir.path()).bos_token_id, 1);
  test::write_file(dir / "tokenizer_config.json", R"({"add_bos_token": true, "bos_token": "<s>"})");
  EXPECT_EQ(read_model_config(dir.path()).bos_token_id, 1);
  test::write_file(dir / "tokenizer_config.json", R"({"add_bos_token": false, "bos_token": null})");
  EXPECT_EQ(read_model_config(dir.path()).bos_token_id, -1);
  test::write_file(dir / "tokenizer_config.json", "{not json");
  EXPECT_THROW((void)read_model_config(dir.path()), Error);
}

// generation_config.json's EOS ids are what generation stops at, as transformers' generate() takes
// them (Phi-3's <|end|>, Llama 3's <|eot_id|> are only there); a bad one is one line.
TEST(ModelConfig, GenerationConfigNamesTheEosIds) {
  const test::TempDir dir;
  test::write_file(dir / "config.json", kGoodConfig);
  EXPECT_EQ(read_model_config(dir.path()).eos_token_ids, (std::vector<std::int32_t>{2, 3}));
  test::write_file(dir / "generation_config.json", R"({"bos_token_id": 1, "eos_token_id": [2, 7, 9]})");
  EXPECT_EQ(read_model_config(dir.path()).eos_token_ids, (std::vector<std::int32_t>{2, 7, 9}));
  test::write_file(dir / "generation_config.json", R"({"eos_token_id": 4, "do_sample": true})");
  EXPECT_EQ(read_model_config(dir.path()).eos_token_ids, (std::vector<std::int32_t>{4}));
  test::write_file(dir / "generation_config.json", R"({"temperature": 0.6})");  // none named: config.json's
  EXPECT_EQ(read_model_config(dir.path()).eos_token_ids, (std::vector<std::int32_t>{2, 3}));
  test::write_file(dir / "generation_config.json", R"({"eos_token_id": [2, 100]})");
  expect_error([&] { (void)read_model_config(dir.path()); }, "eos_token_id 100 is outside the vocabulary (100)");
  test::write_file(dir / "generation_config.json", R"({"eos_token_id": "2"})");
  expect_error([&] { (void)read_model_config(dir.path()); }, "must be a token id");
  test::write_file(dir / "generation_config.json", "[1, 2");
  expect_error([&] { (void)read_model_config(dir.path()); }, "not a JSON object");
}

TEST(ModelConfig, ReadsHeadDimAndLlama3Scaling) {
  json j = json::parse(kGoodConfig);
  j["head_dim"] = 16;
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const ModelConfig c = parse_model_config(j.dump(), "config.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.q_size(), 128);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
}

// YaRN (Qwen2.5's and Qwen3's long context, DeepSeek's): its parameters and Hugging Face's
// defaults, the attention factor 0.1 ln(factor) + 1 (or DeepSeek's ratio), and the context
// stretched to the original times the factor; bad values refused in one line.
TEST(ModelConfig, ReadsYarnAndStretchesTheContext) {
  json j = json::parse(kGoodConfig);
  j["max_position_embeddings"] = 32768;
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  const ModelConfig c = parse_model_config(j.dump(), "config.json");
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kYarn);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.original_max_position_embeddings, 32768.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_TRUE(c.rope_scaling.truncate);
  EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor, 0.1 * std::log(4.0) + 1.0);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  // Without an original context: max_position_embeddings is it.
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 2.0}, {"beta_fast", 16}, {"beta_slow", 2}, {"truncate", false}};
  const ModelConfig plain = parse_model_config(j.dump(), "config.json");
  EXPECT_DOUBLE_EQ(plain.rope_scaling.original_max_position_embeddings, 32768.0);
  EXPECT_EQ(plain.max_position_embeddings, 65536);
  EXPECT_DOUBLE_EQ(plain.rope_scaling.beta_fast, 16.0);
  EXPECT_FALSE(plain.rope_scaling.truncate);
  // DeepSeek's mscale and mscale_all_dim, and an attention factor given outright.
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 40.0}, {"mscale", 1.0}, {"mscale_all_dim", 0.5},
                       {"original_max_position_embeddings", 4096}};
  EXPECT_DOUBLE_EQ(parse_model_config(j.dump(), "c").rope_scaling.attention_factor,
                   (0.1 * std::log(40.0) + 1.0) / (0.05 * std::log(40.0) + 1.0));
  j["rope_scaling"]["attention_factor"] = 1.5;
  EXPECT_DOUBLE_EQ(parse_model_config(j.dump(), "c").rope_scaling.attention_factor, 1.5);
  const std::pair<json, const char*> bad[] = {
      {{{"type", "yarn"}}, "rope_scaling needs 'factor'"},
      {{{"type", "yarn"}, {"factor", 4.0}, {"beta_fast", 1}, {"beta_slow", 2}}, "beta_fast must exceed beta_slow"},
      {{{"type", "yarn"}, {"factor", 4.0}, {"truncate", "yes"}}, "'truncate' must be true or false"},
      {{{"type", "yarn"}, {"factor", -1.0}}, "'factor' must be positive"},
      {{{"type", "dynamic"}, {"factor", 2.0}}, "supported: linear, llama3, longrope, yarn, default"}};
  for (const auto& [scaling, message] : bad) {
    j["rope_scaling"] = scaling;
    expect_error([&] { (void)parse_model_config(j.dump(), "config.json"); }, message);
  }
}

// Mixtures of experts as transformers reads their configs: Mixtral's num_local_experts of
// intermediate_size, always renormalised; Qwen3-MoE's num_experts of moe_intermediate_size,
// norm_topk_prob (false when absent), dense blocks from mlp_only_layers and decoder_sparse_step;
// bad values refused in one line.
TEST(ModelConfig, ReadsMixturesOfExperts) {
  json j = json::parse(kGoodConfig);
  j["architectures"] = {"MixtralForCausalLM"};
  j["num_local_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["sliding_window"] = nullptr;
  const ModelConfig mixtral = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(mixtral.mixture_of_experts() && mixtral.num_experts == 8 && mixtral.experts_per_token == 2);
  EXPECT_EQ(mixtral.moe_intermediate_size, mixtral.intermediate_size);
  EXPECT_TRUE(mixtral.moe_renormalize && mixtral.dense_layers.empty() && !mixtral.any_dense_block());
  EXPECT_EQ(mixtral.sliding_window, 0);
  for (std::int64_t l = 0; l < mixtral.num_layers; ++l) EXPECT_TRUE(mixtral.sparse_block(l));
  json k = j;
  k.erase("num_local_experts");
  expect_error([&] { (void)parse_model_config(k.dump(), "c"); }, "missing 'num_local_experts'");
  k = j;
  k["num_experts_per_tok"] = 9;
  expect_error([&] { (void)parse_model_config(k.dump(), "c"); }, "num_experts_per_tok 9 is more than the 8 experts");
  k["num_local_experts"] = 5000;
  expect_error([&] { (void)parse_model_config(k.dump(), "c"); }, "more than the limit of 4096");

  json q = json::parse(kGoodConfig);
  q["architectures"] = {"Qwen3MoeForCausalLM"};
  q["num_hidden_layers"] = 6;
  q["num_experts"] = 128;
  q["num_experts_per_tok"] = 8;
  q["moe_intermediate_size"] = 96;
  q["decoder_sparse_step"] = 2;
  q["mlp_only_layers"] = {3};
  const ModelConfig qwen = parse_model_config(q.dump(), "config.json");
  EXPECT_TRUE(qwen.qk_norm && qwen.num_experts == 128 && qwen.experts_per_token == 8 && qwen.moe_intermediate_size == 96);
  EXPECT_FALSE(qwen.moe_renormalize);  // transformers' default for norm_topk_prob
  EXPECT_EQ(qwen.dense_layers, (std::vector<std::int64_t>{0, 2, 3, 4}));  // (l + 1) % 2 != 0, and block 3
  EXPECT_TRUE(qwen.sparse_block(1) && qwen.sparse_block(5) && !qwen.sparse_block(3) && qwen.any_dense_block());
  EXPECT_EQ(qwen.widest_mlp(), qwen.intermediate_size);
  q["norm_topk_prob"] = true;
  EXPECT_TRUE(parse_model_config(q.dump(), "c").moe_renormalize);
  json q2 = q;  // Qwen2-MoE: Qwen2's biases and a shared expert
  q2["architectures"] = {"Qwen2MoeForCausalLM"};
  q2["shared_expert_intermediate_size"] = 200;
  const ModelConfig qwen2 = parse_model_config(q2.dump(), "config.json");
  EXPECT_TRUE(qwen2.attention_bias && !qwen2.qk_norm && qwen2.shared_expert_intermediate_size == 200 && qwen2.widest_mlp() == 200);
  q2.erase("shared_expert_intermediate_size");
  expect_error([&] { (void)parse_model_config(q2.dump(), "c"); }, "missing 'shared_expert_intermediate_size'");
  const std::pair<std::pair<const char*, json>, const char*> bad[] = {
      {{"mlp_only_layers", {6}}, "mlp_only_layers holds 6 (block indices from 0 to 5)"},
      {{"mlp_only_layers", "3"}, "'mlp_only_layers' must be a list of block indices"},
      {{"norm_topk_prob", 1}, "'norm_topk_prob' must be true or false"},
      {{"decoder_sparse_step", 0}, "'decoder_sparse_step' must be positive"},
      {{"moe_intermediate_size", nullptr}, "missing 'moe_intermediate_size'"}};
  for (const auto& [field, message] : bad) {
    json b = q;
    b[field.first] = field.second;
    expect_error([&] { (void)parse_model_config(b.dump(), "config.json"); }, message);
  }
}

// Granite 3's config.json (granite-3.3-2b-instruct's values): its four multipliers; transformers'
// defaults of 1 where absent; bad values refused in one line.
TEST(ModelConfig, ReadsGranitesMultipliers) {
  json g = json::parse(R"({"architectures": ["GraniteForCausalLM"], "attention_bias": false, "attention_multiplier": 0.015625,
      "bos_token_id": 0, "embedding_multiplier": 12.0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 2048,
      "intermediate_size": 8192, "logits_scaling": 8.0, "max_position_embeddings": 131072, "mlp_bias": false,
      "model_type": "granite", "num_attention_heads": 32, "num_hidden_layers": 40, "num_key_value_heads": 8,
      "residual_multiplier": 0.22, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000000.0,
      "tie_word_embeddings": true, "vocab_size": 49159})");
  const ModelConfig c = parse_model_config(g.dump(), "config.json");
  EXPECT_EQ(c.embedding_scale, 12.0f);
  EXPECT_EQ(c.attention_scale, 0.015625f);
  EXPECT_EQ(c.attention_dims().scale, 0.015625f);
  EXPECT_EQ(c.residual_scale, 0.22f);
  EXPECT_EQ(c.logit_divisor, 8.0f);
  EXPECT_TRUE(c.tie_word_embeddings && c.head_dim == 64);
  for (const char* key : {"embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling"}) g.erase(key);
  const ModelConfig plain = parse_model_config(g.dump(), "config.json");
  EXPECT_TRUE(plain.embedding_scale == 1.0f && plain.attention_scale == 1.0f && plain.residual_scale == 1.0f &&
              plain.logit_divisor == 1.0f);
  g["logits_scaling"] = 0;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "'logits_scaling' must be positive");
  g["logits_scaling"] = 1e300;  // past float's range: it would divide every logit to 0
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "'logits_scaling' is 1e+300, outside the limits of 1e-30 to 1e30");
  g["logits_scaling"] = 1e-300;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "'logits_scaling' is 1e-300, outside the limits");
  g["logits_scaling"] = 8;
  g["mlp_bias"] = true;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "mlp_bias=true is not supported");
}

// OLMo 2's, OLMoE's and OLMo 3's configs as Ai2 published them (OLMo-2-1124-7B, OLMoE-1B-7B-0924,
// Olmo-3-1025-7B with its 32 layer_types shortened to 8 layers).
TEST(ModelConfig, ReadsOlmo) {
  json o2 = json::parse(R"({"architectures": ["Olmo2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 100257, "eos_token_id": 100257, "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008,
      "max_position_embeddings": 4096, "model_type": "olmo2", "num_attention_heads": 32, "num_hidden_layers": 32,
      "num_key_value_heads": 32, "pad_token_id": 100277, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 500000,
      "tie_word_embeddings": false, "vocab_size": 100352})");
  const ModelConfig olmo2 = parse_model_config(o2.dump(), "config.json");
  EXPECT_TRUE(olmo2.output_norms && !olmo2.input_norms && olmo2.qk_norm && olmo2.qk_norm_across_heads);
  EXPECT_EQ(olmo2.q_norm_width(), 4096);
  EXPECT_EQ(olmo2.k_norm_width(), 4096);
  EXPECT_TRUE(olmo2.layer_windows.empty() && olmo2.sliding_window == 0 && olmo2.local_rope_theta == 0);
  o2["clip_qkv"] = 8;
  expect_error([&] { (void)parse_model_config(o2.dump(), "c"); }, "clip_qkv");
  o2.erase("clip_qkv");
  o2["attention_bias"] = true;
  expect_error([&] { (void)parse_model_config(o2.dump(), "c"); }, "attention_bias=true");

  const json oe = json::parse(R"({"architectures": ["OlmoeForCausalLM"], "attention_bias": false, "clip_qkv": null,
      "eos_token_id": 50279, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 1024,
      "max_position_embeddings": 4096, "model_type": "olmoe", "norm_topk_prob": false, "num_attention_heads": 16,
      "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 16, "num_key_value_heads": 16,
      "output_router_logits": false, "pad_token_id": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
      "router_aux_loss_coef": 0.01, "tie_word_embeddings": false, "vocab_size": 50304})");
  const ModelConfig olmoe = parse_model_config(oe.dump(), "config.json");
  EXPECT_TRUE(olmoe.input_norms && !olmoe.output_norms && olmoe.qk_norm_across_heads);
  EXPECT_TRUE(olmoe.num_experts == 64 && olmoe.experts_per_token == 8 && olmoe.moe_intermediate_size == 1024 &&
              !olmoe.moe_renormalize && olmoe.dense_layers.empty() && olmoe.sparse_block(15));

  json o3 = json::parse(R"({"architectures": ["Olmo3ForCausalLM"], "attention_bias": false, "eos_token_id": 100257,
      "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008, "max_position_embeddings": 65536,
      "model_type": "olmo3", "num_attention_heads": 32, "num_hidden_layers": 8, "num_key_value_heads": 32,
      "pad_token_id": 100277, "rms_norm_eps": 1e-06, "rope_theta": 500000, "sliding_window": 4096,
      "rope_scaling": {"attention_factor": 1.2079441541679836, "beta_fast": 32, "beta_slow": 1, "factor": 8.0,
                       "original_max_position_embeddings": 8192, "rope_type": "yarn"},
      "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention",
                      "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
      "tie_word_embeddings": false, "vocab_size": 100278})");
  const ModelConfig olmo3 = parse_model_config(o3.dump(), "config.json");
  EXPECT_TRUE(olmo3.output_norms && !olmo3.input_norms && olmo3.qk_norm_across_heads);
  EXPECT_EQ(olmo3.layer_windows, (std::vector<std::int64_t>{4096, 4096, 4096, 0, 4096, 4096, 4096, 0}));
  EXPECT_EQ(olmo3.rope_scaling.kind, RopeScaling::Kind::kYarn);
  EXPECT_EQ(olmo3.local_rope_theta, 500000.0);  // the sliding blocks' RoPE: rope_theta's, unscaled
  EXPECT_TRUE(olmo3.local_rope_of(0) && !olmo3.local_rope_of(3));
  EXPECT_EQ(olmo3.rope_magnitude(0), 1.0);
  EXPECT_DOUBLE_EQ(olmo3.rope_magnitude(3), 1.2079441541679836);
  o3.erase("layer_types");
  o3.erase("sliding_window");
  const ModelConfig defaults = parse_model_config(o3.dump(), "config.json");  // transformers' defaults: 4096, 3 of 4
  EXPECT_EQ(defaults.layer_windows, olmo3.layer_windows);
  o3["layer_types"] = {"sliding_attention"};
  expect_error([&] { (void)parse_model_config(o3.dump(), "c"); }, "'layer_types' must list one type per layer (8)");
  o3.erase("layer_types");
  o3["sliding_window"] = 0;
  expect_error([&] { (void)parse_model_config(o3.dump(), "c"); }, "'sliding_window' must be positive");
}

// SmolLM3-3B's config: every fourth of its 36 blocks without RoPE, listed; without the list,
// no_rope_layer_interval's (4 by default); use_sliding_window puts the window on those blocks.
TEST(ModelConfig, ReadsSmolLM3) {
  json j = json::parse(R"({"architectures": ["SmolLM3ForCausalLM"], "attention_bias": false, "bos_token_id": null,
      "eos_token_id": 128012, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 11008,
      "max_position_embeddings": 65536, "mlp_bias": false, "model_type": "smollm3", "num_attention_heads": 16,
      "num_hidden_layers": 36, "num_key_value_heads": 4, "pad_token_id": 128004, "rms_norm_eps": 1e-06,
      "rope_scaling": null, "rope_theta": 5000000.0, "sliding_window": null, "use_sliding_window": false,
      "tie_word_embeddings": true, "vocab_size": 128256})");
  j["no_rope_layers"] = json::array();
  for (int l = 0; l < 36; ++l) j["no_rope_layers"].push_back((l + 1) % 4 != 0 ? 1 : 0);
  const ModelConfig c = parse_model_config(j.dump(), "config.json");
  ASSERT_EQ(c.rope_layers.size(), 36u);
  for (int l = 0; l < 36; ++l) EXPECT_EQ(c.rotates(l), (l + 1) % 4 != 0) << l;
  EXPECT_TRUE(c.layer_windows.empty() && c.tie_word_embeddings && c.rope_theta == 5000000.0);
  j.erase("no_rope_layers");
  j["no_rope_layer_interval"] = 3;
  j.erase("rope_theta");
  const ModelConfig every_third = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(every_third.rotates(0) && every_third.rotates(1) && !every_third.rotates(2) && !every_third.rotates(35));
  EXPECT_EQ(every_third.rope_theta, 2000000.0);  // transformers' default for SmolLM3
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4096;
  const ModelConfig windowed = parse_model_config(j.dump(), "config.json");
  EXPECT_EQ(windowed.window_of(2), 4096);
  EXPECT_EQ(windowed.window_of(3), 0);
  j["no_rope_layers"] = {1, 0};
  expect_error([&] { (void)parse_model_config(j.dump(), "c"); }, "'no_rope_layers' must list 1 (RoPE) or 0 (none) for each of the 36 layers");
  j["no_rope_layers"] = json::array();
  for (int l = 0; l < 36; ++l) j["no_rope_layers"].push_back(l == 5 ? 2 : 1);
  expect_error([&] { (void)parse_model_config(j.dump(), "c"); }, "no_rope_layers[5] is 2");
}

// A Granite-MoE config of granite-3.1-1b-a400m's kind: Granite's multipliers and 8 of 32 experts
// of intermediate_size, renormalised (the softmax of the top logits); the shared-expert variant's
// shared MLP, ungated, none where its width is 0.
TEST(ModelConfig, ReadsGraniteMoe) {
  json g = json::parse(R"({"architectures": ["GraniteMoeForCausalLM"], "attention_bias": false, "attention_multiplier": 0.015625,
      "bos_token_id": 0, "embedding_multiplier": 12.0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 1024,
      "intermediate_size": 512, "logits_scaling": 6.0, "max_position_embeddings": 131072, "model_type": "granitemoe",
      "num_attention_heads": 16, "num_experts_per_tok": 8, "num_hidden_layers": 24, "num_key_value_heads": 8,
      "num_local_experts": 32, "residual_multiplier": 0.22, "rms_norm_eps": 1e-06, "rope_scaling": null,
      "rope_theta": 10000000.0, "router_aux_loss_coef": 0.0, "tie_word_embeddings": true, "vocab_size": 49155})");
  const ModelConfig c = parse_model_config(g.dump(), "config.json");
  EXPECT_TRUE(c.num_experts == 32 && c.experts_per_token == 8 && c.moe_intermediate_size == 512 && c.moe_renormalize &&
              c.dense_layers.empty());
  EXPECT_TRUE(c.embedding_scale == 12.0f && c.attention_scale == 0.015625f && c.residual_scale == 0.22f && c.logit_divisor == 6.0f);
  g["num_experts_per_tok"] = 33;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "num_experts_per_tok 33 is more than the 32 experts");
  EXPECT_EQ(c.shared_expert_intermediate_size, 0);
  g["num_experts_per_tok"] = 8;
  g["architectures"] = {"GraniteMoeSharedForCausalLM"};
  g["shared_intermediate_size"] = 1024;
  const ModelConfig shared = parse_model_config(g.dump(), "config.json");
  EXPECT_TRUE(shared.num_experts == 32 && shared.moe_intermediate_size == 512 && shared.shared_expert_intermediate_size == 1024 &&
              !shared.shared_expert_gated && shared.residual_scale == 0.22f);
  g["shared_intermediate_size"] = 0;
  EXPECT_EQ(parse_model_config(g.dump(), "config.json").shared_expert_intermediate_size, 0);
  g["shared_intermediate_size"] = -1;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "'shared_intermediate_size' must be an integer from 0");
}

// Configs of Command R's kind (Cohere: LayerNorms, parallel blocks, logit_scale; use_qk_norm as
// Command R+) and Command R7B's (Cohere 2: a window on 3 of every 4 blocks, which alone rotate).
TEST(ModelConfig, ReadsCohere) {
  json j = json::parse(R"({"architectures": ["CohereForCausalLM"], "attention_bias": false, "bos_token_id": 5,
      "eos_token_id": 255001, "hidden_act": "silu", "hidden_size": 8192, "intermediate_size": 22528,
      "layer_norm_eps": 1e-05, "logit_scale": 0.0625, "max_position_embeddings": 8192, "model_type": "cohere",
      "num_attention_heads": 64, "num_hidden_layers": 40, "num_key_value_heads": 64, "rope_theta": 8000000.0,
      "use_qk_norm": false, "vocab_size": 256000})");
  const ModelConfig c = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(c.layer_norms && c.parallel_block && c.rope_adjacent_pairs && !c.qk_norm && !c.qk_norm_per_head_weights);
  EXPECT_TRUE(c.logit_divisor == 16.0f && c.rms_norm_eps == 1e-5 && c.tie_word_embeddings && c.rope_layers.empty());
  j["use_qk_norm"] = true;
  j.erase("logit_scale");
  j.erase("layer_norm_eps");
  const ModelConfig plus = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(plus.qk_norm && plus.qk_norm_per_head_weights && !plus.qk_norm_across_heads && plus.q_norm_width() == 128);
  EXPECT_TRUE(plus.logit_divisor == 16.0f && plus.rms_norm_eps == 1e-5);  // transformers' defaults
  j["use_qk_norm"] = "yes";
  expect_error([&] { (void)parse_model_config(j.dump(), "c"); }, "'use_qk_norm' must be true or false");
  j["use_qk_norm"] = false;
  j["logit_scale"] = -1;
  expect_error([&] { (void)parse_model_config(j.dump(), "c"); }, "'logit_scale' must be positive");
  j["logit_scale"] = 0.0625;
  j["attention_bias"] = true;
  expect_error([&] { (void)parse_model_config(j.dump(), "c"); }, "attention_bias=true");

  json r7b = json::parse(R"({"architectures": ["Cohere2ForCausalLM"], "attention_bias": false, "bos_token_id": 5,
      "eos_token_id": 255001, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
      "layer_norm_eps": 1e-05, "logit_scale": 0.25, "max_position_embeddings": 8192, "model_type": "cohere2",
      "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rope_theta": 50000,
      "sliding_window": 4096, "sliding_window_pattern": 4, "vocab_size": 256000})");
  const ModelConfig c2 = parse_model_config(r7b.dump(), "config.json");
  EXPECT_TRUE(c2.layer_norms && c2.parallel_block && c2.rope_adjacent_pairs && !c2.qk_norm && c2.logit_divisor == 4.0f);
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(c2.window_of(l), (l + 1) % 4 != 0 ? 4096 : 0) << l;
    EXPECT_EQ(c2.rotates(l), (l + 1) % 4 != 0) << l;
  }
  r7b["layer_types"] = json::array();  // newer configs list them
  for (int l = 0; l < 32; ++l) r7b["layer_types"].push_back(l < 2 ? "full_attention" : "sliding_attention");
  const ModelConfig listed = parse_model_config(r7b.dump(), "config.json");
  EXPECT_TRUE(!listed.rotates(0) && !listed.rotates(1) && listed.rotates(3) && listed.window_of(3) == 4096 && listed.window_of(1) == 0);
  r7b["sliding_window"] = 0;
  expect_error([&] { (void)parse_model_config(r7b.dump(), "c"); }, "'sliding_window' must be positive");
}

// Configs of GLM-4-9B-0414's kind (Glm4ForCausalLM) and glm-4-9b-chat-hf's (GlmForCausalLM): q, k
// and v biases, half of each head rotating in adjacent pairs, gate and up fused; GLM-4's output norms.
TEST(ModelConfig, ReadsGlm) {
  json j = json::parse(R"({"architectures": ["Glm4ForCausalLM"], "attention_bias": true, "eos_token_id": [151329, 151336, 151338],
      "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 13696, "max_position_embeddings": 32768,
      "model_type": "glm4", "num_attention_heads": 32, "num_hidden_layers": 40, "num_key_value_heads": 2, "pad_token_id": 151329,
      "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false, "vocab_size": 151552})");
  const ModelConfig c = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(c.attention_bias && !c.attention_output_bias && c.rope_adjacent_pairs && c.fused_gate_up && !c.fused_qkv);
  EXPECT_TRUE(c.output_norms && c.input_norms && c.rope_dims() == 64 && c.eos_token_ids.size() == 3);
  j["architectures"] = {"GlmForCausalLM"};
  j.erase("partial_rotary_factor");
  j.erase("attention_bias");
  const ModelConfig glm = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(glm.attention_bias && !glm.output_norms && glm.rope_dims() == 64);  // transformers' defaults: biases, half
  j["attention_bias"] = false;
  j["partial_rotary_factor"] = 1.0;
  const ModelConfig plain = parse_model_config(j.dump(), "config.json");
  EXPECT_TRUE(!plain.attention_bias && plain.rope_dims() == 128);
  j["attention_bias"] = nullptr;  // as absent
  EXPECT_TRUE(parse_model_config(j.dump(), "config.json").attention_bias);
  j["attention_bias"] = "yes";
  expect_error([&] { (void)parse_model_config(j.dump(), "c"); }, "'attention_bias' must be true or false");
}

// openai/gpt-oss-20b's config.json (its 12 pairs of layer types shortened to the 24 they list).
TEST(ModelConfig, ReadsGptOss) {
  json g = json::parse(R"({"architectures": ["GptOssForCausalLM"], "attention_bias": true, "attention_dropout": 0.0,
      "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880,
      "initial_context_length": 4096, "initializer_range": 0.02, "intermediate_size": 2880, "max_position_embeddings": 131072,
      "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24,
      "num_key_value_heads": 8, "num_local_experts": 32, "output_router_logits": false, "pad_token_id": 199999,
      "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
        "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
      "rms_norm_eps": 1e-05, "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
        "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false},
      "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
      "tie_word_embeddings": false, "use_cache": true, "vocab_size": 201088})");
  g["layer_types"] = json::array();
  for (int l = 0; l < 24; ++l) g["layer_types"].push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
  const ModelConfig c = parse_model_config(g.dump(), "config.json");
  EXPECT_TRUE(c.num_experts == 32 && c.experts_per_token == 4 && c.moe_intermediate_size == 2880 && c.moe_renormalize &&
              c.expert_biases && c.swiglu_limit == 7.0f && c.mlp_activation == GateActivation::kClampedSwiglu);
  EXPECT_TRUE(c.attention_bias && c.attention_output_bias && c.attention_sinks && c.head_dim == 64 && c.q_size() == 4096);
  EXPECT_EQ(c.window_of(0), 128);
  EXPECT_EQ(c.window_of(1), 0);
  EXPECT_EQ(c.window_of(22), 128);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::kYarn);
  EXPECT_FALSE(c.rope_scaling.truncate);
  EXPECT_NEAR(c.rope_scaling.attention_factor, 0.1 * std::log(32.0) + 1, 1e-12);
  EXPECT_DOUBLE_EQ(c.rope_theta, 150000.0);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.eos_token_ids, std::vector<std::int32_t>{200002});
  EXPECT_FALSE(c.tie_word_embeddings);
  g.erase("layer_types");  // transformers' default: every other block slides, from the first
  EXPECT_EQ(parse_model_config(g.dump(), "c").window_of(0), 128);
  EXPECT_EQ(parse_model_config(g.dump(), "c").window_of(1), 0);
  // GPTQ and AWQ (model/packed_integers.h): the settings sepal reads, and those it refuses by name.
  g["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}, {"desc_act", true}};
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  g["quantization_config"]["bits"] = 3;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "gptq 3-bit weights are not supported (2, 4 and 8 bits are)");
  g["quantization_config"]["bits"] = 4;
  g["quantization_config"]["group_size"] = 0;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "group_size must be a whole number above 0, or -1");
  g["quantization_config"]["group_size"] = -1;
  g["quantization_config"]["checkpoint_format"] = "marlin";
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "gptq checkpoint_format \"marlin\" is not supported");
  g["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}, {"zero_point", true}, {"version", "GEMM"}};
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  g["quantization_config"]["version"] = "gemv";
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "awq version \"gemv\" is not supported");
  g["quantization_config"]["version"] = "gemm";
  g["quantization_config"]["zero_point"] = false;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "awq without zero points is not supported");
  g["quantization_config"] = {{"quant_method", "bitsandbytes"}, {"load_in_4bit", true}, {"bnb_4bit_quant_type", "nf4"}};
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  g["quantization_config"]["bnb_4bit_quant_type"] = "int4";
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "bnb_4bit_quant_type \"int4\" is not supported (nf4 and fp4 are)");
  g["quantization_config"] = {{"quant_method", "hqq"}};
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "quantization_config 'hqq' is not supported");
  g["quantization_config"] = {{"quant_method", "bitsandbytes"}, {"load_in_8bit", true}};
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  // Block-wise FP8 (DeepSeek-V3's, Qwen3's -FP8): E4M3, dynamic activations, two block sides.
  g["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                              {"weight_block_size", {128, 128}}};
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  g["quantization_config"]["activation_scheme"] = "static";
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "activation_scheme 'static' is not supported");
  g["quantization_config"]["activation_scheme"] = "dynamic";
  g["quantization_config"]["fmt"] = "e5m2";
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "fmt 'e5m2' is not supported");
  g["quantization_config"]["fmt"] = "e4m3";
  g["quantization_config"]["weight_block_size"] = {128, 0};
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "weight_block_size must be two whole numbers");
  // compressed-tensors' FP8 (llm-compressor's FP8-dynamic): a scale a row, activations on the fly.
  json group = {{"targets", {"Linear"}},
                {"weights", {{"num_bits", 8}, {"type", "float"}, {"symmetric", true}, {"strategy", "channel"}, {"dynamic", false}}},
                {"input_activations", {{"num_bits", 8}, {"type", "float"}, {"strategy", "token"}, {"dynamic", true}}}};
  g["quantization_config"] = {{"quant_method", "compressed-tensors"}, {"format", "float-quantized"},
                              {"config_groups", {{"group_0", group}}}, {"ignore", {"lm_head"}}};
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  g["quantization_config"]["config_groups"]["group_0"]["input_activations"]["dynamic"] = false;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "group 'group_0': static input activation scales are not supported");
  g["quantization_config"]["config_groups"]["group_0"]["input_activations"] = nullptr;  // weights only
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  g["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "group";
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "a scale a row (channel) or a tensor");
  g["quantization_config"]["config_groups"]["group_0"]["weights"]["type"] = "int";
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "weights must be 8-bit floats");
  g["quantization_config"]["format"] = "pack-quantized";  // integers: W4A16, W8A16
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "strategy 'group' needs a group_size");
  g["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 128;
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  g["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 3;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "3-bit weights are not supported");
  // int-quantized: W8A8's int8 weights, activations quantized on the fly (computed in sepal's own
  // precision instead), never from static scales.
  g["quantization_config"]["format"] = "int-quantized";
  g["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 4;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "int-quantized weights must be 8-bit, not 4-bit");
  g["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 8;
  g["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "tensor";
  g["quantization_config"]["config_groups"]["group_0"]["input_activations"] = {{"num_bits", 8}, {"type", "int"}, {"dynamic", true}};
  EXPECT_NO_THROW((void)parse_model_config(g.dump(), "c"));
  g["quantization_config"]["config_groups"]["group_0"]["input_activations"]["dynamic"] = false;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "static input activation scales are not supported");
  g["quantization_config"]["format"] = "marlin-24";
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "format \"marlin-24\" is not supported");
  g.erase("quantization_config");
  g["swiglu_limit"] = -1;
  expect_error([&] { (void)parse_model_config(g.dump(), "c"); }, "'swiglu_limit' must be positive");
}

TEST(ModelConfig, ReadsBloom) {
  const ModelConfig c = read_model_config(test::models_dir() / "bloom-synth");
  EXPECT_EQ(c.family, ModelFamily::kBloom);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.num_layers, 3);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  // Published BLOOM configs name the width n_embed.
  const json bloom = {{"architectures", {"BloomForCausalLM"}}, {"n_embed", 96}, {"n_layer", 2}, {"n_head", 12}, {"vocab_size", 100}};
  EXPECT_EQ(parse_model_config(bloom.dump(), "c").hidden_size, 96);
  json bad = bloom;
  bad["n_head"] = 7;
  expect_error([&] { parse_model_config(bad.dump(), "c"); }, "not a multiple of n_head");
  bad = bloom;
  bad["apply_residual_connection_post_layernorm"] = true;
  expect_error([&] { parse_model_config(bad.dump(), "c"); }, "apply_residual_connection_post_layernorm");
}

TEST(ModelConfig, RejectsBadConfigsWithOneLine) {
  auto with = [](const std::string& key, const json& value) {
    json j = json::parse(kGoodConfig);
    if (value.is_null()) j.erase(key); else j[key] = value;
    return j.dump();
  };
  expect_error([&] { parse_model_config(with("architectures", {"FalconForCausalLM"}), "c"); }, "unsupported architecture 'FalconForCausalLM'");
  expect_error([&] { parse_model_config(with("hidden_size", nullptr), "c"); }, "missing 'hidden_size'");
  expect_error([&] { parse_model_config(with("hidden_size", -4), "c"); }, "'hidden_size' must be positive");
  expect_error([&] { parse_model_config(with("num_key_value_heads", 3), "c"); }, "not a multiple of num_key_value_heads");
  expect_error([&] { parse_model_config(with("hidden_act", "gelu"), "c"); }, "unsupported hidden_act");
  expect_error([&] { parse_model_config(with("attention_bias", true), "c"); },
               "attention_bias=true (biases on every attention projection, o_proj's too) is not supported for LlamaForCausalLM");
  EXPECT_FALSE(parse_model_config(with("attention_bias", false), "c").attention_bias);
  json qwen3 = json::parse(kGoodConfig);
  qwen3["architectures"] = {"Qwen3ForCausalLM"};
  qwen3["attention_bias"] = false;
  qwen3["head_dim"] = 128;  // wider than hidden / heads, as Qwen3's are
  const ModelConfig q3 = parse_model_config(qwen3.dump(), "c");
  EXPECT_TRUE(q3.qk_norm && !q3.attention_bias && q3.head_dim == 128);
  qwen3["attention_bias"] = true;
  expect_error([&] { parse_model_config(qwen3.dump(), "c"); }, "is not supported for Qwen3ForCausalLM");
  qwen3["attention_bias"] = false;
  // use_sliding_window: the window from max_window_layers on (28 by default), or where
  // layer_types says; without it, none (released Qwen configs carry a window they do not use).
  qwen3["sliding_window"] = 4096;
  qwen3["max_window_layers"] = 28;
  EXPECT_TRUE(parse_model_config(qwen3.dump(), "c").layer_windows.empty());
  qwen3["use_sliding_window"] = true;
  EXPECT_EQ(parse_model_config(qwen3.dump(), "c").layer_windows, (std::vector<std::int64_t>{0, 0}));
  qwen3["max_window_layers"] = 1;
  const ModelConfig windowed = parse_model_config(qwen3.dump(), "c");
  EXPECT_EQ(windowed.layer_windows, (std::vector<std::int64_t>{0, 4096}));
  EXPECT_TRUE(windowed.window_of(1) == 4096 && windowed.window_of(0) == 0 && windowed.sliding_window == 0);
  qwen3["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_EQ(parse_model_config(qwen3.dump(), "c").layer_windows, (std::vector<std::int64_t>{4096, 0}));
  qwen3.erase("layer_types");
  qwen3["max_window_layers"] = -1;
  expect_error([&] { parse_model_config(qwen3.dump(), "c"); }, "'max_window_layers' must be an integer from 0");
  qwen3["max_window_layers"] = 0;
  qwen3["sliding_window"] = nullptr;
  expect_error([&] { parse_model_config(qwen3.dump(), "c"); }, "missing 'sliding_window'");
  qwen3["use_sliding_window"] = "yes";
  expect_error([&] { parse_model_config(qwen3.dump(), "c"); }, "'use_sliding_window' must be true or false");
  json plain_llama = json::parse(kGoodConfig);
  plain_llama["use_sliding_window"] = true;
  expect_error([&] { parse_model_config(plain_llama.dump(), "c"); }, "use_sliding_window is read for Qwen2, Qwen3, their mixtures of experts and SmolLM3");
  // Phi-3-mini-4k-instruct's config.json: fused projections, a window of 2047.
  const ModelConfig phi3 = parse_model_config(R"({"architectures": ["Phi3ForCausalLM"], "attention_bias": false,
      "attention_dropout": 0.0, "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu",
      "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 4096,
      "model_type": "phi3", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
      "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
      "rope_scaling": null, "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": false,
      "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 32064})", "phi3");
  EXPECT_TRUE(phi3.fused_qkv && phi3.fused_gate_up && !phi3.qk_norm && !phi3.attention_bias);
  EXPECT_EQ(phi3.sliding_window, 2047);
  EXPECT_EQ(phi3.head_dim, 96);
  // Phi-3.5's LongRoPE (head_dim 8 here: 4 factors each): the short and long factors, the
  // attention factor from max / original positions (32 / 8), the whole context (sessions past the
  // original 8 take the long factors); or a given attention factor.
  json phi35 = json::parse(with("architectures", {"Phi3ForCausalLM"}));
  phi35["original_max_position_embeddings"] = 8;
  phi35["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1.0, 1.5, 2.0, 3.0}}, {"long_factor", {2.0, 2.0, 4.0, 8.0}}};
  const ModelConfig long_rope = parse_model_config(phi35.dump(), "c");
  EXPECT_EQ(long_rope.rope_scaling.freq_factors, (std::vector<double>{1.0, 1.5, 2.0, 3.0}));
  EXPECT_DOUBLE_EQ(long_rope.rope_scaling.attention_factor, std::sqrt(1 + std::log(4.0) / std::log(8.0)));
  EXPECT_EQ(long_rope.rope_scaling.long_freq_factors, (std::vector<double>{2.0, 2.0, 4.0, 8.0}));
  EXPECT_EQ(long_rope.max_position_embeddings, 32);
  EXPECT_FALSE(long_rope.long_rope_for(8));
  EXPECT_TRUE(long_rope.long_rope_for(9));
  phi35["rope_scaling"]["attention_factor"] = 1.25;
  EXPECT_DOUBLE_EQ(parse_model_config(phi35.dump(), "c").rope_scaling.attention_factor, 1.25);
  phi35["original_max_position_embeddings"] = 1;
  phi35["rope_scaling"].erase("attention_factor");
  expect_error([&] { parse_model_config(phi35.dump(), "c"); }, "original context of at least 2 positions");
  phi35["original_max_position_embeddings"] = 8;
  phi35["rope_scaling"]["short_factor"] = {1.0, 1.5, 2.0};
  expect_error([&] { parse_model_config(phi35.dump(), "c"); }, "'short_factor' must list 4 factors (half of the 8 rotated dimensions)");
  phi35["rope_scaling"]["short_factor"] = {1.0, 1.5, 2.0, -3.0};
  expect_error([&] { parse_model_config(phi35.dump(), "c"); }, "factors must be positive numbers");
  phi35["rope_scaling"]["short_factor"] = {1.0, 1.5, 2.0, 3.0};
  phi35["rope_scaling"].erase("long_factor");
  expect_error([&] { parse_model_config(phi35.dump(), "c"); }, "'long_factor' must list 4 factors");
  // Phi-4-mini's config.json: rotary embeddings on 96 of each head's 128 dimensions, LongRoPE
  // factors for those 96 (48), a tied head.
  json phi4 = json::parse(R"({"architectures": ["Phi3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 199999, "embd_pdrop": 0.0, "eos_token_id": 199999, "full_attn_mod": 1, "hidden_act": "silu",
      "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 8192, "interpolate_factor": 1,
      "lm_head_bias": false, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "phi3",
      "num_attention_heads": 24, "num_hidden_layers": 32, "num_key_value_heads": 8,
      "original_max_position_embeddings": 4096, "pad_token_id": 199999, "partial_rotary_factor": 0.75,
      "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 262144,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 200064})");
  phi4["rope_scaling"] = {{"type", "longrope"}, {"short_factor", std::vector<double>(48, 1.0)},
                          {"long_factor", std::vector<double>(48, 2.0)}};
  const ModelConfig phi4_mini = parse_model_config(phi4.dump(), "phi-4-mini");
  EXPECT_EQ(phi4_mini.head_dim, 128);
  EXPECT_EQ(phi4_mini.rope_dims(), 96);
  EXPECT_EQ(phi4_mini.rope_scaling.freq_factors.size(), 48u);
  EXPECT_EQ(phi4_mini.max_position_embeddings, 131072);  // sessions past 4096 take the long factors
  EXPECT_TRUE(phi4_mini.long_rope_for(4097) && !phi4_mini.long_rope_for(4096));
  EXPECT_TRUE(phi4_mini.fused_qkv && phi4_mini.tie_word_embeddings);
  phi4["rope_scaling"]["short_factor"] = std::vector<double>(64, 1.0);
  expect_error([&] { parse_model_config(phi4.dump(), "c"); }, "'short_factor' must list 48 factors (half of the 96 rotated dimensions)");
  phi4.erase("rope_scaling");
  phi4["partial_rotary_factor"] = 0.7;  // 89.6: 89 dimensions, odd
  expect_error([&] { parse_model_config(phi4.dump(), "c"); }, "partial_rotary_factor 0.7 rotates 89 of head_dim 128 dimensions");
  phi4["partial_rotary_factor"] = 1.5;
  expect_error([&] { parse_model_config(phi4.dump(), "c"); }, "partial_rotary_factor 1.5 rotates 192");
  phi4["partial_rotary_factor"] = 1.0;
  EXPECT_EQ(parse_model_config(phi4.dump(), "c").rope_dims(), 128);
  phi4["partial_rotary_factor"] = 40.0 / 120.0;  // a GGUF file's rope.dimension_count over the head width
  phi4["head_dim"] = 120;
  EXPECT_EQ(parse_model_config(phi4.dump(), "c").rope_dims(), 40);
  phi4.erase("head_dim");
  // Elsewhere transformers rotates whole heads: a share is refused, not left out.
  expect_error([&] { parse_model_config(with("partial_rotary_factor", 0.5), "c"); },
               "partial_rotary_factor 0.5 (rotary embeddings on part of each head) is supported for Phi3ForCausalLM, GlmForCausalLM and Glm4ForCausalLM only");
  // Gemma-2B's config.json: "hidden_act": "gelu" beside hidden_activation's tanh approximation,
  // heads of 256 (wider than 2048 / 8), one key/value head, no tie_word_embeddings (tied).
  json gemma = json::parse(R"({"architectures": ["GemmaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh",
      "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 16384, "max_position_embeddings": 8192,
      "model_type": "gemma", "num_attention_heads": 8, "num_hidden_layers": 18, "num_key_value_heads": 1,
      "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 10000.0,
      "torch_dtype": "bfloat16", "transformers_version": "4.38.0.dev0", "use_cache": true, "vocab_size": 256000})");
  const ModelConfig gemma_2b = parse_model_config(gemma.dump(), "gemma");
  EXPECT_EQ(gemma_2b.mlp_activation, GateActivation::kGeluTanh);
  EXPECT_TRUE(gemma_2b.norm_weight_plus_one && gemma_2b.tie_word_embeddings);
  EXPECT_EQ(gemma_2b.embedding_scale, static_cast<float>(std::sqrt(2048.0)));
  EXPECT_EQ(gemma_2b.head_dim, 256);
  EXPECT_EQ(gemma_2b.q_size(), 2048);
  EXPECT_EQ(gemma_2b.kv_size(), 256);
  gemma.erase("head_dim");  // transformers' GemmaConfig default
  gemma.erase("hidden_activation");  // the tanh approximation, whatever hidden_act says
  EXPECT_EQ(parse_model_config(gemma.dump(), "gemma").head_dim, 256);
  EXPECT_EQ(parse_model_config(gemma.dump(), "gemma").mlp_activation, GateActivation::kGeluTanh);
  gemma["hidden_activation"] = "relu";
  expect_error([&] { parse_model_config(gemma.dump(), "gemma"); }, "unsupported hidden_activation \"relu\" for Gemma");
  gemma["hidden_activation"] = "gelu_pytorch_tanh";
  gemma["tie_word_embeddings"] = false;
  EXPECT_FALSE(parse_model_config(gemma.dump(), "gemma").tie_word_embeddings);
  // Gemma-2-2B's config.json: soft-capping, query_pre_attn_scalar, a window of 4096 on even blocks.
  json gemma2 = json::parse(R"({"architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 107],
      "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
      "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02, "intermediate_size": 9216,
      "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8, "num_hidden_layers": 26,
      "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
      "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.42.4",
      "use_cache": true, "vocab_size": 256000})");
  const ModelConfig gemma2_2b = parse_model_config(gemma2.dump(), "gemma2");
  EXPECT_TRUE(gemma2_2b.output_norms && gemma2_2b.norm_weight_plus_one && gemma2_2b.mlp_activation == GateActivation::kGeluTanh);
  EXPECT_EQ(gemma2_2b.attention_softcap, 50.0f);
  EXPECT_EQ(gemma2_2b.final_logit_softcap, 30.0f);
  EXPECT_EQ(gemma2_2b.attention_scale, 1.0f / 16.0f);
  EXPECT_EQ(gemma2_2b.embedding_scale, static_cast<float>(std::sqrt(2304.0)));
  EXPECT_EQ(gemma2_2b.sliding_window, 0);
  ASSERT_EQ(gemma2_2b.layer_windows.size(), 26u);
  for (std::int64_t l = 0; l < 26; ++l) EXPECT_EQ(gemma2_2b.window_of(l), l % 2 == 0 ? 4096 : 0) << l;
  EXPECT_EQ(gemma2_2b.attention_dims().score_scale(), 1.0f / 16.0f);
  EXPECT_EQ(gemma2_2b.eos_token_ids, (std::vector<std::int32_t>{1, 107}));
  // Newer configs list each block's kind; null caps (some fine-tunes') are none.
  json listed = gemma2;
  listed["num_hidden_layers"] = 3;
  listed["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention"};
  listed["attn_logit_softcapping"] = nullptr;
  const ModelConfig from_list = parse_model_config(listed.dump(), "gemma2");
  EXPECT_EQ(from_list.layer_windows, (std::vector<std::int64_t>{0, 4096, 4096}));
  EXPECT_EQ(from_list.attention_softcap, 0.0f);
  listed["layer_types"] = {"full_attention", "chunked_attention", "sliding_attention"};
  expect_error([&] { parse_model_config(listed.dump(), "gemma2"); }, "layer_types[1] is \"chunked_attention\"");
  listed["layer_types"] = {"full_attention"};
  expect_error([&] { parse_model_config(listed.dump(), "gemma2"); }, "'layer_types' must list one type per layer (3)");
  gemma2["final_logit_softcapping"] = -30.0;
  expect_error([&] { parse_model_config(gemma2.dump(), "gemma2"); }, "'final_logit_softcapping' must be positive");
  // Gemma-3-1B's config.json: no caps, q and k norms, windows of 512 on 5 blocks of 6, RoPE bases
  // of 10000 there and 1000000 elsewhere; the larger models' linear factor of 8.
  json gemma3 = json::parse(R"({"architectures": ["Gemma3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "attn_logit_softcapping": null, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 106],
      "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152,
      "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768, "model_type": "gemma3_text",
      "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1, "pad_token_id": 0,
      "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_scaling": null,
      "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16",
      "transformers_version": "4.50.0.dev0", "use_cache": true, "vocab_size": 262144})");
  const ModelConfig gemma3_1b = parse_model_config(gemma3.dump(), "gemma3");
  EXPECT_TRUE(gemma3_1b.qk_norm && gemma3_1b.output_norms && gemma3_1b.norm_weight_plus_one);
  EXPECT_EQ(gemma3_1b.attention_softcap, 0.0f);
  EXPECT_EQ(gemma3_1b.final_logit_softcap, 0.0f);
  EXPECT_EQ(gemma3_1b.local_rope_theta, 10000.0);
  EXPECT_EQ(gemma3_1b.rope_theta, 1000000.0);
  for (std::int64_t l = 0; l < 26; ++l) {
    const bool global = l % 6 == 5;
    EXPECT_EQ(gemma3_1b.window_of(l), global ? 0 : 512) << l;
    EXPECT_EQ(gemma3_1b.local_rope_of(l), !global) << l;
  }
  gemma3["rope_scaling"] = {{"factor", 8.0}, {"rope_type", "linear"}};
  const ModelConfig gemma3_4b = parse_model_config(gemma3.dump(), "gemma3");
  EXPECT_EQ(gemma3_4b.rope_scaling.kind, RopeScaling::Kind::kLinear);
  EXPECT_EQ(gemma3_4b.rope_scaling.factor, 8.0);
  gemma3["rope_scaling"] = {{"rope_type", "linear"}};
  expect_error([&] { parse_model_config(gemma3.dump(), "gemma3"); }, "rope_scaling needs 'factor'");
  // Gemma-3-4B-it's config.json (multimodal): text_config names six settings, transformers'
  // defaults the rest; the top level's eos_token_id is the chat model's.
  json gemma3_mm = json::parse(R"({"architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
      "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02,
      "mm_tokens_per_image": 256, "model_type": "gemma3",
      "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
                      "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
      "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
      "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304, "model_type": "siglip_vision_model",
                        "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": false}})");
  const ModelConfig gemma3_4b_it = parse_model_config(gemma3_mm.dump(), "gemma3-4b");
  EXPECT_EQ(gemma3_4b_it.architecture, "Gemma3ForConditionalGeneration");
  EXPECT_EQ(gemma3_4b_it.hidden_size, 2560);
  EXPECT_EQ(gemma3_4b_it.intermediate_size, 10240);
  EXPECT_EQ(gemma3_4b_it.num_layers, 34);
  EXPECT_EQ(gemma3_4b_it.num_heads, 8);
  EXPECT_EQ(gemma3_4b_it.num_kv_heads, 4);
  EXPECT_EQ(gemma3_4b_it.head_dim, 256);
  EXPECT_EQ(gemma3_4b_it.vocab_size, 262208);
  EXPECT_EQ(gemma3_4b_it.max_position_embeddings, 131072);
  EXPECT_FLOAT_EQ(gemma3_4b_it.attention_scale, 1.0f / 16.0f);
  EXPECT_TRUE(gemma3_4b_it.qk_norm && gemma3_4b_it.output_norms && gemma3_4b_it.tie_word_embeddings);
  EXPECT_EQ(gemma3_4b_it.rope_theta, 1000000.0);
  EXPECT_EQ(gemma3_4b_it.local_rope_theta, 10000.0);
  EXPECT_EQ(gemma3_4b_it.rope_scaling.kind, RopeScaling::Kind::kLinear);
  EXPECT_EQ(gemma3_4b_it.bos_token_id, 2);
  EXPECT_EQ(gemma3_4b_it.eos_token_ids, (decltype(gemma3_4b_it.eos_token_ids){1, 106}));
  for (std::int64_t l = 0; l < 34; ++l) EXPECT_EQ(gemma3_4b_it.window_of(l), l % 6 == 5 ? 0 : 1024) << l;
  // The 27B's text_config sets its heads and query_pre_attn_scalar (hidden / heads).
  gemma3_mm["text_config"].update(json::parse(R"({"head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504,
      "num_attention_heads": 32, "num_hidden_layers": 62, "num_key_value_heads": 16, "query_pre_attn_scalar": 168})"));
  const ModelConfig gemma3_27b = parse_model_config(gemma3_mm.dump(), "gemma3-27b");
  EXPECT_EQ(gemma3_27b.head_dim, 128);
  EXPECT_EQ(gemma3_27b.num_heads, 32);
  EXPECT_FLOAT_EQ(gemma3_27b.attention_scale, static_cast<float>(1.0 / std::sqrt(168.0)));
  gemma3_mm["text_config"]["num_key_value_heads"] = 5;
  expect_error([&] { parse_model_config(gemma3_mm.dump(), "gemma3-27b"); }, "gemma3-27b (text_config): num_attention_heads 32 is not a multiple of num_key_value_heads 5");
  gemma3_mm.erase("text_config");
  expect_error([&] { parse_model_config(gemma3_mm.dump(), "gemma3-27b"); }, "needs a 'text_config' object");
  // Elsewhere the gate is SiLU, norms scale by their weights, embeddings are as stored.
  const ModelConfig llama = parse_model_config(kGoodConfig, "c");
  EXPECT_TRUE(llama.mlp_activation == GateActivation::kSilu && !llama.norm_weight_plus_one && llama.embedding_scale == 1.0f);
  expect_error([&] { parse_model_config(with("hidden_act", "gelu"), "c"); }, "unsupported hidden_act 'gelu'");
  expect_error([&] { parse_model_config(with("rope_scaling", {{"type", "dynamic"}, {"factor", 2}}), "c"); }, "rope_scaling type 'dynamic' is not supported (supported: linear, llama3, longrope, yarn, default)");
  expect_error([&] { parse_model_config(with("eos_token_id", 500), "c"); }, "outside the vocabulary");
  expect_error([&] { parse_model_config("{not json", "c"); }, "not valid JSON");
  // 2^32 + 2 must not be read as 2; sizes past any real model are refused before any arithmetic.
  expect_error([&] { parse_model_config(with("bos_token_id", 4294967298ull), "c"); }, "must be a token id");
  expect_error([&] { parse_model_config(with("eos_token_id", {2, 4294967299ull}), "c"); }, "must be a token id");
  expect_error([&] { parse_model_config(with("hidden_size", 1ll << 40), "c"); }, "more than the limit");
  expect_error([&] { parse_model_config(with("vocab_size", 18446744073709551615ull), "c"); }, "more than the limit");
  expect_error([&] { parse_model_config(with("hidden_act", 3), "c"); }, "wrong type");
  expect_error([] { read_model_config("/nonexistent/model"); }, "does not exist");
}

// ---- safetensors ----

TEST(Safetensors, ReadsValidFileAndSkipsMetadata) {
  TempDir dir;
  const float values[3] = {1.f, 2.f, 3.f};
  const auto tensors = parse_blob(dir, safetensors_blob(
      {{"__metadata__", {{"format", "pt"}}}, {"a", {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 12}}}}},
      std::string(reinterpret_cast<const char*>(values), 12)));
  ASSERT_EQ(tensors.size(), 1u);
  const TensorRef& a = tensors.at("a");
  EXPECT_EQ(a.elements(), 3);
  float back[3];
  std::memcpy(back, a.data, 12);
  EXPECT_EQ(back[2], 3.f);
}

// A Gemma3ForConditionalGeneration folder, its language model under either of transformers'
// prefixes beside a vision tower and a projector, is that language model: the same tensors under
// a causal LM's names, the same hidden states and logits.
TEST(Safetensors, AMultimodalGemma3FolderIsItsLanguageModel) {
  const TempDir dir;
  SyntheticSpec spec;
  spec.architecture = "Gemma3ForCausalLM";
  spec.hidden_size = 64;
  spec.intermediate_size = 96;
  spec.num_layers = 3;
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.head_dim = 32;
  spec.vocab_size = 300;
  spec.max_position_embeddings = 64;
  spec.sliding_window = 3;
  spec.sliding_window_pattern = 3;
  spec.weight_std = 0.15;
  spec.seed = 5;
  write_synthetic_checkpoint(spec, dir / "text");
  json text = json::parse(std::ifstream(dir / "text" / "config.json"));
  text.erase("architectures");
  const Checkpoint original = Checkpoint::open(dir / "text");
  const ModelConfig config = read_model_config(dir / "text");
  std::vector<float> x(static_cast<std::size_t>(4 * config.hidden_size));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::cos(0.21 * static_cast<double>(i)));
  const auto outputs = [&](const Checkpoint& checkpoint, const ModelConfig& c) {
    const BlockStack blocks = BlockStack::load(checkpoint, c, 0, c.num_layers, DType::kF32);
    KvCache cache = blocks.new_cache(4);
    std::vector<float> h = x, logits(static_cast<std::size_t>(4 * c.vocab_size));
    blocks.forward(h.data(), 4, cache);
    ModelEnds::load(checkpoint, c, DType::kF32).logits(h.data(), 4, logits.data());
    h.insert(h.end(), logits.begin(), logits.end());
    return h;
  };
  const std::vector<float> expected = outputs(original, config);
  for (const std::string prefix : {"language_model.model.", "model.language_model."}) {
    const auto folder = dir / ("mm-" + prefix);
    std::filesystem::create_directories(folder);
    std::vector<TensorToWrite> tensors;
    for (const auto& [name, ref] : original.tensors()) {
      ASSERT_EQ(ref.dtype, DType::kF32);
      // The head: "language_model.lm_head.weight" in the first layout, "lm_head.weight" in the second.
      const std::string renamed = name.starts_with("model.") ? prefix + name.substr(6)
                                  : prefix == "language_model.model." ? "language_model." + name
                                                                      : name;
      tensors.push_back({renamed, "F32", ref.shape, std::vector<std::byte>(ref.data, ref.data + ref.bytes)});
    }
    for (const char* vision : {"vision_tower.vision_model.post_layernorm.weight", "multi_modal_projector.mm_soft_emb_norm.weight"}) {
      tensors.push_back({vision, "F32", {2}, std::vector<std::byte>(8)});
    }
    write_safetensors(folder / "model.safetensors", tensors);
    std::ofstream(folder / "config.json") << json{{"architectures", {"Gemma3ForConditionalGeneration"}},
                                                  {"model_type", "gemma3"},
                                                  {"text_config", text},
                                                  {"vision_config", {{"model_type", "siglip_vision_model"}}}}
                                                 .dump();
    const ModelConfig mm = read_model_config(folder);
    EXPECT_EQ(mm.architecture, "Gemma3ForConditionalGeneration");
    EXPECT_EQ(mm.layer_windows, config.layer_windows);
    EXPECT_EQ(mm.num_kv_heads, config.num_kv_heads);
    const Checkpoint checkpoint = Checkpoint::open(folder);
    std::vector<std::string> names, original_names;
    for (const auto& [name, ref] : checkpoint.tensors()) names.push_back(name);
    for (const auto& [name, ref] : original.tensors()) original_names.push_back(name);
    EXPECT_EQ(names, original_names) << prefix;
    EXPECT_EQ(outputs(checkpoint, mm), expected) << prefix;
  }
  EXPECT_EQ(text_tower_tensor_name("language_model.lm_head.weight"), "lm_head.weight");
  EXPECT_EQ(text_tower_tensor_name("vision_tower.vision_model.head.weight"), std::nullopt);
}

TEST(Safetensors, RejectsCorruptFiles) {
  TempDir dir;
  const std::string data(16, '\0');
  auto entry = [](const char* dtype, json shape, std::uint64_t b, std::uint64_t e) {
    return json{{"dtype", dtype}, {"shape", shape}, {"data_offsets", {b, e}}};
  };
  expect_error([&] { parse_blob(dir, "abc"); }, "no header");
  {
    std::string blob = safetensors_blob({{"a", entry("F32", {4}, 0, 16)}}, data);
    blob[0] = '\x7f';  // header length far past the end
    expect_error([&] { parse_blob(dir, blob); }, "runs past the end of the file");
  }
  {
    std::string blob = safetensors_blob({{"a", entry("F32", {4}, 0, 16)}}, data);
    blob[9] = '#';
    expect_error([&] { parse_blob(dir, blob); }, "not valid JSON");
  }
  expect_error([&] { parse_blob(dir, safetensors_blob({{"a", entry("F32", {8}, 0, 32)}}, data)); }, "past the end of the data");
  expect_error([&] { parse_blob(dir, safetensors_blob({{"a", entry("F32", {2}, 0, 8)}, {"b", entry("F32", {2}, 4, 12)}}, data)); }, "overlap");
  expect_error([&] { parse_blob(dir, safetensors_blob({{"a", entry("F32", {3}, 0, 16)}}, data)); }, "needs 12");
  expect_error([&] { parse_blob(dir, safetensors_blob({{"a", entry("I16", {8}, 0, 16)}}, data)); }, "unsupported dtype I16");
  expect_error([&] { parse_blob(dir, safetensors_blob({{"a", entry("F32", {-1}, 0, 16)}}, data)); }, "negative");
  expect_error([&] { parse_blob(dir, safetensors_blob({{"a", entry("F32", {4}, 16, 0)}}, data)); }, "wrong order");
  // A truncated real file: the header promises more data than remains.
  const std::string real = test::read_file(test::models_dir() / "stories260K" / "model.safetensors");
  ASSERT_GT(real.size(), 1000u);
  expect_error([&] { parse_blob(dir, real.substr(0, real.size() / 2)); }, "truncated");
}

// GPT-OSS's released experts: X_blocks (two FP4 codes a byte, the lower nibble first) and
// X_scales (2^(byte - 127) per 32 values) read as X, each matrix transposed, as transformers
// dequantizes them; values worked out by hand from the OCP MX format.
TEST(Checkpoint, UnpacksMxfp4Experts) {
  TempDir dir;
  std::vector<std::byte> blocks(2 * 16), scales = {std::byte{128}, std::byte{126}};  // [1 expert, 2 rows, 1 group]
  blocks[0] = std::byte{0x2F};  // row 0: -6 then 1, times 2
  for (int j = 1; j < 16; ++j) blocks[j] = std::byte{0x71};  // 0.5 then 6, times 2
  for (int j = 16; j < 32; ++j) blocks[j] = std::byte{0x9A};  // row 1: -1 then -0.5, times 1/2
  write_safetensors(dir / "model.safetensors", {{"m.experts.down_proj_blocks", "U8", {1, 2, 1, 16}, blocks},
                                                {"m.experts.down_proj_scales", "U8", {1, 2, 1}, scales}});
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  EXPECT_EQ(checkpoint.find("m.experts.down_proj_blocks"), nullptr);
  const TensorRef& t = checkpoint.get("m.experts.down_proj");
  ASSERT_EQ(t.shape, (std::vector<std::int64_t>{1, 32, 2}));  // [expert, column, row]
  EXPECT_EQ(t.dtype, DType::kBF16);
  const auto at = [&](std::int64_t c, std::int64_t r) { return element_as_f32(t, c * 2 + r); };
  EXPECT_EQ(at(0, 0), -12.0f);
  EXPECT_EQ(at(1, 0), 2.0f);
  EXPECT_EQ(at(2, 0), 1.0f);
  EXPECT_EQ(at(31, 0), 12.0f);
  EXPECT_EQ(at(0, 1), -0.5f);
  EXPECT_EQ(at(31, 1), -0.25f);
  for (std::uint8_t code = 0; code < 16; ++code) EXPECT_EQ(fp4_value(code), (code & 8 ? -1.0f : 1.0f) * fp4_value(code & 7));
  EXPECT_EQ(fp4_value(5), 3.0f);
  EXPECT_EQ(fp4_value(7), 6.0f);
  // A half of a pair, shapes that disagree, and unsigned bytes that are not MXFP4's are refused.
  TempDir bad;
  write_safetensors(bad / "model.safetensors", {{"x_blocks", "U8", {1, 2, 1, 16}, blocks}});
  expect_error([&] { (void)Checkpoint::open(bad.path()); }, "has no x_scales");
  write_safetensors(bad / "model.safetensors", {{"x_blocks", "U8", {1, 2, 1, 16}, blocks}, {"x_scales", "U8", {1, 1, 2}, scales}});
  expect_error([&] { (void)Checkpoint::open(bad.path()); }, "must be [experts, rows, groups, 16]");
  write_safetensors(bad / "model.safetensors", {{"x", "U8", {2}, scales}});  // bytes sepal does not read: left out
  EXPECT_EQ(Checkpoint::open(bad.path()).find("x"), nullptr);
  write_safetensors(bad / "model.safetensors", {{"x", "U16", {1}, scales}});
  expect_error([&] { (void)Checkpoint::open(bad.path()); }, "unsupported dtype U16");
}

// FP8 weights: E4M3 bytes (bias 7, no infinities) times the scale of their block, the block
// size from config.json; a partial block at the edges has its own scale.
TEST(Checkpoint, UnpacksFp8Blocks) {
  EXPECT_EQ(fp8_e4m3_value(0x00), 0.0f);
  EXPECT_EQ(fp8_e4m3_value(0x38), 1.0f);         // 0.0111.000
  EXPECT_EQ(fp8_e4m3_value(0xB8), -1.0f);
  EXPECT_EQ(fp8_e4m3_value(0x3C), 1.5f);         // 0.0111.100
  EXPECT_EQ(fp8_e4m3_value(0x7E), 448.0f);       // the largest: 1.75 · 2^8
  EXPECT_EQ(fp8_e4m3_value(0x08), 0.015625f);    // the smallest normal: 2^-6
  EXPECT_EQ(fp8_e4m3_value(0x01), 0.001953125f);  // the smallest subnormal: 2^-9
  EXPECT_EQ(fp8_e4m3_value(0x07), 7 * 0.001953125f);
  EXPECT_TRUE(std::isnan(fp8_e4m3_value(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_value(0xFF)));
  TempDir dir;
  test::write_file(dir / "config.json", json{{"quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {2, 2}}}}}.dump());
  // [3, 3]: blocks of 2 x 2, so scales [2, 2]: rows 0-1 and 2, columns 0-1 and 2.
  std::vector<std::byte> w(9, std::byte{0x38});  // every weight 1.0 before scaling
  w[4] = std::byte{0xC0};                          // row 1, column 1: -2.0
  const float scales[4] = {0.5f, 2.0f, 4.0f, -1.0f};
  std::vector<std::byte> s(16);
  std::memcpy(s.data(), scales, 16);
  write_safetensors(dir / "model.safetensors", {{"m.q_proj.weight", "F8_E4M3", {3, 3}, w}, {"m.q_proj.weight_scale_inv", "F32", {2, 2}, s}});
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  EXPECT_EQ(checkpoint.find("m.q_proj.weight_scale_inv"), nullptr);
  const TensorRef& t = checkpoint.get("m.q_proj.weight");
  ASSERT_EQ(t.shape, (std::vector<std::int64_t>{3, 3}));
  EXPECT_EQ(t.dtype, DType::kF32);
  const float expected[9] = {0.5f, 0.5f, 2.0f, 0.5f, -1.0f, 2.0f, 4.0f, 4.0f, -1.0f};
  for (int i = 0; i < 9; ++i) EXPECT_EQ(element_as_f32(t, i), expected[i]) << i;
  // Without config.json the blocks are 128 x 128: scales [2, 2] do not cover [3, 3].
  TempDir bad;
  write_safetensors(bad / "model.safetensors", {{"x", "F8_E4M3", {3, 3}, w}, {"x_scale_inv", "F32", {2, 2}, s}});
  expect_error([&] { (void)Checkpoint::open(bad.path()); }, "do not cover 'x' [3, 3] in blocks of 128 x 128 (expected [1, 1])");
  write_safetensors(bad / "model.safetensors", {{"x", "F8_E4M3", {3, 3}, w}});
  expect_error([&] { (void)Checkpoint::open(bad.path()); }, "has no x_scale_inv");
  write_safetensors(bad / "model.safetensors", {{"x", "F8_E4M3", {3, 3}, w}, {"x_scale_inv", "I8", {1, 1}, {std::byte{1}}}});
  expect_error([&] { (void)Checkpoint::open(bad.path()); }, "must be F32, BF16 or F16");
  // compressed-tensors' scales (X_scale): a row's, or the tensor's.
  write_safetensors(bad / "model.safetensors", {{"x", "F8_E4M3", {3, 3}, w}, {"x_scale", "F32", {3, 1}, {s.begin(), s.begin() + 12}}});
  const Checkpoint per_row = Checkpoint::open(bad.path());
  const float row_expected[9] = {0.5f, 0.5f, 0.5f, 2.0f, -4.0f, 2.0f, 4.0f, 4.0f, 4.0f};
  for (int i = 0; i < 9; ++i) EXPECT_EQ(element_as_f32(per_row.get("x"), i), row_expected[i]) << i;
  write_safetensors(bad / "model.safetensors", {{"x", "F8_E4M3", {3, 3}, w}, {"x_scale", "F32", {}, {s.begin() + 4, s.begin() + 8}}});
  const Checkpoint per_tensor = Checkpoint::open(bad.path());
  EXPECT_EQ(element_as_f32(per_tensor.get("x"), 4), -4.0f);
  EXPECT_EQ(element_as_f32(per_tensor.get("x"), 8), 2.0f);
  write_safetensors(bad / "model.safetensors", {{"x", "F8_E4M3", {3, 3}, w}, {"x_scale", "F32", {1, 3}, {s.begin(), s.begin() + 12}}});
  expect_error([&] { (void)Checkpoint::open(bad.path()); }, "are neither one a row of 'x' [3, 3] ([3, 1]) nor one for the tensor");
  // A NaN is refused when the tensor is read.
  w[0] = std::byte{0x7F};
  write_safetensors(bad / "model.safetensors", {{"x", "F8_E4M3", {3, 3}, w}, {"x_scale_inv", "F32", {1, 1}, {s.begin(), s.begin() + 4}}});
  const Checkpoint nan = Checkpoint::open(bad.path());
  expect_error([&] { (void)nan.get("x"); }, "FP8 tensor 'x' holds a NaN");
}

// Packed integer weights (model/packed_integers.h), worked by hand: each value is
// scale · (integer − zero point), the scale and zero point those of the value's group of inputs.
std::vector<std::byte> word_bytes(const std::vector<std::uint32_t>& words) {
  std::vector<std::byte> b(words.size() * 4);
  std::memcpy(b.data(), words.data(), b.size());
  return b;
}
std::vector<std::byte> f32_bytes(const std::vector<float>& values) {
  std::vector<std::byte> b(values.size() * 4);
  std::memcpy(b.data(), values.data(), b.size());
  return b;
}
void expect_matrix(const TensorRef& t, std::vector<std::int64_t> shape, const std::vector<float>& expected) {
  ASSERT_EQ(t.shape, shape) << t.name;
  EXPECT_EQ(t.dtype, DType::kF32);
  for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(element_as_f32(t, static_cast<std::int64_t>(i)), expected[i]) << t.name << " " << i;
}

TEST(Checkpoint, UnpacksGptqWeights) {
  TempDir dir;
  const auto config = [&](const json& q) { test::write_file(dir / "config.json", json{{"quantization_config", q}}.dump()); };
  config({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 4}});
  // W [2 outputs, 8 inputs], the inputs of an output in one word, the first in the lowest bits:
  // output 0's integers 0 to 7, output 1's 15 down to 8. Groups of 4 inputs; zero points packed
  // along the outputs and stored one less (group 0: 4 and 8; group 1: 1 and 2).
  const std::vector<TensorToWrite> parts = {{"m.q_proj.qweight", "I32", {1, 2}, word_bytes({0x76543210u, 0x89ABCDEFu})},
                                            {"m.q_proj.qzeros", "I32", {2, 1}, word_bytes({0x73u, 0x10u})},
                                            {"m.q_proj.scales", "F32", {2, 2}, f32_bytes({0.5f, 2.0f, 1.0f, -1.0f})}};
  write_safetensors(dir / "model.safetensors", parts);
  const Checkpoint c = Checkpoint::open(dir.path());
  EXPECT_EQ(c.find("m.q_proj.qweight"), nullptr);
  expect_matrix(c.get("m.q_proj.weight"), {2, 8}, {-2, -1.5f, -1, -0.5f, 3, 4, 5, 6, 14, 12, 10, 8, -9, -8, -7, -6});
  // GPTQ v2 stores zero points as they are.
  config({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 4}, {"checkpoint_format", "gptq_v2"}});
  expect_matrix(Checkpoint::open(dir.path()).get("m.q_proj.weight"), {2, 8}, {-1.5f, -1, -0.5f, 0, 4, 5, 6, 7});
  // With act-order, g_idx names each input's group.
  config({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 4}, {"desc_act", true}});
  auto ordered = parts;
  ordered.push_back({"m.q_proj.g_idx", "I32", {8}, word_bytes({1, 1, 1, 1, 0, 0, 0, 0})});
  write_safetensors(dir / "model.safetensors", ordered);
  expect_matrix(Checkpoint::open(dir.path()).get("m.q_proj.weight"), {2, 8}, {-1, 0, 1, 2, 0, 0.5f, 1, 1.5f});
  ordered.back().bytes = word_bytes({0, 0, 0, 0, 2, 0, 0, 0});
  write_safetensors(dir / "model.safetensors", ordered);
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, "group order 'm.q_proj.g_idx' puts input column 4 in group 2 of 2");
  // 8 bits: 4 inputs a word; 2 bits: 16.
  config({{"quant_method", "gptq"}, {"bits", 8}, {"group_size", -1}, {"checkpoint_format", "gptq_v2"}});
  write_safetensors(dir / "model.safetensors", {{"m.o_proj.qweight", "I32", {1, 1}, word_bytes({0xFF800105u})},
                                                {"m.o_proj.qzeros", "I32", {1, 1}, word_bytes({0x80u})},
                                                {"m.o_proj.scales", "F32", {1, 1}, f32_bytes({0.25f})}});
  expect_matrix(Checkpoint::open(dir.path()).get("m.o_proj.weight"), {1, 4}, {-30.75f, -31.75f, 0, 31.75f});
  config({{"quant_method", "gptq"}, {"bits", 2}, {"group_size", -1}, {"checkpoint_format", "gptq_v2"}});
  write_safetensors(dir / "model.safetensors", {{"m.o_proj.qweight", "I32", {1, 1}, word_bytes({0xE4u})},
                                                {"m.o_proj.qzeros", "I32", {1, 1}, word_bytes({0x1u})},
                                                {"m.o_proj.scales", "F32", {1, 1}, f32_bytes({1.0f})}});
  expect_matrix(Checkpoint::open(dir.path()).get("m.o_proj.weight"), {1, 16}, {-1, 0, 1, 2, -1, -1, -1, -1});
  // Parts that are missing or do not fit.
  write_safetensors(dir / "model.safetensors", {parts[0], parts[1]});
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, "packed weight 'm.q_proj.qweight' has no m.q_proj.scales");
  config({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 2}});
  write_safetensors(dir / "model.safetensors", parts);
  expect_error([&] { (void)Checkpoint::open(dir.path()); },
               "scales 'm.q_proj.scales' [2, 2] hold 2 groups, but the 8 input columns of 'm.q_proj.qweight' in groups of 2 make 4");
  std::filesystem::remove(dir / "config.json");
  expect_error([&] { (void)Checkpoint::open(dir.path()); },
               "tensor 'm.q_proj.qweight' holds packed integer weights, but nothing says how");
  // Older folders: AutoGPTQ's settings in quantize_config.json.
  test::write_file(dir / "quantize_config.json", json{{"bits", 4}, {"group_size", 4}, {"desc_act", false}, {"sym", false}}.dump());
  expect_matrix(Checkpoint::open(dir.path()).get("m.q_proj.weight"), {2, 8}, {-2, -1.5f, -1, -0.5f, 3, 4, 5, 6});
  std::filesystem::remove(dir / "quantize_config.json");
  // Other integer tensors (buffers) are left out.
  write_safetensors(dir / "model.safetensors", {{"m.position_ids", "I64", {2}, std::vector<std::byte>(16)},
                                                {"m.norm.weight", "F32", {1}, f32_bytes({1.0f})}});
  EXPECT_EQ(Checkpoint::open(dir.path()).find("m.position_ids"), nullptr);
}

TEST(Checkpoint, UnpacksAwqWeights) {
  TempDir dir;
  test::write_file(dir / "config.json", json{{"quantization_config", {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 2},
                                                                      {"zero_point", true}, {"version", "gemm"}}}}.dump());
  // W [8 outputs, 2 inputs]: a word holds one input's 8 outputs, output k in nibble
  // {0, 4, 1, 5, 2, 6, 3, 7}[k]. Input 0's integers are 0 to 7, input 1's 7 down to 0; every
  // zero point 1 but output 3's, 5; every scale 1 but output 3's, 2.
  write_safetensors(dir / "model.safetensors", {{"m.up_proj.qweight", "I32", {2, 1}, word_bytes({0x75316420u, 0x02461357u})},
                                                {"m.up_proj.qzeros", "I32", {1, 1}, word_bytes({0x11511111u})},
                                                {"m.up_proj.scales", "F32", {1, 8}, f32_bytes({1, 1, 1, 2, 1, 1, 1, 1})}});
  const std::vector<float> expected = {-1, 6, 0, 5, 1, 4, -4, -2, 3, 2, 4, 1, 5, 0, 6, -1};
  expect_matrix(Checkpoint::open(dir.path()).get("m.up_proj.weight"), {8, 2}, expected);
  // Older folders: AutoAWQ's settings in quant_config.json, under its own names.
  std::filesystem::remove(dir / "config.json");
  test::write_file(dir / "quant_config.json", json{{"zero_point", true}, {"q_group_size", 2}, {"w_bit", 4}, {"version", "GEMM"}}.dump());
  expect_matrix(Checkpoint::open(dir.path()).get("m.up_proj.weight"), {8, 2}, expected);
}

TEST(Checkpoint, UnpacksCompressedTensorsPackedWeights) {
  TempDir dir;
  json weights = {{"num_bits", 4}, {"type", "int"}, {"symmetric", true}, {"strategy", "group"}, {"group_size", 2}};
  const auto config = [&] {
    test::write_file(dir / "config.json", json{{"quantization_config", {{"quant_method", "compressed-tensors"}, {"format", "pack-quantized"},
                                                                         {"config_groups", {{"group_0", {{"weights", weights}}}}}}}}.dump());
  };
  config();
  // W [2, 3]: a row's values packed along it, each stored plus 8 (row 0: -8, 0, 7; row 1: 1, -1,
  // 3), the word's rest padding; weight_shape gives the columns. Groups of 2 columns.
  const std::int64_t shape[2] = {2, 3};
  std::vector<std::byte> shape_bytes(16);
  std::memcpy(shape_bytes.data(), shape, 16);
  std::vector<TensorToWrite> parts = {{"m.down_proj.weight_packed", "I32", {2, 1}, word_bytes({0xF80u, 0xB79u})},
                                      {"m.down_proj.weight_scale", "F32", {2, 2}, f32_bytes({0.5f, 2, 1, 4})},
                                      {"m.down_proj.weight_shape", "I64", {2}, shape_bytes}};
  write_safetensors(dir / "model.safetensors", parts);
  const Checkpoint c = Checkpoint::open(dir.path());
  EXPECT_EQ(c.find("m.down_proj.weight_shape"), nullptr);
  expect_matrix(c.get("m.down_proj.weight"), {2, 3}, {-4, 0, 14, 1, -1, 12});
  // Asymmetric: zero points packed along the rows, stored plus 8 (group 0: 1 and -1; group 1: 0 and 2).
  weights["symmetric"] = false;
  config();
  parts.push_back({"m.down_proj.weight_zero_point", "I32", {1, 2}, word_bytes({0x79u, 0xA8u})});
  write_safetensors(dir / "model.safetensors", parts);
  expect_matrix(Checkpoint::open(dir.path()).get("m.down_proj.weight"), {2, 3}, {-4.5f, -0.5f, 14, 2, 0, 4});
  parts[2].bytes[8] = std::byte{9};  // 9 columns need two words a row
  write_safetensors(dir / "model.safetensors", parts);
  expect_error([&] { (void)Checkpoint::open(dir.path()); },
               "packed weight 'm.down_proj.weight_packed' [2, 1] does not hold a weight of shape [2, 9] at 4 bits");
  // int-quantized (W8A8): I8 weights as they are, a scale a row, zero points I8 when asymmetric.
  test::write_file(dir / "config.json", json{{"quantization_config", {{"quant_method", "compressed-tensors"}, {"format", "int-quantized"},
      {"config_groups", {{"group_0", {{"weights", {{"num_bits", 8}, {"type", "int"}, {"strategy", "channel"}}}}}}}}}}.dump());
  const std::vector<std::byte> q = {std::byte{0x80}, std::byte{0x01}, std::byte{0x7F}, std::byte{0xFE}};  // -128, 1 | 127, -2
  std::vector<TensorToWrite> w8 = {{"m.o_proj.weight", "I8", {2, 2}, q}, {"m.o_proj.weight_scale", "F32", {2, 1}, f32_bytes({0.5f, -2})}};
  write_safetensors(dir / "model.safetensors", w8);
  expect_matrix(Checkpoint::open(dir.path()).get("m.o_proj.weight"), {2, 2}, {-64, 0.5f, -254, 4});
  w8.push_back({"m.o_proj.weight_zero_point", "I8", {2, 1}, {std::byte{1}, std::byte{0xFF}}});  // 1 and -1
  write_safetensors(dir / "model.safetensors", w8);
  expect_matrix(Checkpoint::open(dir.path()).get("m.o_proj.weight"), {2, 2}, {-64.5f, 0, -256, 2});
  w8[1].shape = {1, 2};
  write_safetensors(dir / "model.safetensors", w8);
  expect_error([&] { (void)Checkpoint::open(dir.path()); },
               "scales 'm.o_proj.weight_scale' [1, 2] do not fit 'm.o_proj.weight' [2, 2] (expected [2, 1], or one for the tensor)");
}

// bitsandbytes' 4-bit weights: two codes a byte, the first in the high nibble, each its
// quant_map value times its block's scale; with double quantization the scales are byte codes
// themselves, and the values are rounded to the quant_state's dtype.
TEST(Checkpoint, UnpacksBitsandbytes4BitWeights) {
  TempDir dir;
  const auto blob = [](const json& state) {
    const std::string text = state.dump();
    std::vector<std::byte> b(text.size());
    std::memcpy(b.data(), text.data(), text.size());
    return b;
  };
  std::vector<float> map(16), nested_map(256);
  for (int k = 0; k < 16; ++k) map[k] = 0.25f * static_cast<float>(k - 8);
  for (int k = 0; k < 256; ++k) nested_map[k] = 0.5f * static_cast<float>(k);
  // W [2, 3], codes 15, 0, 8, 9 | 4, 12: blocks of 4 values, the second partial.
  const std::vector<std::byte> codes = {std::byte{0xF0}, std::byte{0x89}, std::byte{0x4C}};
  json state = {{"quant_type", "nf4"}, {"blocksize", 4}, {"dtype", "float32"}, {"shape", {2, 3}}};
  write_safetensors(dir / "model.safetensors", {{"m.v_proj.weight", "U8", {3, 1}, codes},
                                                {"m.v_proj.weight.quant_map", "F32", {16}, f32_bytes(map)},
                                                {"m.v_proj.weight.absmax", "F32", {2}, f32_bytes({2, 0.5f})},
                                                {"m.v_proj.weight.quant_state.bitsandbytes__nf4", "U8", {static_cast<std::int64_t>(blob(state).size())}, blob(state)}});
  const Checkpoint plain = Checkpoint::open(dir.path());
  EXPECT_EQ(plain.find("m.v_proj.weight.absmax"), nullptr);
  expect_matrix(plain.get("m.v_proj.weight"), {2, 3}, {3.5f, -4, 0, 0.5f, -0.5f, 0.5f});
  // Double quantization: scale codes 3 and 1 (1.5 and 0.5) times 2, plus 0.2: 3.2 and 1.2; the
  // values rounded to bf16.
  state.update({{"dtype", "bfloat16"}, {"nested_blocksize", 256}, {"nested_offset", 0.2}, {"nested_dtype", "float32"}});
  std::vector<TensorToWrite> nested = {{"m.v_proj.weight", "U8", {3, 1}, codes},
                                       {"m.v_proj.weight.quant_map", "F32", {16}, f32_bytes(map)},
                                       {"m.v_proj.weight.absmax", "U8", {2}, {std::byte{3}, std::byte{1}}},
                                       {"m.v_proj.weight.nested_quant_map", "F32", {256}, f32_bytes(nested_map)},
                                       {"m.v_proj.weight.nested_absmax", "F32", {1}, f32_bytes({2})},
                                       {"m.v_proj.weight.quant_state.bitsandbytes__nf4", "U8", {static_cast<std::int64_t>(blob(state).size())}, blob(state)}};
  write_safetensors(dir / "model.safetensors", nested);
  expect_matrix(Checkpoint::open(dir.path()).get("m.v_proj.weight"), {2, 3}, {5.59375f, -6.40625f, 0, 0.80078125f, -1.203125f, 1.203125f});
  // Parts that do not fit, or are missing; a quant_state that is not JSON.
  nested[2].shape = {1};
  nested[2].bytes.resize(1);
  write_safetensors(dir / "model.safetensors", nested);
  expect_error([&] { (void)Checkpoint::open(dir.path()); },
               "'m.v_proj.weight.absmax' [1] must hold 2 bytes (U8) for 'm.v_proj.weight' [2, 3] in blocks of 4");
  nested[2] = {"m.v_proj.weight.absmax", "U8", {2}, {std::byte{3}, std::byte{1}}};
  nested.erase(nested.begin() + 3);
  write_safetensors(dir / "model.safetensors", nested);
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, "4-bit weight 'm.v_proj.weight' has no m.v_proj.weight.nested_quant_map");
  nested.back().bytes = {std::byte{'{'}};
  nested.back().shape = {1};
  write_safetensors(dir / "model.safetensors", nested);
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, "'m.v_proj.weight.quant_state.bitsandbytes__nf4' is not JSON");
  write_safetensors(dir / "model.safetensors", {{"m.v_proj.weight", "U8", {3, 1}, codes}});
  expect_error([&] { (void)Checkpoint::open(dir.path()); }, "tensor 'm.v_proj.weight' holds packed integer weights, but nothing says how");
}

// A loader that copied a converted tensor's values drops them from the checkpoint (so that a
// quantized model's f32 values are not all in memory at once); asked for again, they come back.
// Values held in place, and copies of a tensor, are left alone.
TEST(Checkpoint, ReleasesConvertedValuesOnceCopied) {
  TempDir dir;
  std::vector<std::byte> w(6, std::byte{0x38});  // 1.0
  const float scale = 0.5f;
  std::vector<std::byte> s(4);
  std::memcpy(s.data(), &scale, 4);
  write_safetensors(dir / "model.safetensors", {{"x", "F8_E4M3", {2, 3}, w}, {"x_scale", "F32", {}, s}, {"y", "F32", {1}, s}});
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const HeldMatrix bf16 = hold_matrix(checkpoint, checkpoint.get("x"), WeightLoading(DType::kBF16));
  EXPECT_EQ(checkpoint.tensors().at("x").data, nullptr);  // copied to bf16: dropped
  EXPECT_EQ(element_as_f32(checkpoint.get("x"), 5), 0.5f);  // converted again
  const HeldMatrix in_place = hold_matrix(checkpoint, checkpoint.get("x"), WeightLoading(DType::kF32, /*in_place=*/true));
  EXPECT_NE(checkpoint.tensors().at("x").data, nullptr);  // the held matrix is those values
  EXPECT_EQ(in_place.view.data, checkpoint.tensors().at("x").data);
  const TensorRef copy = checkpoint.get("x");
  checkpoint.release(copy);  // not the checkpoint's own
  EXPECT_NE(checkpoint.tensors().at("x").data, nullptr);
  checkpoint.release(checkpoint.get("y"));  // mapped, not converted
  EXPECT_NE(checkpoint.tensors().at("y").data, nullptr);
}

TEST(Checkpoint, OpensShardsThroughTheIndex) {
  TempDir dir;
  const float a[2] = {1, 2}, b[2] = {3, 4};
  test::write_file(dir / "s1.safetensors", safetensors_blob({{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}}}, std::string(reinterpret_cast<const char*>(a), 8)));
  test::write_file(dir / "s2.safetensors", safetensors_blob({{"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}}}, std::string(reinterpret_cast<const char*>(b), 8)));
  test::write_file(dir / "model.safetensors.index.json", json{{"weight_map", {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}}}.dump());
  const Checkpoint c = Checkpoint::open(dir.path());
  EXPECT_EQ(c.tensors().size(), 2u);
  float v;
  std::memcpy(&v, c.get("b").data + 4, 4);
  EXPECT_EQ(v, 4.f);
  expect_error([&] { c.get("missing"); }, "tensor 'missing' is missing");

  test::write_file(dir / "model.safetensors.index.json", json{{"weight_map", {{"a", "s1.safetensors"}, {"c", "s3.safetensors"}}}}.dump());
  expect_error([&] { Checkpoint::open(dir.path()); }, "shard s3.safetensors");
  TempDir empty;
  expect_error([&] { Checkpoint::open(empty.path()); }, "expected model.safetensors");
  // Without an index, a folder's one .safetensors file, whatever its name; two are refused.
  std::filesystem::remove(dir / "model.safetensors.index.json");
  expect_error([&] { Checkpoint::open(dir.path()); }, "no model.safetensors.index.json in " + dir.path().string() +
                                                        " to say what its 2 .safetensors files hold");
  std::filesystem::remove(dir / "s1.safetensors");
  EXPECT_EQ(Checkpoint::open(dir.path()).get("b").shape, std::vector<std::int64_t>{2});
}

// ---- synthetic models: dtypes, shapes, tied heads ----

SyntheticSpec small_spec(DType dtype) {
  SyntheticSpec s;
  s.hidden_size = 64;
  s.intermediate_size = 100;
  s.num_layers = 3;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.vocab_size = 300;
  s.max_position_embeddings = 64;
  s.dtype = dtype;
  s.seed = 42;
  return s;
}

std::vector<float> last_logits(const std::filesystem::path& dir, const WeightLoading& memory_dtype,
                               const std::vector<std::int32_t>& ids) {
  const ModelConfig config = read_model_config(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  const ModelEnds ends = ModelEnds::load(ckpt, config, memory_dtype);
  const BlockStack blocks = BlockStack::load(ckpt, config, 0, config.num_layers, memory_dtype);
  KvCache cache = blocks.new_cache(32);
  std::vector<float> hidden(ids.size() * config.hidden_size);
  ends.embed(ids.data(), static_cast<std::int64_t>(ids.size()), hidden.data());
  blocks.forward(hidden.data(), static_cast<std::int64_t>(ids.size()), cache);
  std::vector<float> logits(config.vocab_size);
  ends.logits(hidden.data() + (ids.size() - 1) * config.hidden_size, 1, logits.data());
  return logits;
}

TEST(SyntheticModel, StoredDtypesLoadIntoEitherMemoryDtype) {
  TempDir dir;
  write_synthetic_checkpoint(small_spec(DType::kF32), dir / "f32");
  write_synthetic_checkpoint(small_spec(DType::kBF16), dir / "bf16");
  write_synthetic_checkpoint(small_spec(DType::kF16), dir / "f16");
  const std::vector<std::int32_t> ids = {1, 50, 60, 70, 80, 90};
  const auto ref = last_logits(dir / "f32", DType::kF32, ids);
  std::vector<double> ref_d(ref.begin(), ref.end());
  // Rounding f32 weights to bf16 at load is the same rounding the bf16 file holds.
  EXPECT_EQ(last_logits(dir / "f32", DType::kBF16, ids), last_logits(dir / "bf16", DType::kBF16, ids));
  EXPECT_EQ(last_logits(dir / "bf16", DType::kF32, ids).size(), ref.size());
  EXPECT_LT(test::normalized_error(last_logits(dir / "f16", DType::kF32, ids), ref_d), 1e-2);
  EXPECT_LT(test::normalized_error(last_logits(dir / "bf16", DType::kBF16, ids), ref_d), 5e-2);
  // int8 quantizes each row as it reads it (model/weights.cc: a row widened to f32 at a time).
  for (const char* stored : {"f16", "bf16"})
    EXPECT_LT(test::normalized_error(last_logits(dir / stored, DType::kI8, ids), ref_d), 5e-2) << stored;
}

TEST(SyntheticModel, Int8WeightsAreAQuarterOfF32AndCloseToIt) {
  TempDir dir;
  SyntheticSpec spec = small_spec(DType::kF32);
  spec.hidden_size = 256;
  spec.intermediate_size = 512;
  write_synthetic_checkpoint(spec, dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint ckpt = Checkpoint::open(dir.path());
  const auto f32 = BlockStack::load(ckpt, config, 0, config.num_layers, DType::kF32).weight_bytes();
  const auto int8 = BlockStack::load(ckpt, config, 0, config.num_layers, DType::kI8).weight_bytes();
  EXPECT_LE(static_cast<double>(int8) / static_cast<double>(f32), 0.27);
  const std::vector<std::int32_t> ids = {1, 50, 60, 70, 80, 90};
  const auto ref = last_logits(dir.path(), DType::kF32, ids);
  EXPECT_LT(test::normalized_error(last_logits(dir.path(), DType::kI8, ids), std::vector<double>(ref.begin(), ref.end())), 5e-2);
}

TEST(SyntheticModel, Int8NeedsTheOutlierDecompositionWhenFeaturesAreLarge) {
  // Four hidden dimensions with norm weight 60 feed the projections activations far past the
  // threshold of 6. Quantizing them with the rest costs the rest their precision; the
  // decomposition multiplies them in floating point.
  TempDir dir;
  SyntheticSpec spec = small_spec(DType::kF32);
  spec.hidden_size = 256;
  spec.intermediate_size = 512;
  spec.outlier_dims = 4;
  spec.outlier_scale = 60;
  write_synthetic_checkpoint(spec, dir.path());
  const std::vector<std::int32_t> ids = {1, 50, 60, 70, 80, 90, 100, 110};
  const auto ref = last_logits(dir.path(), DType::kF32, ids);
  const std::vector<double> ref_d(ref.begin(), ref.end());
  WeightLoading decomposed(DType::kI8), quantized_all(DType::kI8);
  quantized_all.outlier_threshold = INFINITY;
  const double with = test::normalized_error(last_logits(dir.path(), decomposed, ids), ref_d);
  const double without = test::normalized_error(last_logits(dir.path(), quantized_all, ids), ref_d);
  std::printf("logits error against f32: %.4f with the decomposition, %.4f without\n", with, without);
  EXPECT_LT(with, 5e-2);  // the tolerance int8 meets on models without outliers
  EXPECT_GT(without, 4 * with);
}

TEST(Int8Checkpoint, LoadsAsTheQuantizedOriginalAndRejectsBadScales) {
  TempDir dir;
  write_synthetic_checkpoint(small_spec(DType::kF32), dir / "f32");
  const auto tensors = quantize_checkpoint_tensors(Checkpoint::open(dir / "f32"));
  auto write_int8 = [&](const std::filesystem::path& to, const std::vector<TensorToWrite>& t) {
    std::filesystem::create_directories(to);
    for (const char* f : {"config.json", "tokenizer.json"}) {
      std::filesystem::copy_file(dir / "f32" / f, to / f, std::filesystem::copy_options::overwrite_existing);
    }
    write_safetensors(to / "model.safetensors", t);
  };
  write_int8(dir / "int8", tensors);
  const std::vector<std::int32_t> ids = {1, 50, 60, 70, 80, 90};
  EXPECT_EQ(last_logits(dir / "int8", DType::kI8, ids), last_logits(dir / "f32", DType::kI8, ids));
  const auto ref = last_logits(dir / "f32", DType::kF32, ids);
  EXPECT_LT(test::normalized_error(last_logits(dir / "int8", DType::kF32, ids), std::vector<double>(ref.begin(), ref.end())),
            5e-2);

  // Scales that disagree with their matrix, or are not finite numbers, are named.
  const std::string scb = "model.layers.1.mlp.up_proj.SCB";
  auto corrupted = [&](const std::function<void(std::vector<TensorToWrite>&, TensorToWrite&)>& edit) {
    std::vector<TensorToWrite> t = tensors;
    auto it = std::find_if(t.begin(), t.end(), [&](const TensorToWrite& x) { return x.name == scb; });
    EXPECT_NE(it, t.end());
    edit(t, *it);
    write_int8(dir / "bad", t);
    const Checkpoint c = Checkpoint::open(dir / "bad");
    return [c, &dir] { BlockStack::load(c, read_model_config(dir / "bad"), 0, 3, DType::kI8); };
  };
  auto set_first = [](float v) {
    return [v](std::vector<TensorToWrite>&, TensorToWrite& x) { std::memcpy(x.bytes.data(), &v, 4); };
  };
  expect_error(corrupted([](auto&, TensorToWrite& x) {
                 x.shape = {x.shape[0] - 1};
                 x.bytes.resize(x.bytes.size() - 4);
               }),
               "tensor 'model.layers.1.mlp.up_proj.SCB' has 99 scales for 100 rows");
  expect_error(corrupted(set_first(NAN)), "tensor 'model.layers.1.mlp.up_proj.SCB': scale of row 0 is not finite");
  expect_error(corrupted(set_first(INFINITY)), "scale of row 0 is not finite");
  expect_error(corrupted(set_first(-2.0f)), "scale of row 0 is negative");
  expect_error(corrupted([&](std::vector<TensorToWrite>& t, TensorToWrite&) {
                 std::erase_if(t, [&](const TensorToWrite& x) { return x.name == scb; });
               }),
               "tensor 'model.layers.1.mlp.up_proj.weight' is int8 but its row scales 'model.layers.1.mlp.up_proj.SCB' are missing");
}

TEST(SyntheticModel, ShapeThatDisagreesWithConfigIsNamed) {
  TempDir dir;
  write_synthetic_checkpoint(small_spec(DType::kF32), dir.path());
  json config = json::parse(test::read_file(dir / "config.json"));
  config["intermediate_size"] = 128;
  test::write_file(dir / "config.json", config.dump());
  expect_error([&] {
    const Checkpoint c = Checkpoint::open(dir.path());
    BlockStack::load(c, read_model_config(dir.path()), 0, 1, DType::kF32);
  }, "mlp.gate_proj.weight' has shape [100, 64] but the model's configuration implies [128, 64]");
}

TEST(SyntheticModel, UntiedHeadIsItsOwnMatrix) {
  TempDir dir;
  const SyntheticSpec spec = small_spec(DType::kF32);
  write_synthetic_checkpoint(spec, dir.path());
  const Checkpoint c = Checkpoint::open(dir.path());
  const ModelConfig config = read_model_config(dir.path());
  ASSERT_FALSE(config.tie_word_embeddings);
  const ModelEnds ends = ModelEnds::load(c, config, DType::kF32);
  EXPECT_EQ(ends.weight_bytes(), (2 * spec.vocab_size + 1) * spec.hidden_size * 4);
  // Untied logits are not the embedding's: the head of row 5 differs from embedding row 5.
  std::vector<float> e(spec.hidden_size), logits(spec.vocab_size);
  const std::int32_t token = 5;
  ends.embed(&token, 1, e.data());
  ends.logits(e.data(), 1, logits.data());
  EXPECT_NE(std::max_element(logits.begin(), logits.end()) - logits.begin(), 5);
}

TEST(RealModel, HeadTiedThroughLmHeadOnlyLoads) {
  // tinystories-656K stores its tied embeddings only as lm_head.weight.
  const auto dir = test::models_dir() / "tinystories-656K";
  const ModelConfig config = read_model_config(dir);
  const Checkpoint c = Checkpoint::open(dir);
  ASSERT_EQ(c.find("model.embed_tokens.weight"), nullptr);
  const ModelEnds ends = ModelEnds::load(c, config, DType::kF32);
  EXPECT_EQ(ends.weight_bytes(), (config.vocab_size + 1) * config.hidden_size * 4);
}

// ---- block ranges ----

class StoriesBlocks : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::models_dir() / "stories260K";
    config_ = read_model_config(dir_);
    checkpoint_ = std::make_unique<Checkpoint>(Checkpoint::open(dir_));
    ends_ = std::make_unique<ModelEnds>(ModelEnds::load(*checkpoint_, config_, DType::kF32));
  }
  std::vector<float> embed(const std::vector<std::int32_t>& ids) {
    std::vector<float> h(ids.size() * config_.hidden_size);
    ends_->embed(ids.data(), static_cast<std::int64_t>(ids.size()), h.data());
    return h;
  }
  std::filesystem::path dir_;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<ModelEnds> ends_;
};

TEST_F(StoriesBlocks, SplitRangesComputeWhatTheWholeStackComputes) {
  const std::vector<std::int32_t> ids = {1, 403, 407, 261, 378, 432};
  const BlockStack whole = BlockStack::load(*checkpoint_, config_, 0, 5, DType::kF32);
  const BlockStack front = BlockStack::load(*checkpoint_, config_, 0, 2, DType::kF32);
  const BlockStack back = BlockStack::load(*checkpoint_, config_, 2, 5, DType::kF32);
  EXPECT_LT(front.weight_bytes(), whole.weight_bytes());
  EXPECT_EQ(front.weight_bytes() + back.weight_bytes(), whole.weight_bytes());
  auto a = embed(ids), b = embed(ids);
  KvCache ca = whole.new_cache(16), cf = front.new_cache(16), cb = back.new_cache(16);
  whole.forward(a.data(), 6, ca);
  front.forward(b.data(), 6, cf);
  back.forward(b.data(), 6, cb);
  EXPECT_EQ(a, b);
  // Decoding one more position through the split also agrees.
  auto a1 = embed({300}), b1 = embed({300});
  whole.forward(a1.data(), 1, ca);
  front.forward(b1.data(), 1, cf);
  back.forward(b1.data(), 1, cb);
  EXPECT_EQ(a1, b1);
  EXPECT_EQ(ca.length(), 7);
}

TEST_F(StoriesBlocks, RollbackRecomputesTheSameStates) {
  const BlockStack blocks = BlockStack::load(*checkpoint_, config_, 0, 5, DType::kF32);
  KvCache cache = blocks.new_cache(32);
  auto prompt = embed({1, 403, 407, 261, 378});
  blocks.forward(prompt.data(), 5, cache);
  auto first = embed({432, 383});
  blocks.forward(first.data(), 2, cache);
  cache.truncate(5);  // speculation rejected both tokens
  auto wrong = embed({100});
  blocks.forward(wrong.data(), 1, cache);
  cache.truncate(5);
  auto again = embed({432, 383});
  blocks.forward(again.data(), 2, cache);
  EXPECT_EQ(first, again);
}

TEST(HugeBuffers, FreedBuffersAreKeptUpToTheLimitAndComeBackZeroed) {
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  set_huge_buffer_reuse_limit(10 * kMiB);
  ASSERT_EQ(huge_buffer_bytes_kept(), 0u);
  std::shared_ptr<void> a = allocate_huge_buffer(3 * kMiB);  // 4 MiB of 2 MiB pages
  void* const first = a.get();
  std::memset(first, 0xab, 3 * kMiB);
  a.reset();
  EXPECT_EQ(huge_buffer_bytes_kept(), 4 * kMiB);
  std::shared_ptr<void> b = allocate_huge_buffer(3 * kMiB + 5);  // the same 4 MiB: reused, zeroed
  EXPECT_EQ(b.get(), first);
  EXPECT_EQ(huge_buffer_bytes_kept(), 0u);
  const auto* bytes = static_cast<const unsigned char*>(b.get());
  EXPECT_TRUE(std::all_of(bytes, bytes + 4 * kMiB, [](unsigned char c) { return c == 0; }));
  std::shared_ptr<void> c = allocate_huge_buffer(6 * kMiB), d = allocate_huge_buffer(6 * kMiB);
  c.reset();
  d.reset();  // 12 MiB would pass the limit: returned to the system
  EXPECT_EQ(huge_buffer_bytes_kept(), 6 * kMiB);
  std::shared_ptr<void> e = allocate_huge_buffer(8 * kMiB);  // no kept buffer of that size
  EXPECT_EQ(huge_buffer_bytes_kept(), 6 * kMiB);
  set_huge_buffer_reuse_limit(0);  // releases what is kept
  EXPECT_EQ(huge_buffer_bytes_kept(), 0u);
  b.reset();
  e.reset();
  EXPECT_EQ(huge_buffer_bytes_kept(), 0u);
}

TEST(KvCacheGrowth, MemoryFollowsThePositionsAndEveryRowMoves) {
  const std::int64_t blocks = 2, heads = 3, head_dim = 4;
  KvCache cache(blocks, heads, head_dim, 2000);
  const std::int64_t per_position = KvCache::bytes_per_position(blocks, heads, head_dim, DType::kF32);
  EXPECT_EQ(cache.max_positions(), 2000);
  const std::int64_t first = cache.capacity(0);
  EXPECT_LT(first, 500);
  EXPECT_EQ(cache.bytes(), first * per_position);
  auto value = [&](std::int64_t b, int array, std::int64_t h, std::int64_t p, std::int64_t d) {
    return static_cast<float>(((b * 2 + array) * heads + h) * 100000 + p * 10 + d);
  };
  auto fill_or_check = [&](std::int64_t positions, bool fill) {
    for (std::int64_t b = 0; b < blocks; ++b) {
      for (int array = 0; array < 2; ++array) {
        float* base = array == 0 ? cache.keys_f32(b) : cache.values_f32(b);
        for (std::int64_t h = 0; h < heads; ++h) {
          for (std::int64_t p = 0; p < positions; ++p) {
            for (std::int64_t d = 0; d < head_dim; ++d) {
              float& slot = base[(h * cache.capacity(0) + p) * head_dim + d];
              if (fill) slot = value(b, array, h, p, d);
              else ASSERT_EQ(slot, value(b, array, h, p, d)) << b << " " << array << " " << h << " " << p;
            }
          }
        }
      }
    }
  };
  fill_or_check(first, true);  // every slot, past length too: a token tree's rows wait there
  cache.set_length(3);
  cache.reserve(first);
  EXPECT_EQ(cache.capacity(0), first);
  cache.reserve(first + 1);  // twice the capacity
  EXPECT_EQ(cache.capacity(0), 2 * first);
  EXPECT_EQ(cache.bytes(), 2 * first * per_position);
  EXPECT_EQ(cache.length(), 3);
  fill_or_check(first, false);
  cache.reserve(4 * first + 7);  // more than twice: the positions asked for
  EXPECT_EQ(cache.capacity(0), 4 * first + 7);
  fill_or_check(first, false);
  cache.reserve(4 * first + 8);  // twice, up to the session's length
  EXPECT_EQ(cache.capacity(0), 2000);
  fill_or_check(first, false);
  expect_error([&] { cache.reserve(2001); }, "past the cache's 2000");
}

// A block with a sliding window of 300 beside one without: decoding 2000 positions, the windowed
// block's arrays settle at twice the window and hold every position its next step reaches (the
// values written for them, moved down in place), while the other block grows with the session.
TEST(KvCacheWindow, AWindowedBlockHoldsWhatItsWindowReachesInTwiceTheWindow) {
  const std::int64_t heads = 2, head_dim = 4, window = 300;
  KvCache cache(2, heads, head_dim, 4000, DType::kF32, {0, window});
  auto value = [](int array, std::int64_t h, std::int64_t p) { return static_cast<float>((array * 10 + h) * 100000 + p); };
  for (std::int64_t length = 0; length < 2000; ++length) {
    cache.reserve(length + 1);
    for (std::int64_t b = 0; b < 2; ++b) {
      for (int array = 0; array < 2; ++array) {
        float* base = array == 0 ? cache.keys_f32(b) : cache.values_f32(b);
        for (std::int64_t h = 0; h < heads; ++h) {
          const std::int64_t slot = length - cache.held_from(b);
          std::fill_n(base + (h * cache.capacity(b) + slot) * head_dim, head_dim, value(array, h, length));
          for (std::int64_t p = std::max<std::int64_t>(length - window + 1, 0); p <= length; p += 37) {  // what the step reaches
            ASSERT_EQ(base[(h * cache.capacity(b) + p - cache.held_from(b)) * head_dim + 3], value(array, h, p))
                << "block " << b << " position " << p << " at length " << length;
          }
        }
      }
    }
    cache.set_length(length + 1);
  }
  EXPECT_EQ(cache.held_from(0), 0);
  EXPECT_GE(cache.capacity(0), 2000);
  EXPECT_EQ(cache.capacity(1), 2 * window);
  EXPECT_GT(cache.held_from(1), 2000 - 2 * window);
  EXPECT_LE(cache.held_from(1), 2000 - window);
  const std::int64_t windows[] = {0, window};
  EXPECT_LE(cache.bytes(), KvCache::most_bytes(windows, heads, head_dim, DType::kF32, 4000, 1));
  EXPECT_EQ(KvCache::most_bytes(windows, heads, head_dim, DType::kF32, 4000, 1),
            (4000 + 2 * window) * KvCache::bytes_per_position(1, heads, head_dim, DType::kF32));
  expect_error([&] { cache.truncate(cache.earliest_length() - 1); }, "keep positions from");
}

TEST_F(StoriesBlocks, AGrowingCacheGivesTheStatesOfOneAllocatedWhole) {
  const BlockStack blocks = BlockStack::load(*checkpoint_, config_, 0, 5, DType::kF32);
  const std::int64_t length = config_.max_position_embeddings;
  KvCache growing = blocks.new_cache(length), whole = blocks.new_cache(length);
  whole.reserve(length);
  auto a = embed({1, 403, 407, 261, 378}), b = a;
  blocks.forward(a.data(), 5, growing);
  blocks.forward(b.data(), 5, whole);
  EXPECT_EQ(a, b);
  EXPECT_LT(growing.capacity(0), length);
  for (std::int64_t p = 5; p < length; ++p) {
    auto x = embed({static_cast<std::int32_t>(50 + p % 400)}), y = x;
    blocks.forward(x.data(), 1, growing);
    blocks.forward(y.data(), 1, whole);
    ASSERT_EQ(x, y) << "position " << p;
  }
  EXPECT_EQ(growing.capacity(0), length);
}

TEST_F(StoriesBlocks, PositionsPastTheSessionAreRefusedWithoutDamage) {
  const BlockStack blocks = BlockStack::load(*checkpoint_, config_, 0, 5, DType::kF32);
  KvCache cache = blocks.new_cache(4);
  auto h = embed({1, 403, 407});
  blocks.forward(h.data(), 3, cache);
  auto two = embed({1, 2});
  expect_error([&] { blocks.forward(two.data(), 2, cache); }, "pass the session's length of 4");
  EXPECT_EQ(cache.length(), 3);
  expect_error([&] { blocks.new_cache(config_.max_position_embeddings + 1); }, "max_position_embeddings");
  expect_error([&] { BlockStack::load(*checkpoint_, config_, 3, 7, DType::kF32); }, "not within the model's 5 blocks");
}

TEST_F(StoriesBlocks, PromptsAtAndPastMaxPositions) {
  const BlockStack blocks = BlockStack::load(*checkpoint_, config_, 0, 5, DType::kF32);
  GenerationRequest request;
  request.max_new_tokens = 10;
  request.prompt_ids.assign(static_cast<std::size_t>(config_.max_position_embeddings), 403);
  request.prompt_ids[0] = 1;
  LocalPipeline pipeline(blocks, session_capacity(config_, request));
  const auto result = generate(*ends_, pipeline, request, [](std::int32_t) {});
  EXPECT_EQ(result.generated_ids.size(), 1u);  // the last position yields one token, then stop
  EXPECT_EQ(result.stop, StopReason::kMaxPositions);
  request.prompt_ids.push_back(403);
  expect_error([&] { session_capacity(config_, request); }, "more than the model's max_position_embeddings (512)");
}

// ---- a process touches only its blocks ----

// Resident bytes of one kind ("RssFile:" or "RssAnon:") from /proc/self/status.
std::int64_t resident_bytes(const std::string& kind) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(kind, 0) == 0) return std::stoll(line.substr(kind.size())) * 1024;
  }
  return -1;
}

class BlockRangeResidency : public ::testing::TestWithParam<bool> {};

TEST_P(BlockRangeResidency, ReadsOnlyItsOwnWeights) {
  const bool in_place = GetParam();
  TempDir dir;
  SyntheticSpec spec = small_spec(DType::kF32);
  spec.hidden_size = 512;
  spec.intermediate_size = 2048;
  spec.num_layers = 6;
  spec.num_heads = 8;
  write_synthetic_checkpoint(spec, dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint ckpt = Checkpoint::open(dir.path());
  const std::int64_t file_before = resident_bytes("RssFile:"), anon_before = resident_bytes("RssAnon:");
  ASSERT_GE(file_before, 0);
  const BlockStack block = BlockStack::load(ckpt, config, 4, 5, WeightLoading(DType::kF32, in_place));
  KvCache cache = block.new_cache(8);
  std::vector<float> hidden(2 * config.hidden_size, 0.5f);
  block.forward(hidden.data(), 2, cache);
  const std::int64_t file_grown = resident_bytes("RssFile:") - file_before;
  const std::int64_t anon_grown = resident_bytes("RssAnon:") - anon_before;
  const std::int64_t block_bytes = block.weight_bytes();
  if (in_place) {
    EXPECT_GT(file_grown, block_bytes * 9 / 10) << "the block's own weights are mapped";
    EXPECT_LT(file_grown, block_bytes * 3 / 2) << "other blocks' weights were read too";
  } else {
    // Small tensors may land in heap pages already resident from earlier tests, so only the
    // large ones are sure to show up as growth.
    EXPECT_GT(anon_grown, block_bytes / 2) << "the block's own weights were copied";
    EXPECT_LT(anon_grown, block_bytes * 3 / 2) << "more than the block was copied";
    EXPECT_LT(file_grown, block_bytes / 10) << "the file pages were not released after copying";
  }
}

INSTANTIATE_TEST_SUITE_P(Placements, BlockRangeResidency, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "InPlace" : "Copied"; });

}  // namespace
}  // namespace sepal

// Llama-family variants on synthetic checkpoints of their shapes: Qwen2 (biases on q, k and v;
// also with YaRN's rope scaling and its attention factor),
// Qwen3 (each head of q and k RMS-normalised, heads wider than hidden / heads; also with
// use_sliding_window on its second block), Mistral (a
// sliding window shorter than the sequence) and Phi-3 (q, k, v and gate, up fused in the file, a
// window, and LongRoPE's short factors and attention factor; the reference reads the fused tensors
// itself) and Gemma (GeGLU, norms scaling by 1 + weight, embeddings times √hidden, heads of their
// own width, a tied head; the reference applies each itself) and Gemma 2 (with norms of the
// attention's and the MLP's outputs, a scale of its own and soft-capped scores and logits, a window
// on even blocks) and Gemma 3 (Gemma 2's without caps, with q and k norms of 1 + weight, its own
// RoPE base on sliding blocks and a linear factor on the others), and the mixtures of experts
// Mixtral (2 of 4 experts, renormalised, a window), Granite (Llama's blocks with its four
// multipliers: embeddings, attention scores, residuals and logits) and Qwen3-MoE (3 of 6 narrower experts, not
// renormalised, a dense block after a sparse one) and Qwen2-MoE (Qwen2's biases, a shared expert
// weighted by the sigmoid of its gate, a dense block first), OLMo 2 (norms of the attention's and
// the MLP's outputs and none of their inputs, q and k each normalised whole), OLMo 3 (OLMo 2's with a
// window on block 0, which rotates without the YaRN scaling block 1 takes) and OLMoE (3 of 5
// experts, not renormalised, OLMo's q and k norms) and SmolLM3 (block 1 without RoPE; also with
// use_sliding_window, its window there); the reference routes and reads OLMo's and SmolLM3's
// settings from config.json itself; and Granite-MoE (Granite's multipliers, 2 of 4 experts held
// stacked in one tensor per block and projection, which the reference slices itself); and GPT-OSS
// (biases on every attention projection, a sink per head, a window on block 0, YaRN untruncated,
// biased experts stacked transposed with interleaved gate and up columns, a clamped SwiGLU the
// random weights reach, all read by the reference from the file). A prompt and decode steps past the
// window must give the hidden states of the float64 reference (tests/model/reference_llama.cc),
// token trees the ids of decoding, and training passes gradients that match central differences
// of that reference (two sequences, one longer than the window).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "model/block_stack.h"
#include "model/generation.h"
#include "model/model_ends.h"
#include "model/synthetic_checkpoint.h"
#include "tests/model/reference_llama.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

// `architecture` may end in "+partial": rotary embeddings on 3/4 of each head (Phi-4-mini's kind).
SyntheticSpec variant(const std::string& name, std::int64_t window) {
  const std::string architecture = name.substr(0, name.find('+'));
  SyntheticSpec s;
  s.hidden_size = 64;
  s.intermediate_size = 128;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.vocab_size = 300;
  s.max_position_embeddings = 64;
  s.weight_std = 0.15;
  s.seed = 5;
  s.architecture = architecture;
  s.sliding_window = window;
  if (architecture == "Qwen3ForCausalLM") s.head_dim = 24;  // q: 4 heads of 24 = 96 wide, from 64
  if (architecture == "GemmaForCausalLM") {  // Gemma-2B's kind: one key/value head, wider than hidden / heads
    s.head_dim = 32;
    s.num_kv_heads = 1;
    s.tie_word_embeddings = true;
  }
  if (architecture == "Gemma2ForCausalLM") {  // caps tight enough for random weights to reach tanh's bend
    s.head_dim = 32;
    s.num_kv_heads = 2;
    s.tie_word_embeddings = true;
    s.attention_softcap = 0.8;
    s.final_logit_softcap = 1.5;
    s.query_pre_attn_scalar = 20;
  }
  if (architecture == "Gemma3ForCausalLM") {  // block 0 slides with its own RoPE base, block 1 takes a linear factor
    s.head_dim = 32;
    s.num_kv_heads = 1;
    s.tie_word_embeddings = true;
    s.sliding_window_pattern = 2;
    s.linear_rope_factor = 4;
    s.query_pre_attn_scalar = 24;
  }
  if (architecture == "MixtralForCausalLM") {  // 2 of 4 experts, renormalised
    s.num_experts = 4;
    s.experts_per_token = 2;
  }
  if (architecture == "Qwen2MoeForCausalLM") {  // 2 of 5 experts, renormalised, and a shared expert; block 0 dense
    s.num_experts = 5;
    s.experts_per_token = 2;
    s.moe_intermediate_size = 40;
    s.shared_expert_intermediate_size = 72;
    s.mlp_only_layers = {0};
  }
  if (architecture == "Qwen3MoeForCausalLM") {  // 3 of 6 narrower experts, not renormalised; block 1 dense
    s.head_dim = 24;
    s.num_experts = 6;
    s.experts_per_token = 3;
    s.moe_intermediate_size = 48;
    s.norm_topk_prob = false;
    s.mlp_only_layers = {1};
  }
  if (architecture == "GraniteMoeForCausalLM" || architecture == "GraniteMoeSharedForCausalLM") {
    // Granite's multipliers, 2 of 4 stacked experts of intermediate_size; Granite-MoE-Shared's
    // shared MLP, ungated, wider
    s.intermediate_size = 40;
    s.num_experts = 4;
    s.experts_per_token = 2;
    if (architecture == "GraniteMoeSharedForCausalLM") s.shared_expert_intermediate_size = 56;
  }
  if (architecture == "OlmoeForCausalLM") {  // 3 of 5 experts of intermediate_size, not renormalised
    s.intermediate_size = 48;
    s.num_experts = 5;
    s.experts_per_token = 3;
    s.norm_topk_prob = false;
  }
  if (architecture == "GptOssForCausalLM") {  // 2 of 4 biased experts of intermediate_size, a clamp random weights reach
    s.intermediate_size = 40;
    s.num_experts = 4;
    s.experts_per_token = 2;
    s.swiglu_limit = 1.5;
  }
  if (architecture == "Phi3ForCausalLM") {  // Phi-3.5's kind: LongRoPE, 4 times the original context
    s.max_position_embeddings = 128;
    s.long_rope_original = 32;
    if (name.ends_with("+partial")) s.partial_rotary_factor = 0.75;  // 12 of 16 dimensions rotate
  }
  return s;
}

// Training over sequences of `lengths`: d (Σ dy · blocks(x)) / dx along random directions, against
// the reference.
void expect_training_gradient(const std::filesystem::path& dir, const BlockStack& blocks, const std::vector<std::int64_t>& lengths,
                              int seed) {
  const ModelConfig& config = blocks.config();
  std::int64_t rows = 0;
  for (std::int64_t n : lengths) rows += n;
  const auto x = test::random_floats(static_cast<std::size_t>(rows * config.hidden_size), seed);
  const auto dy = test::random_floats(x.size(), seed + 1);
  std::vector<float> grad = dy;
  blocks.backward_sequences(x.data(), lengths, 0, config.num_layers, nullptr, grad.data(), nullptr);
  auto loss = [&](const std::vector<double>& at) {
    const auto out = test::reference_forward(dir, DType::kF32, at, lengths, 0, config.num_layers, {}, 0, 0);
    double s = 0;
    for (std::size_t i = 0; i < out.size(); ++i) s += dy[i] * out[i];
    return s;
  };
  test::expect_directional(loss, x, grad, 30, 1e-3);
}

class LlamaVariants : public ::testing::TestWithParam<std::pair<std::string, std::int64_t>> {};

TEST_P(LlamaVariants, MatchTheFloat64ReferenceAndSpeculate) {
  const auto [name, window] = GetParam();
  const std::string architecture = name.substr(0, name.find('+'));
  test::TempDir dir;
  write_synthetic_checkpoint(variant(name, window), dir.path());
  if (name.ends_with("+yarn")) {  // Qwen2.5's long context: YaRN's factor of 4 over 32 positions (GPT-OSS's: not truncated)
    auto c = nlohmann::json::parse(test::read_file(dir.path() / "config.json"));
    c["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32}};
    if (architecture == "GptOssForCausalLM") c["rope_scaling"]["truncate"] = false;
    test::write_file(dir.path() / "config.json", c.dump());
  }
  if (name.ends_with("+swa")) {  // use_sliding_window: a window of 5 on block 1 (max_window_layers 1)
    auto c = nlohmann::json::parse(test::read_file(dir.path() / "config.json"));
    c["use_sliding_window"] = true;
    c["sliding_window"] = 5;
    c["max_window_layers"] = 1;
    test::write_file(dir.path() / "config.json", c.dump());
  }
  if (architecture == "SmolLM3ForCausalLM") {  // block 1 without RoPE (and with +swa, its window)
    auto c = nlohmann::json::parse(test::read_file(dir.path() / "config.json"));
    c["no_rope_layers"] = {1, 0};
    test::write_file(dir.path() / "config.json", c.dump());
  }
  if (architecture == "Olmo3ForCausalLM" || architecture == "Cohere2ForCausalLM") {  // block 0 slides, block 1 attends to all
    auto c = nlohmann::json::parse(test::read_file(dir.path() / "config.json"));
    c["layer_types"] = {"sliding_attention", "full_attention"};
    test::write_file(dir.path() / "config.json", c.dump());
  }
  const ModelConfig config = read_model_config(dir.path());
  EXPECT_EQ(config.rope_dims(), name.ends_with("+partial") ? 12 : architecture.starts_with("Glm") ? config.head_dim / 2 : config.head_dim);
  if (name.ends_with("+yarn")) {
    EXPECT_EQ(config.rope_scaling.kind, RopeScaling::Kind::kYarn);
    EXPECT_EQ(config.max_position_embeddings, 128);  // stretched from 64
  }
  const bool gpt_oss = architecture == "GptOssForCausalLM";
  const bool glm = architecture.starts_with("Glm");
  EXPECT_EQ(config.attention_bias, architecture == "Qwen2ForCausalLM" || architecture == "Qwen2MoeForCausalLM" || gpt_oss || glm);
  EXPECT_EQ(config.fused_gate_up, glm || architecture == "Phi3ForCausalLM");
  EXPECT_EQ(config.attention_output_bias, gpt_oss);
  EXPECT_EQ(config.attention_sinks, gpt_oss);
  EXPECT_EQ(config.expert_biases, gpt_oss);
  const bool olmo2 = architecture == "Olmo2ForCausalLM" || architecture == "Olmo3ForCausalLM";
  const bool olmo = olmo2 || architecture == "OlmoeForCausalLM";
  EXPECT_EQ(config.qk_norm, architecture == "Qwen3ForCausalLM" || architecture == "Qwen3MoeForCausalLM" ||
                                architecture == "Gemma3ForCausalLM" || olmo || architecture == "CohereForCausalLM");
  const bool cohere = architecture.starts_with("Cohere");
  EXPECT_EQ(config.qk_norm_per_head_weights, architecture == "CohereForCausalLM");
  EXPECT_TRUE(config.layer_norms == cohere && config.parallel_block == cohere && config.rope_adjacent_pairs == (cohere || glm));
  if (cohere) {
    EXPECT_FLOAT_EQ(config.logit_divisor, 16.0f);  // logit_scale 0.0625
  }
  EXPECT_EQ(config.qk_norm_across_heads, olmo);
  EXPECT_EQ(config.rope_layers, architecture == "SmolLM3ForCausalLM" || architecture == "Cohere2ForCausalLM" ? (std::vector<bool>{true, false})
                                                                                                           : std::vector<bool>{});
  EXPECT_EQ(config.input_norms, !olmo2);
  EXPECT_EQ(config.output_norms, olmo2 || architecture.starts_with("Gemma2") || architecture.starts_with("Gemma3") ||
                                     architecture == "Glm4ForCausalLM");
  if (architecture == "MixtralForCausalLM") {
    EXPECT_TRUE(config.num_experts == 4 && config.experts_per_token == 2 && config.moe_intermediate_size == 128 &&
                config.moe_renormalize && config.sparse_block(0) && config.sparse_block(1));
  } else if (architecture == "Qwen2MoeForCausalLM") {
    EXPECT_TRUE(config.num_experts == 5 && config.experts_per_token == 2 && config.moe_intermediate_size == 40 &&
                config.shared_expert_intermediate_size == 72 && config.moe_renormalize && !config.sparse_block(0) &&
                config.sparse_block(1) && config.attention_bias);
  } else if (architecture == "GraniteMoeForCausalLM" || architecture == "GraniteMoeSharedForCausalLM") {
    EXPECT_TRUE(config.num_experts == 4 && config.experts_per_token == 2 && config.moe_intermediate_size == 40 &&
                config.moe_renormalize && config.sparse_block(0) && config.sparse_block(1));
    const bool shared = architecture == "GraniteMoeSharedForCausalLM";
    EXPECT_EQ(config.shared_expert_intermediate_size, shared ? 56 : 0);
    EXPECT_EQ(config.shared_expert_gated, !shared);
  } else if (gpt_oss) {
    EXPECT_TRUE(config.num_experts == 4 && config.experts_per_token == 2 && config.moe_intermediate_size == 40 &&
                config.moe_renormalize && config.swiglu_limit == 1.5f && config.sparse_block(0) && config.sparse_block(1));
    EXPECT_FALSE(config.rope_scaling.truncate);
  } else if (architecture == "OlmoeForCausalLM") {
    EXPECT_TRUE(config.num_experts == 5 && config.experts_per_token == 3 && config.moe_intermediate_size == 48 &&
                !config.moe_renormalize && config.sparse_block(0) && config.sparse_block(1));
  } else if (architecture == "Qwen3MoeForCausalLM") {
    EXPECT_TRUE(config.num_experts == 6 && config.experts_per_token == 3 && config.moe_intermediate_size == 48 &&
                !config.moe_renormalize && config.sparse_block(0) && !config.sparse_block(1));
  } else {
    EXPECT_FALSE(config.mixture_of_experts());
  }
  const bool gemma3 = architecture == "Gemma3ForCausalLM";
  const bool gemma2 = architecture == "Gemma2ForCausalLM" || gemma3;
  if (gemma3) {  // q and k norms, no caps, a window and its own RoPE base on block 0
    EXPECT_TRUE(config.qk_norm && config.output_norms && config.attention_softcap == 0 && config.final_logit_softcap == 0);
    EXPECT_EQ(config.layer_windows, (std::vector<std::int64_t>{window, 0}));
    EXPECT_TRUE(config.local_rope_of(0) && !config.local_rope_of(1));
    EXPECT_EQ(config.rope_scaling.kind, RopeScaling::Kind::kLinear);
  } else if (architecture.starts_with("Granite")) {  // its four multipliers, as written
    EXPECT_TRUE(config.embedding_scale == 12.0f && config.residual_scale == 0.22f && config.attention_scale == 0.25f &&
                config.logit_divisor == 8.0f);
  } else if (gpt_oss) {  // the window on block 0, both blocks rotate with YaRN
    EXPECT_EQ(config.layer_windows, (std::vector<std::int64_t>{window, 0}));
    EXPECT_TRUE(!config.local_rope_of(0) && config.rope_magnitude(0) > 1.0);
  } else if (architecture == "Cohere2ForCausalLM") {  // the window on block 0, the only one that rotates
    EXPECT_EQ(config.layer_windows, (std::vector<std::int64_t>{window, 0}));
  } else if (architecture == "Olmo3ForCausalLM") {  // the window on block 0, which rotates unscaled
    EXPECT_EQ(config.layer_windows, (std::vector<std::int64_t>{window, 0}));
    EXPECT_TRUE(config.local_rope_of(0) && !config.local_rope_of(1));
    EXPECT_EQ(config.rope_magnitude(0), 1.0);
    EXPECT_GT(config.rope_magnitude(1), 1.0);
  } else if (name.ends_with("+swa")) {
    EXPECT_EQ(config.layer_windows, (std::vector<std::int64_t>{0, 5}));
  } else if (gemma2) {  // the window on even blocks only
    EXPECT_EQ(config.sliding_window, 0);
    EXPECT_EQ(config.layer_windows, (std::vector<std::int64_t>{window, 0}));
    EXPECT_FLOAT_EQ(config.attention_scale, static_cast<float>(1 / std::sqrt(20.0)));
    EXPECT_TRUE(config.output_norms && config.attention_softcap == 0.8f && config.final_logit_softcap == 1.5f);
  } else {
    EXPECT_EQ(config.sliding_window, window);
  }
  EXPECT_EQ(config.fused_qkv, architecture == "Phi3ForCausalLM");
  if (architecture == "Phi3ForCausalLM") {  // the attention factor of the paper, from 128 / 32
    EXPECT_DOUBLE_EQ(config.rope_scaling.attention_factor, std::sqrt(1 + std::log(4.0) / std::log(32.0)));
    EXPECT_EQ(config.max_position_embeddings, 128);  // sessions past the original 32 take the long factors
    EXPECT_EQ(config.rope_scaling.kind, RopeScaling::Kind::kFactors);
  }
  const bool gemma = architecture == "GemmaForCausalLM" || gemma2;
  EXPECT_EQ(config.mlp_activation, gemma ? GateActivation::kGeluTanh : gpt_oss ? GateActivation::kClampedSwiglu : GateActivation::kSilu);
  EXPECT_EQ(config.norm_weight_plus_one, gemma);
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
  {  // the embeddings: the table's rows, Gemma's times √hidden rounded to f32
    const std::int32_t token = 140;
    std::vector<float> row(static_cast<std::size_t>(config.hidden_size));
    ends.embed(&token, 1, row.data());
    const TensorRef& table = checkpoint.get("model.embed_tokens.weight");
    const float scale = gemma ? static_cast<float>(std::sqrt(64.0)) : architecture.starts_with("Granite") ? 12.0f : 1.0f;
    for (std::int64_t i = 0; i < config.hidden_size; ++i) {
      ASSERT_EQ(row[static_cast<std::size_t>(i)], reinterpret_cast<const float*>(table.data)[token * config.hidden_size + i] * scale);
    }
  }
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32);
  const std::vector<std::int32_t> ids = {1, 77, 140, 9, 211, 33, 54, 180, 96, 12, 250, 7, 41};
  const auto n = static_cast<std::int64_t>(ids.size()), h = config.hidden_size;
  std::vector<float> hidden(static_cast<std::size_t>(n * h));
  ends.embed(ids.data(), n, hidden.data());
  const std::vector<double> input(hidden.begin(), hidden.end());
  KvCache cache = blocks.new_cache(n);
  blocks.forward(hidden.data(), 8, cache);  // a prompt of 8, then decode steps
  for (std::int64_t t = 8; t < n; ++t) blocks.forward(hidden.data() + t * h, 1, cache);
  const auto ref = test::reference_forward(dir.path(), DType::kF32, input, {n}, 0, config.num_layers, {}, 0, 0);
  double worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(hidden[i] - ref[i]) / (1.0 + std::abs(ref[i])));
  EXPECT_LT(worst, 1e-5);
  // The head: the final norm (Gemma's 1 + weight) and the tied or untied projection.
  std::vector<std::int32_t> targets(ids.begin() + 1, ids.end());
  targets.push_back(-1);
  const double head_loss = ends.cross_entropy(hidden.data(), n, targets.data(), 1.0f, nullptr);
  const double ref_loss = test::reference_cross_entropy(dir.path(), std::vector<double>(hidden.begin(), hidden.end()), targets);
  EXPECT_NEAR(head_loss, ref_loss, 1e-4 * std::abs(ref_loss));
  // and its gradient (through Gemma 2's capped logits), along random directions
  std::vector<float> head_grad(hidden.size());
  ends.cross_entropy(hidden.data(), n, targets.data(), 1.0f, head_grad.data());
  test::expect_directional([&](const std::vector<double>& at) { return test::reference_cross_entropy(dir.path(), at, targets); },
                           hidden, head_grad, 31, 1e-3);

  GenerationRequest request;
  request.prompt_ids = {1, 77, 140};
  request.max_new_tokens = 25;
  request.sampling = SamplingParams{0.9f, 0, 1.0f};
  request.seed = 3;
  LocalPipeline plain(blocks, session_capacity(config, request));
  const auto want = generate(ends, plain, request, [](std::int32_t) {}).generated_ids;
  LocalPipeline tree(blocks, session_capacity(config, request));
  ModelDraft draft(blocks, 1, ends, session_capacity(config, request));
  const Speculation speculation{&draft, 8, {}};
  EXPECT_EQ(generate(ends, tree, request, [](std::int32_t) {}, &speculation).generated_ids, want);

  expect_training_gradient(dir.path(), blocks, {9, 4}, 21);
}

// LongRoPE past the original context (32 positions of 128 here): a session longer than it
// rotates every position with the long factors, as Hugging Face's forward of a sequence that long
// does, in one forward, decode steps, steps batched with a short session, and training; a session
// within it keeps the short ones.
TEST(LongRope, ASessionPastTheOriginalContextTakesTheLongFactors) {
  for (const char* name : {"Phi3ForCausalLM", "Phi3ForCausalLM+partial"}) {
    SCOPED_TRACE(name);
    test::TempDir dir;
    write_synthetic_checkpoint(variant(name, 6), dir.path());
    const ModelConfig config = read_model_config(dir.path());
    ASSERT_EQ(config.rope_scaling.long_freq_factors.size(), static_cast<std::size_t>(config.rope_dims() / 2));
    const Checkpoint checkpoint = Checkpoint::open(dir.path());
    const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
    const BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32);
    const std::int64_t h = config.hidden_size, n_long = 40, n_short = 13;
    std::vector<std::int32_t> ids;
    for (std::int64_t t = 0; t < n_long; ++t) ids.push_back(static_cast<std::int32_t>((t * 37 + 5) % 250));
    std::vector<float> input(static_cast<std::size_t>(n_long * h));
    ends.embed(ids.data(), n_long, input.data());
    auto worst_against = [&](const std::vector<float>& got, const std::vector<double>& ref) {
      double worst = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(got[i] - ref[i]) / (1.0 + std::abs(ref[i])));
      return worst;
    };
    const auto ref_long = test::reference_forward(dir.path(), DType::kF32, std::vector<double>(input.begin(), input.end()),
                                                  {n_long}, 0, config.num_layers, {}, 0, 0);
    const auto ref_short = test::reference_forward(dir.path(), DType::kF32,
                                                   std::vector<double>(input.begin(), input.begin() + n_short * h), {n_short}, 0,
                                                   config.num_layers, {}, 0, 0);
    // A prompt of 20, then decode steps, in a session of 40 positions.
    std::vector<float> hidden = input;
    KvCache cache = blocks.new_cache(n_long);
    blocks.forward(hidden.data(), 20, cache);
    for (std::int64_t t = 20; t < n_long; ++t) blocks.forward(hidden.data() + t * h, 1, cache);
    EXPECT_LT(worst_against(hidden, ref_long), 1e-5);
    // Its first rows differ from a short session's: the long factors were taken.
    std::vector<float> short_hidden(input.begin(), input.begin() + n_short * h);
    KvCache short_cache = blocks.new_cache(n_short);
    blocks.forward(short_hidden.data(), n_short, short_cache);
    EXPECT_LT(worst_against(short_hidden, ref_short), 1e-5);
    EXPECT_GT(worst_against(std::vector<float>(hidden.begin(), hidden.begin() + n_short * h), ref_short), 1e-3);
    // Both sessions' last steps batched: each row as its session gives it alone.
    KvCache a = blocks.new_cache(n_long), b = blocks.new_cache(n_short);
    std::vector<float> ha = input, hb(input.begin(), input.begin() + n_short * h);
    blocks.forward(ha.data(), n_long - 1, a);
    blocks.forward(hb.data(), n_short - 1, b);
    const BatchedStep steps[] = {{ha.data() + (n_long - 1) * h, 1, &a}, {hb.data() + (n_short - 1) * h, 1, &b}};
    blocks.forward_batch(steps, 0, config.num_layers);
    EXPECT_LT(worst_against(ha, ref_long), 1e-5);
    EXPECT_LT(worst_against(hb, ref_short), 1e-5);
    expect_training_gradient(dir.path(), blocks, {36, 4}, 23);  // a long and a short sequence
  }
}

// Blocks with a sliding window keep only what it reaches (model/kv_cache.h): a session of a
// thousand positions, windows of 5 (Mistral, every block) and 4 (Gemma 3, block 0 of 2), gives
// the states of a cache that keeps every position, bit for bit, in a prompt, decode steps, a long
// step (after which the arrays shrink again), token trees and batched steps, while the windowed
// blocks' memory stays where KvCache::most_bytes says.
TEST(SlidingWindows, BlocksKeepOnlyTheirWindowAndGiveTheStatesOfAWholeCache) {
  for (const auto& [name, window] : {std::pair<std::string, std::int64_t>{"MistralForCausalLM", 5},
                                     std::pair<std::string, std::int64_t>{"Gemma3ForCausalLM", 4}}) {
    SCOPED_TRACE(name);
    test::TempDir dir;
    SyntheticSpec spec = variant(name, window);
    spec.max_position_embeddings = 2048;
    write_synthetic_checkpoint(spec, dir.path());
    const ModelConfig config = read_model_config(dir.path());
    const Checkpoint checkpoint = Checkpoint::open(dir.path());
    const BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32);
    const std::int64_t h = config.hidden_size, layers = config.num_layers, length = 1400;
    const std::vector<std::int64_t> windows = blocks.windows(0, layers);
    EXPECT_EQ(windows, name == "MistralForCausalLM" ? (std::vector<std::int64_t>{5, 5}) : (std::vector<std::int64_t>{4, 0}));
    KvCache kept = blocks.new_cache(length), whole = blocks.new_cache(length, 0, layers, KvKeep::kAll);
    const auto rows = [&](std::int64_t n, int seed) { return test::random_floats(static_cast<std::size_t>(n * h), seed); };
    const auto same_step = [&](std::int64_t n, int seed) {
      auto a = rows(n, seed), b = a;
      blocks.forward(a.data(), n, kept);
      blocks.forward(b.data(), n, whole);
      ASSERT_EQ(a, b) << "the step at " << kept.length() - n;
    };
    const std::int64_t most = KvCache::most_bytes(windows, config.num_kv_heads, config.head_dim, DType::kF32, length, 600);
    same_step(300, 1);  // a prompt longer than the first arrays
    for (std::int64_t t = 0; t < 300; ++t) same_step(1, 100 + static_cast<int>(t));
    EXPECT_GT(kept.held_from(0), 0);
    EXPECT_EQ(kept.held_from(1) > 0, windows[1] > 0);
    EXPECT_EQ(kept.capacity(0), 300 + window);  // the prompt's, and a window more, however long the session
    EXPECT_EQ(whole.held_from(0), 0);
    EXPECT_LE(kept.bytes(), most);
    EXPECT_LT(kept.bytes(), whole.bytes());
    same_step(600, 2);  // a long step: the windowed arrays grow to hold it
    EXPECT_GT(kept.capacity(0), 600);
    EXPECT_LE(kept.bytes(), most);
    same_step(1, 3);  // and shrink at the next, to the first arrays' size: this small a window needs no more
    EXPECT_EQ(kept.capacity(0), 256);
    // A token tree over both caches, in two stages, then one path kept and decoding on.
    const std::vector<std::int32_t> parents = {-1, 0, 0, 1, 2, 3, -1, 6};
    const auto tree_rows = rows(8, 4);
    for (const std::int64_t first : {std::int64_t{0}, std::int64_t{5}}) {
      const std::int64_t n = first == 0 ? 5 : 3;
      std::vector<float> a(tree_rows.begin() + first * h, tree_rows.begin() + (first + n) * h), b = a;
      const std::span<const std::int32_t> nodes(parents.data(), static_cast<std::size_t>(first + n));
      blocks.forward_tree(a.data(), n, nodes, kept, 0);
      blocks.forward_tree(b.data(), n, nodes, whole, 0);
      ASSERT_EQ(a, b) << "tree nodes from " << first;
    }
    const std::vector<std::int32_t> path = {0, 1, 3};
    kept.keep_path(path);
    whole.keep_path(path);
    for (std::int64_t t = 0; t < 20; ++t) same_step(1, 200 + static_cast<int>(t));
    // Steps batched with another session's: each as alone.
    KvCache other_kept = blocks.new_cache(length), other_whole = blocks.new_cache(length, 0, layers, KvKeep::kAll);
    {
      auto a = rows(270, 5), b = a;
      blocks.forward(a.data(), 270, other_kept);
      blocks.forward(b.data(), 270, other_whole);
    }
    for (int round = 0; round < 10; ++round) {
      auto x = rows(1, 300 + round), y = rows(2, 400 + round), x2 = x, y2 = y;
      const BatchedStep in_kept[] = {{x.data(), 1, &kept}, {y.data(), 2, &other_kept}};
      const BatchedStep in_whole[] = {{x2.data(), 1, &whole}, {y2.data(), 2, &other_whole}};
      blocks.forward_batch(in_kept, 0, layers);
      blocks.forward_batch(in_whole, 0, layers);
      ASSERT_EQ(x, x2);
      ASSERT_EQ(y, y2);
    }
    EXPECT_GT(other_kept.held_from(0), 0);
    // A rollback may not go back past the window of what was dropped; to 0 it starts afresh.
    EXPECT_GT(kept.earliest_length(), 0);
    try {
      kept.truncate(kept.earliest_length() - 1);
      ADD_FAILURE() << "a rollback past the window was taken";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("keep positions from"), std::string::npos) << e.what();
    }
    kept.truncate(kept.earliest_length());
    whole.truncate(kept.earliest_length());
    same_step(3, 6);
    kept.truncate(0);
    whole.truncate(0);
    same_step(280, 7);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LlamaVariants,
                         ::testing::Values(std::pair<std::string, std::int64_t>{"Qwen2ForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"Qwen2ForCausalLM+yarn", 0},
                                           std::pair<std::string, std::int64_t>{"Qwen3ForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"Qwen3ForCausalLM+swa", 0},
                                           std::pair<std::string, std::int64_t>{"MistralForCausalLM", 5},
                                           std::pair<std::string, std::int64_t>{"Phi3ForCausalLM", 6},
                                           std::pair<std::string, std::int64_t>{"Phi3ForCausalLM+partial", 6},
                                           std::pair<std::string, std::int64_t>{"GemmaForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"Gemma2ForCausalLM", 5},
                                           std::pair<std::string, std::int64_t>{"Gemma3ForCausalLM", 4},
                                           std::pair<std::string, std::int64_t>{"GraniteForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"MixtralForCausalLM", 5},
                                           std::pair<std::string, std::int64_t>{"Qwen2MoeForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"Qwen3MoeForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"Olmo2ForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"Olmo3ForCausalLM+yarn", 5},
                                           std::pair<std::string, std::int64_t>{"OlmoeForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"SmolLM3ForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"GraniteMoeForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"GraniteMoeSharedForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"SmolLM3ForCausalLM+swa", 0},
                                           std::pair<std::string, std::int64_t>{"GptOssForCausalLM+yarn", 5},
                                           std::pair<std::string, std::int64_t>{"CohereForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"Cohere2ForCausalLM", 5},
                                           std::pair<std::string, std::int64_t>{"GlmForCausalLM", 0},
                                           std::pair<std::string, std::int64_t>{"Glm4ForCausalLM", 0}),
                         [](const auto& info) {
                           const std::string& name = info.param.first;
                           return name.substr(0, name.find("For")) + (name.ends_with("+partial") ? "Partial" : "") +
                                  (name.ends_with("+yarn") ? "Yarn" : "") + (name.ends_with("+swa") ? "SlidingWindow" : "");
                         });

}  // namespace
}  // namespace sepal

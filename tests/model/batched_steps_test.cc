// Steps of several sessions through one BlockStack::forward_batch call end exactly as each
// session's forward() alone: f32, bf16 and int8 Llama blocks and BLOOM's, steps of 1 to 4 rows,
// sessions at different lengths, two with LoRA adapters and one with deep prompts over its first
// decode positions, and a mixture of experts at each type; with f32 and with bf16 key/value caches. What a host batching its sessions' steps relies on.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/error.h"
#include "kernels/matmul.h"
#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/prompt_tuning.h"
#include "model/safetensors.h"
#include "model/synthetic_checkpoint.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

void expect_batched_equals_alone(const std::filesystem::path& dir, const WeightLoading& loading, bool adapters) {
  const DType dtype = loading.dtype;
  const std::string model = dir.filename().string();
  const ModelConfig config = read_model_config(dir);
  const Checkpoint checkpoint = Checkpoint::open(dir);
  // A part of the range, as a host serving blocks [1, 3) of a session over [1, 3).
  const BlockStack stack = BlockStack::load(checkpoint, config, 0, config.num_layers, loading);
  const std::int64_t first = 1, blocks = std::min<std::int64_t>(2, config.num_layers - 1), h = config.hidden_size;
  constexpr int kSessions = 5;
  std::vector<KvCache> alone, batched;
  const std::vector<std::int64_t> prompt_lengths = {3, 1, 9, 6, 2};
  for (int i = 0; i < kSessions; ++i) {
    alone.push_back(stack.new_cache(40, first, first + blocks));
    batched.push_back(stack.new_cache(40, first, first + blocks));
  }
  // Sessions 1 and 3: LoRA on q, v and down (each expert's own, in a mixture whose experts take
  // adapters; q and v alone in one whose do not), other values each; session 2: deep prompts at
  // positions [7, 11).
  const AdapterShape shape{AdapterMethod::kLora, 2, 4.0,
                           block_has_projection(config, Projection::kDown)
                               ? std::vector<Projection>{Projection::kQ, Projection::kV, Projection::kDown}
                               : std::vector<Projection>{Projection::kQ, Projection::kV}};
  const auto values = static_cast<std::size_t>(config.num_layers * shape.values_per_block(config));
  std::vector<float> lora = test::random_floats(values, 5, 0.2f), other_lora = test::random_floats(values, 8, 0.2f);
  const BlockAdapters lora_view{shape, 0, config.num_layers, lora.data()};
  const BlockAdapters other_view{shape, 0, config.num_layers, other_lora.data()};
  const BlockAdapters* session_adapters[kSessions] = {nullptr, adapters ? &lora_view : nullptr, nullptr,
                                                      adapters ? &other_view : nullptr, nullptr};
  const std::vector<float> deep_values = test::random_floats(static_cast<std::size_t>(blocks * 4 * h), 6, 0.5f);
  const DeepPrompts deep{deep_values.data(), 4, 7};
  const DeepPrompts* session_prompts[kSessions] = {nullptr, nullptr, &deep, nullptr, nullptr};
  for (int i = 0; i < kSessions; ++i) {
    auto rows = test::random_floats(static_cast<std::size_t>(prompt_lengths[i] * h), 10 + i);
    auto copy = rows;
    stack.forward(rows.data(), prompt_lengths[i], alone[i], first, session_prompts[i], session_adapters[i]);
    stack.forward(copy.data(), prompt_lengths[i], batched[i], first, session_prompts[i], session_adapters[i]);
  }
  for (int round = 0; round < 6; ++round) {
    std::vector<std::vector<float>> want, got;
    std::vector<BatchedStep> steps;
    for (int i = 0; i < kSessions; ++i) {
      const std::int64_t n = 1 + (round + i) % kStreamingMaxTokens;
      want.push_back(test::random_floats(static_cast<std::size_t>(n * h), 100 * round + i));
      got.push_back(want.back());
      stack.forward(want.back().data(), n, alone[i], first, session_prompts[i], session_adapters[i]);
    }
    for (int i = 0; i < kSessions; ++i) {
      steps.push_back(BatchedStep{got[i].data(), static_cast<std::int64_t>(got[i].size()) / h, &batched[i],
                                  session_prompts[i], session_adapters[i]});
    }
    stack.forward_batch(steps, first, blocks);
    for (int i = 0; i < kSessions; ++i) {
      EXPECT_EQ(got[i], want[i]) << model << " " << dtype_name(dtype) << ", caches " << dtype_name(loading.kv_dtype) << ": round " << round << ", session " << i;
      EXPECT_EQ(batched[i].length(), alone[i].length());
    }
  }
  // Refused, with no cache changed: a step of too many rows, a cache twice, a cache too short.
  std::vector<float> rows = test::random_floats(static_cast<std::size_t>(8 * h), 77);
  const std::int64_t before = batched[0].length();
  EXPECT_THROW(stack.forward_batch(std::vector<BatchedStep>{{rows.data(), 1, &batched[0]}, {rows.data() + h, 5, &batched[1]}}, first, blocks), Error);
  EXPECT_THROW(stack.forward_batch(std::vector<BatchedStep>{{rows.data(), 1, &batched[0]}, {rows.data() + h, 1, &batched[0]}}, first, blocks), Error);
  KvCache short_cache = stack.new_cache(2, first, first + blocks);
  EXPECT_THROW(stack.forward_batch(std::vector<BatchedStep>{{rows.data(), 1, &batched[0]}, {rows.data() + h, 3, &short_cache}}, first, blocks), Error);
  KvCache other_blocks = stack.new_cache(8, 0, config.num_layers);  // more blocks than the batch runs
  EXPECT_THROW(stack.forward_batch(std::vector<BatchedStep>{{rows.data(), 1, &other_blocks}}, first, blocks), Error);
  EXPECT_EQ(batched[0].length(), before);
}

TEST(BatchedSteps, LlamaF32EqualsEachSessionAlone) { expect_batched_equals_alone(test::models_dir() / "stories260K", DType::kF32, true); }
TEST(BatchedSteps, LlamaBf16EqualsEachSessionAlone) { expect_batched_equals_alone(test::models_dir() / "tinystories-656K", DType::kBF16, true); }
TEST(BatchedSteps, LlamaInt8EqualsEachSessionAlone) { expect_batched_equals_alone(test::models_dir() / "tinystories-656K", DType::kI8, true); }
TEST(BatchedSteps, Bf16CachesEqualEachSessionAlone) {
  WeightLoading loading(DType::kI8);
  loading.kv_dtype = DType::kBF16;
  expect_batched_equals_alone(test::models_dir() / "tinystories-656K", loading, true);
  loading.dtype = DType::kF32;
  expect_batched_equals_alone(test::models_dir() / "bloom-synth", loading, false);
}
// A mixture of experts (Qwen3-MoE's kind: 3 of 6 experts, a dense block among sparse ones; and
// Qwen2-MoE's, with a shared expert; OLMoE's; GPT-OSS's): each row's experts run over the rows that picked them,
// gathered from every session of the step (OLMoE's experts with each session's own adapters).
TEST(BatchedSteps, MixtureOfExpertsEqualsEachSessionAlone) {
  test::TempDir dir;
  SyntheticSpec spec;
  spec.architecture = "Qwen3MoeForCausalLM";
  spec.hidden_size = 64;
  spec.intermediate_size = 96;
  spec.moe_intermediate_size = 48;
  spec.num_layers = 4;
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.vocab_size = 300;
  spec.num_experts = 6;
  spec.experts_per_token = 3;
  spec.mlp_only_layers = {2};
  spec.weight_std = 0.1;
  write_synthetic_checkpoint(spec, dir.path() / "qwen3moe");
  spec.architecture = "Qwen2MoeForCausalLM";  // and a shared expert every row takes
  spec.shared_expert_intermediate_size = 80;
  write_synthetic_checkpoint(spec, dir.path() / "qwen2moe");
  spec.architecture = "OlmoeForCausalLM";  // OLMo's q and k norms, every block sparse
  spec.shared_expert_intermediate_size = 0, spec.moe_intermediate_size = 0, spec.mlp_only_layers = {};
  write_synthetic_checkpoint(spec, dir.path() / "olmoe");
  spec.architecture = "GptOssForCausalLM";  // biased experts with a clamped SwiGLU, sinks, a window on every other block
  spec.head_dim = 16, spec.sliding_window = 3, spec.swiglu_limit = 1.5;
  write_synthetic_checkpoint(spec, dir.path() / "gpt_oss");
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
    expect_batched_equals_alone(dir.path() / "qwen3moe", dtype, true);
    expect_batched_equals_alone(dir.path() / "qwen2moe", dtype, true);
    expect_batched_equals_alone(dir.path() / "olmoe", dtype, true);
    expect_batched_equals_alone(dir.path() / "gpt_oss", dtype, true);
  }
}
// OLMo 2: the residual stream itself into the attention and the MLP, their outputs normalised.
TEST(BatchedSteps, Olmo2EqualsEachSessionAlone) {
  test::TempDir dir;
  SyntheticSpec spec;
  spec.architecture = "Olmo2ForCausalLM";
  spec.hidden_size = 64, spec.intermediate_size = 96, spec.num_layers = 3, spec.num_heads = 4, spec.num_kv_heads = 2;
  spec.vocab_size = 300, spec.weight_std = 0.1;
  write_synthetic_checkpoint(spec, dir.path());
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) expect_batched_equals_alone(dir.path(), dtype, true);
}
// Cohere: LayerNorms, the attention and the MLP on one norm, RoPE over adjacent pairs with each
// session's table, per-head q and k norms; Cohere 2: a window on 3 of 4 blocks, which alone rotate;
// GLM-4.
TEST(BatchedSteps, CohereAndGlmEqualEachSessionAlone) {
  test::TempDir dir;
  SyntheticSpec spec;
  spec.hidden_size = 64, spec.intermediate_size = 96, spec.num_layers = 4, spec.num_heads = 4, spec.num_kv_heads = 2;
  spec.vocab_size = 300, spec.weight_std = 0.1;
  spec.architecture = "CohereForCausalLM";
  write_synthetic_checkpoint(spec, dir.path() / "cohere");
  spec.architecture = "Cohere2ForCausalLM";
  spec.sliding_window = 3;
  write_synthetic_checkpoint(spec, dir.path() / "cohere2");
  spec.architecture = "Glm4ForCausalLM";  // and GLM-4's half of each head rotating in pairs, its output norms
  spec.sliding_window = 0;
  write_synthetic_checkpoint(spec, dir.path() / "glm4");
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
    expect_batched_equals_alone(dir.path() / "cohere", dtype, true);
    expect_batched_equals_alone(dir.path() / "cohere2", dtype, true);
    expect_batched_equals_alone(dir.path() / "glm4", dtype, true);
  }
}
TEST(BatchedSteps, BloomEqualsEachSessionAlone) { expect_batched_equals_alone(test::models_dir() / "bloom-synth", DType::kF32, false); }

}  // namespace
}  // namespace sepal

// PEQA and LoRA adapters on a block range (model/block_adapters.h): the adapted forward of the
// training pass and of the cached (inference) pass against a float64 reference, and the gradients
// of the input and of every adapter value against central differences of that reference.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "model/prompt_tuning.h"
#include "model/synthetic_checkpoint.h"
#include "tests/model/reference_llama.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

SyntheticSpec small_llama() {
  SyntheticSpec s;
  s.hidden_size = 48;
  s.intermediate_size = 96;
  s.num_layers = 3;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.vocab_size = 300;
  s.max_position_embeddings = 64;
  s.weight_std = 0.15;
  s.seed = 9;
  return s;
}

// A mixture of experts of the same size: `architecture`'s experts (4, 2 picked a row) each take
// adapters of their own on gate, up and down (and so does a shared expert).
// "Qwen3MoeDense" is Qwen3-MoE with block 1 dense (mlp_only_layers); Qwen2-MoE's shared expert is
// 56 wide.
SyntheticSpec small_mixture(const std::string& architecture) {
  SyntheticSpec s = small_llama();
  s.architecture = architecture == "Qwen3MoeDense" ? "Qwen3MoeForCausalLM" : architecture;
  s.num_experts = 4;
  s.experts_per_token = 2;
  s.moe_intermediate_size = 40;
  if (architecture == "Qwen3MoeDense") s.mlp_only_layers = {1};
  if (architecture == "Qwen2MoeForCausalLM") s.shared_expert_intermediate_size = 56;
  return s;
}

struct Case {
  const char* name;
  AdapterMethod method;
  std::vector<Projection> targets;
  DType dtype;
  const char* mixture = nullptr;  ///< an architecture with experts, or a dense Llama
};

class Adapters : public ::testing::TestWithParam<Case> {};

TEST_P(Adapters, ForwardAndGradientsMatchTheFloat64Reference) {
  const Case& k = GetParam();
  test::TempDir dir;
  write_synthetic_checkpoint(k.mixture ? small_mixture(k.mixture) : small_llama(), dir.path());
  const ModelConfig config = read_model_config(dir.path());
  WeightLoading loading(k.dtype);
  // Every column an outlier: the int8 product is then the float product of the dequantized
  // weights, which the reference computes.
  loading.outlier_threshold = 1e-30f;
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, loading);
  AdapterShape shape;
  shape.method = k.method;
  shape.rank = k.method == AdapterMethod::kLora ? 3 : 0;
  shape.alpha = 6.0;
  shape.targets = k.targets;
  validate(shape, config);
  // Blocks [1, 3) of the stack, with values away from the starting point (B = 0, m = 0).
  const std::int64_t first = 1, count = 2, per_block = shape.values_per_block(config);
  const auto values = test::random_floats(static_cast<std::size_t>(count * per_block), 41, 0.3f);
  const BlockAdapters adapters{shape, first, count, values.data()};
  test::ReferenceAdapters reference{shape, std::vector<double>(values.begin(), values.end())};

  const std::vector<std::int64_t> lengths = {7, 5};
  const std::int64_t h = config.hidden_size, tokens = 12;
  const auto x = test::random_floats(static_cast<std::size_t>(tokens * h), 42);
  auto out = x;
  blocks.forward_sequences(out.data(), lengths, first, count, nullptr, &adapters);
  const auto want = test::reference_forward(dir.path(), k.dtype, std::vector<double>(x.begin(), x.end()), lengths, first,
                                            count, {}, 0, 0, &reference);
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(out[i] - want[i]) / (1 + std::abs(want[i])));
  EXPECT_LT(worst, 2e-5) << "adapted forward";

  // The cached forward (a prompt of 4, then decode steps) adapts the same way; a mixture's decode
  // step also with more threads than a row's experts (which runs their products together).
  const int threads = compute_threads();
  for (const int t_count : k.mixture ? std::vector<int>{threads, 4} : std::vector<int>{threads}) {
    set_compute_threads(t_count);
    KvCache cache = blocks.new_cache(8, first, first + count);
    std::vector<float> cached(x.begin(), x.begin() + 7 * h);
    blocks.forward(cached.data(), 4, cache, first, nullptr, &adapters);
    for (std::int64_t t = 4; t < 7; ++t) blocks.forward(cached.data() + t * h, 1, cache, first, nullptr, &adapters);
    for (std::int64_t i = 0; i < 7 * h; ++i) EXPECT_NEAR(cached[i], out[i], 1e-4 * (1 + std::abs(out[i]))) << t_count << " threads, " << i;
  }
  set_compute_threads(threads);

  // Gradients: of Σ dy · blocks(x) with respect to x and to the adapter values.
  const auto dy = test::random_floats(x.size(), 43);
  std::vector<float> grad = dy, adapter_grads(values.size(), NAN);
  blocks.backward_sequences(x.data(), lengths, first, count, nullptr, grad.data(), nullptr, &adapters, adapter_grads.data());
  auto loss = [&](const std::vector<double>& at, const std::vector<double>& adapter_values) {
    test::ReferenceAdapters r{shape, adapter_values};
    const auto o = test::reference_forward(dir.path(), k.dtype, at, lengths, first, count, {}, 0, 0, &r);
    double s = 0;
    for (std::size_t i = 0; i < o.size(); ++i) s += dy[i] * o[i];
    return s;
  };
  const std::vector<double> x0(x.begin(), x.end());
  test::expect_directional([&](const std::vector<double>& v) { return loss(x0, v); }, values, adapter_grads, 50, 1e-3);
  test::expect_directional([&](const std::vector<double>& at) { return loss(at, reference.values); }, x, grad, 60, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(
    Methods, Adapters,
    ::testing::Values(Case{"lora_q_v", AdapterMethod::kLora, {Projection::kQ, Projection::kV}, DType::kF32},
                      Case{"lora_every_projection", AdapterMethod::kLora,
                           {Projection::kQ, Projection::kK, Projection::kV, Projection::kO, Projection::kGate,
                            Projection::kUp, Projection::kDown},
                           DType::kF32},
                      Case{"lora_on_int8", AdapterMethod::kLora, {Projection::kQ, Projection::kV, Projection::kDown}, DType::kI8},
                      Case{"peqa", AdapterMethod::kPeqa,
                           {Projection::kQ, Projection::kK, Projection::kV, Projection::kO, Projection::kGate,
                            Projection::kUp, Projection::kDown},
                           DType::kI8},
                      Case{"lora_on_mixtral_experts", AdapterMethod::kLora,
                           {Projection::kQ, Projection::kV, Projection::kGate, Projection::kUp, Projection::kDown},
                           DType::kF32, "MixtralForCausalLM"},
                      Case{"lora_on_qwen3_moe_experts_int8", AdapterMethod::kLora, {Projection::kUp, Projection::kDown},
                           DType::kI8, "Qwen3MoeForCausalLM"},
                      Case{"peqa_on_mixtral_experts", AdapterMethod::kPeqa,
                           {Projection::kQ, Projection::kK, Projection::kV, Projection::kO, Projection::kGate,
                            Projection::kUp, Projection::kDown},
                           DType::kI8, "MixtralForCausalLM"},
                      Case{"lora_on_qwen2_moe_shared_expert", AdapterMethod::kLora,
                           {Projection::kV, Projection::kGate, Projection::kUp, Projection::kDown}, DType::kF32,
                           "Qwen2MoeForCausalLM"},
                      Case{"peqa_on_qwen2_moe_shared_expert", AdapterMethod::kPeqa,
                           {Projection::kQ, Projection::kGate, Projection::kUp, Projection::kDown}, DType::kI8,
                           "Qwen2MoeForCausalLM"},
                      Case{"lora_on_qwen3_moe_with_a_dense_block", AdapterMethod::kLora,
                           {Projection::kQ, Projection::kGate, Projection::kDown}, DType::kF32, "Qwen3MoeDense"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(AdapterTuning, BatchGradientMatchesCentralDifferencesOfTheReferenceLoss) {
  // The whole tuning objective: the mean next-token loss through every block and the head, with
  // LoRA on q, v and down; the gradient batch_gradient gives, in flat() order.
  test::TempDir dir;
  write_synthetic_checkpoint(small_llama(), dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32);
  const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
  const AdapterShape shape{AdapterMethod::kLora, 2, 4.0, {Projection::kQ, Projection::kV, Projection::kDown}};
  PromptParameters params = initial_adapter_parameters(shape, config, 7);
  // Away from B = 0, so that A's gradient is not zero.
  const auto moved = test::random_floats(params.adapter.size(), 46, 0.2f);
  for (std::size_t i = 0; i < moved.size(); ++i) params.adapter[i] += moved[i];
  std::vector<Example> examples(3);
  for (std::size_t e = 0; e < examples.size(); ++e) {
    for (int i = 0; i < 6 + static_cast<int>(e) * 2; ++i) examples[e].ids.push_back(static_cast<std::int32_t>((i * 37 + e * 11) % 300));
    examples[e].scored.assign(examples[e].ids.size(), 1);
  }
  std::vector<const Example*> views;
  for (const auto& e : examples) views.push_back(&e);
  LocalTrainingBlocks local(blocks);
  const BatchGradient g = batch_gradient(ends, local, params, views, 2);
  ASSERT_EQ(g.grad.size(), params.size());
  // The reference: the same packed rows through the float64 blocks and head.
  const PromptedBatch batch = build_batch(ends, views, &params);
  auto loss = [&](const std::vector<double>& values) {
    test::ReferenceAdapters r{shape, values};
    const auto out = test::reference_forward(dir.path(), DType::kF32, std::vector<double>(batch.hidden.begin(), batch.hidden.end()),
                                             batch.lengths, 0, config.num_layers, {}, 0, 0, &r);
    return test::reference_cross_entropy(dir.path(), out, batch.targets) / static_cast<double>(batch.scored);
  };
  const std::vector<double> at(params.adapter.begin(), params.adapter.end());
  EXPECT_NEAR(g.loss_sum / static_cast<double>(g.scored), loss(at), 1e-4);
  test::expect_directional(loss, params.adapter, g.grad, 80, 1e-3, 1e-2);
}

TEST(AdaptersAtTheStart, LeaveTheModelAsItIs) {
  // LoRA starts with B = 0 and PEQA with m = 0: the bits of the base model.
  test::TempDir dir;
  write_synthetic_checkpoint(small_llama(), dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kI8);
  const auto x = test::random_floats(static_cast<std::size_t>(6 * config.hidden_size), 44);
  auto plain = x;
  const std::vector<std::int64_t> lengths = {6};
  blocks.forward_sequences(plain.data(), lengths, 0, config.num_layers, nullptr);
  for (const AdapterMethod method : {AdapterMethod::kPeqa, AdapterMethod::kLora}) {
    AdapterShape shape{method, method == AdapterMethod::kLora ? 2 : 0, 4.0, {Projection::kQ, Projection::kV, Projection::kDown}};
    std::vector<float> values(static_cast<std::size_t>(config.num_layers * shape.values_per_block(config)), 0.0f);
    if (method == AdapterMethod::kLora) {  // A random, B zero
      for (std::int64_t b = 0; b < config.num_layers; ++b) {
        for (const Projection p : shape.targets) {
          const auto [rows, cols] = projection_shape(config, p, b);
          float* a = values.data() + b * shape.values_per_block(config) + shape.offset_in_block(config, p, b);
          for (std::int64_t i = 0; i < shape.rank * cols; ++i) a[i] = 0.01f * static_cast<float>(i % 7);
          (void)rows;
        }
      }
    }
    const BlockAdapters adapters{shape, 0, config.num_layers, values.data()};
    auto adapted = x;
    blocks.forward_sequences(adapted.data(), lengths, 0, config.num_layers, nullptr, &adapters);
    EXPECT_EQ(adapted, plain);
  }
}

TEST(AdaptersAreChecked, OneLineEach) {
  test::TempDir dir;
  write_synthetic_checkpoint(small_llama(), dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  const BlockStack f32 = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32);
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { validate(AdapterShape{AdapterMethod::kLora, 0, 1.0, {Projection::kQ}}, config); }).find("rank"),
            std::string::npos);
  EXPECT_NE(message([&] { validate(AdapterShape{AdapterMethod::kLora, 4, 1.0, {}}, config); }).find("at least one target"),
            std::string::npos);
  EXPECT_NE(message([&] { validate(AdapterShape{AdapterMethod::kLora, 4, 1e300, {Projection::kQ}}, config); })
                .find("a positive number up to 1e30"),
            std::string::npos);
  EXPECT_NE(message([&] { validate(AdapterShape{AdapterMethod::kLora, 4, 1.0, {Projection::kV, Projection::kQ}}, config); })
                .find("distinct"),
            std::string::npos);
  const AdapterShape peqa{AdapterMethod::kPeqa, 0, 0.0, {Projection::kQ}};
  std::vector<float> values(static_cast<std::size_t>(config.num_layers * peqa.values_per_block(config)), 0.1f);
  const BlockAdapters on_f32{peqa, 0, config.num_layers, values.data()};
  auto x = test::random_floats(static_cast<std::size_t>(4 * config.hidden_size), 45);
  const std::vector<std::int64_t> lengths = {4};
  EXPECT_NE(message([&] { f32.forward_sequences(x.data(), lengths, 0, config.num_layers, nullptr, &on_f32); }).find("--dtype int8"),
            std::string::npos);
  const BlockAdapters partial{peqa, 1, 1, values.data()};
  EXPECT_NE(message([&] { f32.forward_sequences(x.data(), lengths, 0, 2, nullptr, &partial); }).find("do not cover"),
            std::string::npos);
  EXPECT_EQ(parse_projection("up_proj"), Projection::kUp);
  EXPECT_FALSE(parse_projection("w1"));
}

}  // namespace
}  // namespace sepal

// Training passes of BlockStack: the packed forward agrees with the cached inference forward, and
// the backward (input and deep-prompt gradients) agrees with central finite differences of the
// forward, on a real model and on synthetic shapes at every weight type.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/block_stack.h"
#include "model/synthetic_checkpoint.h"
#include "tests/model/reference_llama.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using test::random_floats;

struct Loaded {
  ModelConfig config;
  BlockStack blocks;
};

Loaded load(const std::filesystem::path& dir, DType dtype) {
  const ModelConfig config = read_model_config(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  return {config, BlockStack::load(ckpt, config, 0, config.num_layers, WeightLoading(dtype))};
}

std::filesystem::path real_model() { return test::models_dir() / "tinystories-656K"; }

// One training pass set up for checking: inputs, the output's gradient, optional deep prompts.
struct Pass {
  const BlockStack* stack;
  std::filesystem::path dir;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> lengths;
  std::int64_t first = 0, blocks = 0;
  std::vector<float> input, dy, prompts;
  DeepPrompts deep;

  Pass(const Loaded& m, std::filesystem::path model, DType type, std::vector<std::int64_t> ls,
       std::int64_t first_block, std::int64_t count, std::int64_t prompt_count, std::uint64_t seed)
      : stack(&m.blocks), dir(std::move(model)), dtype(type), lengths(std::move(ls)), first(first_block), blocks(count) {
    const std::int64_t tokens = std::accumulate(lengths.begin(), lengths.end(), std::int64_t{0});
    const std::int64_t h = m.config.hidden_size;
    input = random_floats(static_cast<std::size_t>(tokens * h), seed);
    dy = random_floats(input.size(), seed + 1);
    prompts = random_floats(static_cast<std::size_t>(blocks * prompt_count * h), seed + 2, 0.5f);
    deep = DeepPrompts{prompts.data(), prompt_count, 1};
  }
  // Σ dy · forward(x, prompts), by the float64 reference.
  double loss(const std::vector<double>& x, const std::vector<double>& p) const {
    const auto out = test::reference_forward(dir, dtype, x, lengths, first, blocks, p, deep.count, deep.offset);
    double s = 0;
    for (std::size_t i = 0; i < out.size(); ++i) s += dy[i] * out[i];
    return s;
  }
  // The analytic gradients: d loss / d input and d loss / d prompts.
  std::pair<std::vector<float>, std::vector<float>> gradients() const {
    std::vector<float> grad = dy, pgrad(prompts.size(), NAN);
    stack->backward_sequences(input.data(), lengths, first, blocks, deep.count ? &deep : nullptr, grad.data(),
                              pgrad.data());
    return {grad, pgrad};
  }
};

TEST(BlockTraining, PackedForwardIsTheCachedForwardOfEachSequence) {
  const Loaded m = load(real_model(), DType::kF32);
  const std::vector<std::int64_t> lengths{5, 9, 6};  // each past the decode path's 4 tokens
  const std::int64_t h = m.config.hidden_size;
  auto hidden = random_floats(20 * h, 3);
  const auto input = hidden;
  m.blocks.forward_sequences(hidden.data(), lengths, 0, m.config.num_layers, nullptr);
  std::int64_t start = 0;
  for (std::int64_t n : lengths) {
    std::vector<float> alone(input.begin() + start * h, input.begin() + (start + n) * h);
    KvCache cache = m.blocks.new_cache(32);
    m.blocks.forward(alone.data(), n, cache);
    const std::vector<float> packed(hidden.begin() + start * h, hidden.begin() + (start + n) * h);
    if (active_cpu_isa() >= CpuIsa::kAvx512) {
      EXPECT_EQ(packed, alone) << "sequence at " << start;  // the products are batch-independent there
    } else {
      for (std::size_t i = 0; i < alone.size(); ++i) EXPECT_NEAR(packed[i], alone[i], 1e-4);
    }
    start += n;
  }
}

TEST(BlockTraining, InputAndDeepPromptGradientsMatchFiniteDifferencesOnARealModel) {
  const Loaded m = load(real_model(), DType::kF32);
  for (const auto& [first, blocks] : {std::pair<std::int64_t, std::int64_t>{0, 2}, {1, 1}}) {
    const Pass pass(m, real_model(), DType::kF32, {6, 11}, first, blocks, 3, 10 + first);
    const auto [grad, pgrad] = pass.gradients();
    const std::vector<double> input(pass.input.begin(), pass.input.end()), prompts(pass.prompts.begin(), pass.prompts.end());
    test::expect_directional([&](const std::vector<double>& x) { return pass.loss(x, prompts); }, pass.input, grad, 100, 1e-4);
    test::expect_directional([&](const std::vector<double>& p) { return pass.loss(input, p); }, pass.prompts, pgrad, 200, 1e-4);
  }
}

SyntheticSpec synthetic(DType dtype) {
  SyntheticSpec s;
  s.hidden_size = 64;
  s.intermediate_size = 96;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 32;  // the AVX-512 attention rows
  s.vocab_size = 300;
  s.max_position_embeddings = 64;
  s.dtype = dtype;
  s.seed = 5;
  s.weight_std = 0.15;  // blocks that change their input noticeably
  return s;
}

TEST(BlockTraining, Bf16GradientsMatchFiniteDifferences) {
  test::TempDir dir;
  write_synthetic_checkpoint(synthetic(DType::kBF16), dir / "m");
  const Loaded m = load(dir / "m", DType::kBF16);
  const Pass pass(m, dir / "m", DType::kBF16, {7, 4}, 0, 2, 2, 30);
  const auto [grad, pgrad] = pass.gradients();
  const std::vector<double> input(pass.input.begin(), pass.input.end()), prompts(pass.prompts.begin(), pass.prompts.end());
  test::expect_directional([&](const std::vector<double>& x) { return pass.loss(x, prompts); }, pass.input, grad, 300, 1e-4);
  test::expect_directional([&](const std::vector<double>& p) { return pass.loss(input, p); }, pass.prompts, pgrad, 400, 1e-4);
}

TEST(BlockTraining, Int8BackwardUsesTheDequantizedWeights) {
  // LLM.int8()'s forward rounds activations, so it has no useful finite differences; its backward
  // is the f32 backward of the dequantized weights, close to the f32 model's.
  test::TempDir dir;
  write_synthetic_checkpoint(synthetic(DType::kF32), dir / "m");
  const Loaded f32 = load(dir / "m", DType::kF32), i8 = load(dir / "m", DType::kI8);
  const auto [grad, pgrad] = Pass(f32, dir / "m", DType::kF32, {7, 4}, 0, 2, 2, 40).gradients();
  const auto [grad8, pgrad8] = Pass(i8, dir / "m", DType::kI8, {7, 4}, 0, 2, 2, 40).gradients();
  EXPECT_LT(test::normalized_error(grad8, {grad.begin(), grad.end()}), 3e-2);
  EXPECT_LT(test::normalized_error(pgrad8, {pgrad.begin(), pgrad.end()}), 3e-2);
}

TEST(BlockTraining, BackwardIsTheSameAtAnyThreadCount) {
  const Loaded m = load(real_model(), DType::kF32);
  const Pass pass(m, real_model(), DType::kF32, {40, 23}, 0, 2, 4, 50);
  const int threads = compute_threads();
  set_compute_threads(1);
  const auto one = pass.gradients();
  set_compute_threads(2);
  const auto two = pass.gradients();
  set_compute_threads(threads);
  EXPECT_EQ(one.first, two.first);
  EXPECT_EQ(one.second, two.second);
}

TEST(BlockTraining, BadPassesAreRefused) {
  const Loaded m = load(real_model(), DType::kF32);
  std::vector<float> hidden(10 * m.config.hidden_size, 0.5f);
  std::vector<float> prompts(2 * 4 * m.config.hidden_size);
  const DeepPrompts deep{prompts.data(), 4, 1};
  const std::vector<std::int64_t> fits{5, 5}, short_one{8, 2}, empty{}, zero{10, 0};
  EXPECT_NO_THROW(m.blocks.forward_sequences(hidden.data(), fits, 0, 2, &deep));
  EXPECT_THROW(m.blocks.forward_sequences(hidden.data(), short_one, 0, 2, &deep), Error);
  EXPECT_THROW(m.blocks.forward_sequences(hidden.data(), empty, 0, 2, nullptr), Error);
  EXPECT_THROW(m.blocks.forward_sequences(hidden.data(), zero, 0, 2, nullptr), Error);
  EXPECT_THROW(m.blocks.forward_sequences(hidden.data(), fits, 1, 2, nullptr), Error);
}

}  // namespace
}  // namespace sepal

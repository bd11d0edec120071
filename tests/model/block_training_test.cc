// Training passes of BlockStack: the packed forward agrees with the cached inference forward, and
// the backward (input and deep-prompt gradients) agrees with central finite differences of the
// forward, on a real model and on synthetic shapes at every weight type.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/cpu_isa.h"
#include "kernels/dtype.h"
#include "kernels/rope.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/block_stack.h"
#include "model/synthetic_checkpoint.h"
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

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// ---- a float64 forward of the blocks, written here from Llama's definition ----

std::vector<double> matrix(const HeldMatrix& m) {
  std::vector<double> out(static_cast<std::size_t>(m.view.rows * m.view.cols));
  for (std::size_t i = 0; i < out.size(); ++i) {
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

std::vector<double> rms(const std::vector<double>& x, const HeldVector& weight, double eps) {
  const std::int64_t dim = weight.size, n = static_cast<std::int64_t>(x.size()) / dim;
  std::vector<double> y(x.size());
  for (std::int64_t t = 0; t < n; ++t) {
    double ms = 0;
    for (std::int64_t i = 0; i < dim; ++i) ms += x[t * dim + i] * x[t * dim + i];
    const double r = 1 / std::sqrt(ms / dim + eps);
    for (std::int64_t i = 0; i < dim; ++i) y[t * dim + i] = x[t * dim + i] * r * weight.data[i];
  }
  return y;
}

void rotate(std::vector<double>& x, std::int64_t heads, std::int64_t hd, const std::vector<std::int64_t>& pos,
            const std::vector<double>& inv_freq) {
  for (std::size_t t = 0; t < pos.size(); ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < hd / 2; ++i) {
        double* v = &x[(t * heads + h) * hd];
        const double a = v[i], b = v[i + hd / 2], angle = pos[t] * inv_freq[i];
        v[i] = a * std::cos(angle) - b * std::sin(angle);
        v[i + hd / 2] = b * std::cos(angle) + a * std::sin(angle);
      }
}

// The blocks [first, first + blocks) over packed sequences, deep prompts added at each block.
std::vector<double> reference_forward(const std::filesystem::path& dir, DType dtype, std::vector<double> x,
                                      const std::vector<std::int64_t>& lengths, std::int64_t first,
                                      std::int64_t blocks, const std::vector<double>& prompts,
                                      std::int64_t prompt_count, std::int64_t offset) {
  const ModelConfig c = read_model_config(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  const std::int64_t h = c.hidden_size, hd = c.head_dim, group = c.num_heads / c.num_kv_heads;
  const auto inv_freq = rope_inverse_frequencies(hd, c.rope_theta, c.rope_scaling);
  std::vector<std::int64_t> pos, starts;
  for (std::int64_t n : lengths) {
    starts.push_back(static_cast<std::int64_t>(pos.size()));
    for (std::int64_t p = 0; p < n; ++p) pos.push_back(p);
  }
  for (std::int64_t b = 0; b < blocks; ++b) {
    const BlockWeights w = load_block_weights(ckpt, c, first + b, WeightLoading(dtype));
    for (std::int64_t start : starts)
      for (std::int64_t i = 0; i < prompt_count * h; ++i) x[(start + offset) * h + i] += prompts[(b * prompt_count) * h + i];
    const auto n1 = rms(x, w.input_norm, c.rms_norm_eps);
    auto q = linear(n1, w.q_proj), k = linear(n1, w.k_proj);
    const auto v = linear(n1, w.v_proj);
    rotate(q, c.num_heads, hd, pos, inv_freq);
    rotate(k, c.num_kv_heads, hd, pos, inv_freq);
    std::vector<double> attn(q.size());
    for (std::size_t s = 0; s < starts.size(); ++s)
      for (std::int64_t i = 0; i < lengths[s]; ++i)
        for (std::int64_t head = 0; head < c.num_heads; ++head) {
          const std::int64_t ti = starts[s] + i, g = head / group;
          std::vector<double> p(static_cast<std::size_t>(i + 1));
          double top = -INFINITY, z = 0;
          for (std::int64_t j = 0; j <= i; ++j) {
            double d = 0;
            for (std::int64_t e = 0; e < hd; ++e)
              d += q[(ti * c.num_heads + head) * hd + e] * k[((starts[s] + j) * c.num_kv_heads + g) * hd + e];
            top = std::max(top, p[j] = d / std::sqrt(static_cast<double>(hd)));
          }
          for (double& e : p) z += (e = std::exp(e - top));
          for (std::int64_t j = 0; j <= i; ++j)
            for (std::int64_t e = 0; e < hd; ++e)
              attn[(ti * c.num_heads + head) * hd + e] += p[j] / z * v[((starts[s] + j) * c.num_kv_heads + g) * hd + e];
        }
    const auto o = linear(attn, w.o_proj);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    const auto n2 = rms(x, w.post_attention_norm, c.rms_norm_eps);
    auto gate = linear(n2, w.gate_proj);
    const auto up = linear(n2, w.up_proj);
    for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
    const auto down = linear(gate, w.down_proj);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  }
  return x;
}

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
    const auto out = reference_forward(dir, dtype, x, lengths, first, blocks, p, deep.count, deep.offset);
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

// The directional derivative of `loss` (float64) along random directions u by central
// differences, against grad · u.
template <typename Loss>
void expect_directional(const Loss& loss, const std::vector<float>& at, const std::vector<float>& grad,
                        std::uint64_t seed, double tolerance) {
  constexpr double kStep = 1e-5;
  for (std::uint64_t k = 0; k < 2; ++k) {
    const auto u = random_floats(at.size(), seed + k);
    std::vector<double> up(at.begin(), at.end()), down = up;
    for (std::size_t i = 0; i < at.size(); ++i) {
      up[i] += kStep * u[i];
      down[i] -= kStep * u[i];
    }
    const double numeric = (loss(up) - loss(down)) / (2 * kStep);
    const double analytic = dot(grad, u);
    EXPECT_NEAR(numeric, analytic, tolerance * std::max(1.0, std::abs(analytic))) << "direction " << k;
  }
}

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
    expect_directional([&](const std::vector<double>& x) { return pass.loss(x, prompts); }, pass.input, grad, 100, 1e-4);
    expect_directional([&](const std::vector<double>& p) { return pass.loss(input, p); }, pass.prompts, pgrad, 200, 1e-4);
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
  expect_directional([&](const std::vector<double>& x) { return pass.loss(x, prompts); }, pass.input, grad, 300, 1e-4);
  expect_directional([&](const std::vector<double>& p) { return pass.loss(input, p); }, pass.prompts, pgrad, 400, 1e-4);
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

// The input gradients (kernels/gradients.h) against central finite differences of a float64
// forward written here from the ops' definitions, and their determinism: the same bits at any
// thread count and for a token alone or inside a batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "kernels/activation.h"
#include "kernels/cpu_isa.h"
#include "kernels/dtype.h"
#include "kernels/gradients.h"
#include "kernels/parallel.h"
#include "kernels/quantize.h"
#include "kernels/rope.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using test::normalized_error;
using test::clamped_swiglu_inputs;
using test::random_floats;
using Vec = std::vector<double>;

std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// The gradient of loss(x) at x by central differences (step h), for every element of x.
Vec finite_differences(const std::function<double(const Vec&)>& loss, Vec x, double h = 1e-5) {
  Vec grad(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss(x);
    x[i] = keep - h;
    const double down = loss(x);
    x[i] = keep;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}


// ---- matmul ----

struct Weights {
  std::vector<float> f32;         // the values the product uses (dequantized / rounded)
  std::vector<std::uint16_t> bf16;
  std::vector<std::int8_t> i8;
  std::vector<float> scales;
  WeightView view;
};

Weights make_weights(DType dtype, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  Weights w;
  w.f32 = random_floats(static_cast<std::size_t>(rows * cols), seed, 0.2f);
  w.view = WeightView{dtype, rows, cols, w.f32.data()};
  if (dtype == DType::kBF16) {
    for (float& v : w.f32) {
      w.bf16.push_back(f32_to_bf16(v));
      v = bf16_to_f32(w.bf16.back());
    }
    w.view.data = w.bf16.data();
  } else if (dtype == DType::kI8) {
    w.i8.resize(w.f32.size());
    for (std::int64_t r = 0; r < rows; ++r) {
      w.scales.push_back(quantize_row_i8(&w.f32[r * cols], cols, &w.i8[r * cols]));
      for (std::int64_t c = 0; c < cols; ++c) w.f32[r * cols + c] = w.i8[r * cols + c] * w.scales.back();
    }
    w.view.data = w.i8.data();
    w.view.scales = w.scales.data();
  }
  return w;
}

class MatmulInputGradTest : public ::testing::TestWithParam<std::tuple<DType, int, int, int>> {};

TEST_P(MatmulInputGradTest, MatchesFiniteDifferences) {
  const auto [dtype, n, rows, cols] = GetParam();
  const Weights w = make_weights(dtype, rows, cols, 7);
  const auto x = random_floats(static_cast<std::size_t>(n * cols), 1);
  const auto dy = random_floats(static_cast<std::size_t>(n * rows), 2);
  std::vector<float> dx(x.size(), NAN);
  matmul_input_grad(dy.data(), n, w.view, dx.data());
  const auto loss = [&](const Vec& xs) {  // Σ dy · (x · wᵀ), with the weights the product uses
    double s = 0;
    for (int t = 0; t < n; ++t)
      for (int r = 0; r < rows; ++r) {
        double y = 0;
        for (int c = 0; c < cols; ++c) y += xs[t * cols + c] * w.f32[r * cols + c];
        s += dy[t * rows + r] * y;
      }
    return s;
  };
  EXPECT_LT(normalized_error(dx, finite_differences(loss, widen(x))), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulInputGradTest,
                         ::testing::Values(std::tuple{DType::kF32, 1, 37, 70}, std::tuple{DType::kF32, 13, 64, 130},
                                           std::tuple{DType::kBF16, 5, 37, 70}, std::tuple{DType::kBF16, 7, 70, 64},
                                           std::tuple{DType::kI8, 1, 40, 70}, std::tuple{DType::kI8, 9, 33, 129}));

TEST(MatmulInputGrad, SameBitsAtAnyThreadCountAndForATokenAlone) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
    const std::int64_t n = 61, rows = 300, cols = 200;
    const Weights w = make_weights(dtype, rows, cols, 3);
    const auto dy = random_floats(static_cast<std::size_t>(n * rows), 4);
    std::vector<float> two(static_cast<std::size_t>(n * cols)), one(two.size()), alone(static_cast<std::size_t>(cols));
    const int threads = compute_threads();
    set_compute_threads(2);
    matmul_input_grad(dy.data(), n, w.view, two.data());
    set_compute_threads(1);
    matmul_input_grad(dy.data(), n, w.view, one.data());
    set_compute_threads(threads);
    EXPECT_EQ(two, one) << dtype_name(dtype);
    matmul_input_grad(dy.data() + 50 * rows, 1, w.view, alone.data());
    EXPECT_TRUE(std::equal(alone.begin(), alone.end(), two.begin() + 50 * cols)) << dtype_name(dtype);
  }
}

// ---- rmsnorm ----

TEST(RmsnormInputGrad, MatchesFiniteDifferences) {
  const int n = 11, dim = 48;
  const float eps = 1e-5f;
  const auto x = random_floats(n * dim, 5, 2.0f);
  const auto weight = random_floats(dim, 6);
  const auto dy = random_floats(n * dim, 7);
  std::vector<float> dx(x.size(), NAN);
  rmsnorm_input_grad(x.data(), n, dim, weight.data(), eps, dy.data(), dx.data());
  const auto loss = [&](const Vec& xs) {
    double s = 0;
    for (int t = 0; t < n; ++t) {
      double ms = 0;
      for (int i = 0; i < dim; ++i) ms += xs[t * dim + i] * xs[t * dim + i];
      const double r = 1 / std::sqrt(ms / dim + eps);
      for (int i = 0; i < dim; ++i) s += dy[t * dim + i] * xs[t * dim + i] * r * weight[i];
    }
    return s;
  };
  EXPECT_LT(normalized_error(dx, finite_differences(loss, widen(x))), 1e-5);
  std::vector<float> in_place = dy;  // dx may be dy
  rmsnorm_input_grad(x.data(), n, dim, weight.data(), eps, in_place.data(), in_place.data());
  EXPECT_EQ(in_place, dx);
}

// ---- weight gradient (adapters) ----

TEST(MatmulWeightGrad, AddsTheOuterProductsAtAnyThreadCount) {
  const int n = 37, rows = 70, cols = 53;
  const auto dy = random_floats(n * rows, 71);
  const auto x = random_floats(n * cols, 72);
  const auto start = random_floats(rows * cols, 73);
  std::vector<float> one = start, two = start;
  const int threads = compute_threads();
  set_compute_threads(1);
  matmul_weight_grad(dy.data(), n, x.data(), rows, cols, one.data());
  set_compute_threads(2);
  matmul_weight_grad(dy.data(), n, x.data(), rows, cols, two.data());
  set_compute_threads(threads);
  EXPECT_EQ(one, two);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      double want = start[r * cols + c];
      for (int t = 0; t < n; ++t) want += static_cast<double>(dy[t * rows + r]) * x[t * cols + c];
      ASSERT_NEAR(one[r * cols + c], want, 1e-4) << r << ", " << c;
    }
}

// ---- layernorm ----

TEST(LayernormInputGrad, MatchesFiniteDifferences) {
  const int n = 9, dim = 40;
  const float eps = 1e-5f;
  auto x = random_floats(n * dim, 31, 2.0f);
  for (int i = 0; i < dim; ++i) x[i] += 3.0f;  // a row far from zero mean
  const auto weight = random_floats(dim, 32);
  const auto bias = random_floats(dim, 33);
  const auto dy = random_floats(n * dim, 34);
  std::vector<float> dx(x.size(), NAN);
  layernorm_input_grad(x.data(), n, dim, weight.data(), eps, dy.data(), dx.data());
  const auto loss = [&](const Vec& xs) {
    double s = 0;
    for (int t = 0; t < n; ++t) {
      double mean = 0, var = 0;
      for (int i = 0; i < dim; ++i) mean += xs[t * dim + i] / dim;
      for (int i = 0; i < dim; ++i) var += (xs[t * dim + i] - mean) * (xs[t * dim + i] - mean) / dim;
      const double r = 1 / std::sqrt(var + eps);
      for (int i = 0; i < dim; ++i) s += dy[t * dim + i] * ((xs[t * dim + i] - mean) * r * weight[i] + bias[i]);
    }
    return s;
  };
  EXPECT_LT(normalized_error(dx, finite_differences(loss, widen(x))), 1e-5);
  std::vector<float> in_place = dy;  // dx may be dy
  layernorm_input_grad(x.data(), n, dim, weight.data(), eps, in_place.data(), in_place.data());
  EXPECT_EQ(in_place, dx);
}

// ---- gelu (tanh) ----

TEST(GeluTanhInputGrad, MatchesFiniteDifferences) {
  const int count = 301;
  const auto x = random_floats(count, 35, 5.0f);
  const auto dout = random_floats(count, 36);
  std::vector<float> dx(count, NAN);
  gelu_tanh_input_grad(x.data(), dout.data(), dx.data(), count);
  const auto loss = [&](const Vec& xs) {
    double s = 0;
    for (int i = 0; i < count; ++i) {
      const double v = xs[i];
      s += dout[i] * 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    }
    return s;
  };
  EXPECT_LT(normalized_error(dx, finite_differences(loss, widen(x))), 1e-5);
}

// Far from 0, where e^(-2u) overflows or underflows: the slope is 0 far below and 1 far above,
// never NaN. ctest also runs the activations' gradients with SEPAL_CPU_ISA=generic.
TEST(GeluTanhInputGrad, SaturatesWithoutNaN) {
  const std::vector<float> x = {-1e4f, -90.0f, -30.0f, 30.0f, 90.0f, 1e4f};
  const std::vector<float> dout(x.size(), 2.0f);
  std::vector<float> dx(x.size(), NAN);
  gelu_tanh_input_grad(x.data(), dout.data(), dx.data(), static_cast<std::int64_t>(x.size()));
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(dx[i], x[i] < 0 ? 0.0f : 2.0f, 1e-6f) << x[i];
  std::vector<float> dgate(x.size(), NAN), dup(x.size(), NAN);
  const std::vector<float> up(x.size(), 3.0f);
  for (const GateActivation activation : {GateActivation::kSilu, GateActivation::kGeluTanh}) {
    gate_mul_input_grad(activation, x.data(), up.data(), dout.data(), dgate.data(), dup.data(),
                        static_cast<std::int64_t>(x.size()));
    for (std::size_t i = 0; i < x.size(); ++i) {
      EXPECT_NEAR(dgate[i], x[i] < 0 ? 0.0f : 6.0f, 1e-4f) << x[i];
      EXPECT_NEAR(dup[i], x[i] < 0 ? 0.0f : 2.0f * x[i], 1e-4f * std::abs(x[i])) << x[i];
    }
  }
}

// ---- silu_mul ----

TEST(SiluMulInputGrad, MatchesFiniteDifferences) {
  const int count = 257;
  const auto gate = random_floats(count, 8, 6.0f);
  const auto up = random_floats(count, 9, 2.0f);
  const auto dout = random_floats(count, 10);
  std::vector<float> dgate(count, NAN), dup(count, NAN);
  silu_mul_input_grad(gate.data(), up.data(), dout.data(), dgate.data(), dup.data(), count);
  const auto loss_of = [&](const Vec& g, const Vec& u) {
    double s = 0;
    for (int i = 0; i < count; ++i) s += dout[i] * g[i] / (1 + std::exp(-g[i])) * u[i];
    return s;
  };
  const Vec g = widen(gate), u = widen(up);
  EXPECT_LT(normalized_error(dgate, finite_differences([&](const Vec& x) { return loss_of(x, u); }, g)), 1e-5);
  EXPECT_LT(normalized_error(dup, finite_differences([&](const Vec& x) { return loss_of(g, x); }, u)), 1e-5);
}

TEST(GeluTanhMulInputGrad, MatchesFiniteDifferences) {
  const int count = 257;
  const auto gate = random_floats(count, 18, 6.0f);
  const auto up = random_floats(count, 19, 2.0f);
  const auto dout = random_floats(count, 20);
  std::vector<float> dgate(count, NAN), dup(count, NAN);
  gate_mul_input_grad(GateActivation::kGeluTanh, gate.data(), up.data(), dout.data(), dgate.data(), dup.data(), count);
  const auto loss_of = [&](const Vec& g, const Vec& u) {
    double s = 0;
    for (int i = 0; i < count; ++i) {
      s += dout[i] * 0.5 * g[i] * (1 + std::tanh(std::sqrt(2 / M_PI) * (g[i] + 0.044715 * g[i] * g[i] * g[i]))) * u[i];
    }
    return s;
  };
  const Vec g = widen(gate), u = widen(up);
  EXPECT_LT(normalized_error(dgate, finite_differences([&](const Vec& x) { return loss_of(x, u); }, g)), 1e-5);
  EXPECT_LT(normalized_error(dup, finite_differences([&](const Vec& x) { return loss_of(g, x); }, u)), 1e-5);
}

// GPT-OSS's clamped SwiGLU, g' = min(g, L), u' = clamp(u, -L, L), y = g' sigmoid(a g') (u' + 1):
// against its derivative in double, gates and ups inside and outside the limit on both sides (a
// clamped input's gradient is 0), a count that is not a multiple of 16, NaN kept; and against
// finite differences where nothing is clamped. ctest also runs it with SEPAL_CPU_ISA=generic.
TEST(ClampedSwigluMulInputGrad, MatchesItsDerivative) {
  const float limit = 7.0f;
  const auto [gate, up] = clamped_swiglu_inputs(10007, 31);
  const auto count = static_cast<std::int64_t>(gate.size());
  const auto dout = random_floats(count, 33);
  std::vector<float> dgate(gate.size(), NAN), dup(gate.size(), NAN);
  gate_mul_input_grad(GateActivation::kClampedSwiglu, gate.data(), up.data(), dout.data(), dgate.data(), dup.data(),
                      count, limit);
  const double a = kClampedSwigluAlpha;
  for (std::size_t i = 0; i < gate.size(); ++i) {
    const double g = std::min<double>(gate[i], limit), u = std::clamp<double>(up[i], -limit, limit), d = dout[i];
    const double s = 1.0 / (1.0 + std::exp(-a * g));
    const double want_dgate = gate[i] > limit ? 0.0 : d * (u + 1.0) * s * (1.0 + a * g * (1.0 - s));
    const double want_dup = up[i] < -limit || up[i] > limit ? 0.0 : d * g * s;
    ASSERT_NEAR(dgate[i], want_dgate, 2e-6 * (1.0 + std::abs(want_dgate)))
        << gate[i] << " " << up[i] << " at " << cpu_isa_name(active_cpu_isa());
    ASSERT_NEAR(dup[i], want_dup, 2e-6 * (1.0 + std::abs(want_dup)))
        << gate[i] << " " << up[i] << " at " << cpu_isa_name(active_cpu_isa());
  }
  // Away from the limit, against finite differences of the forward itself.
  const int n = 257;
  const auto g0 = random_floats(n, 34, 6.0f), u0 = random_floats(n, 35, 6.0f), d0 = random_floats(n, 36);
  std::vector<float> dg(n, NAN), du(n, NAN);
  clamped_swiglu_mul_input_grad(g0.data(), u0.data(), d0.data(), dg.data(), du.data(), n, limit);
  const auto loss_of = [&](const Vec& g, const Vec& u) {
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += d0[i] * g[i] / (1 + std::exp(-a * g[i])) * (u[i] + 1);
    return sum;
  };
  const Vec gw = widen(g0), uw = widen(u0);
  EXPECT_LT(normalized_error(dg, finite_differences([&](const Vec& x) { return loss_of(x, uw); }, gw)), 1e-5);
  EXPECT_LT(normalized_error(du, finite_differences([&](const Vec& x) { return loss_of(gw, x); }, uw)), 1e-5);
  // NaN stays NaN where it flows: a NaN gate makes both gradients of its element NaN but the up's
  // (which is d g s, free of u), a NaN up makes the gate's gradient NaN.
  const std::vector<float> nan_gate = {NAN, 1.0f}, nan_up = {1.0f, NAN}, ones = {1.0f, 1.0f};
  std::vector<float> ng(2), nu(2);
  clamped_swiglu_mul_input_grad(nan_gate.data(), nan_up.data(), ones.data(), ng.data(), nu.data(), 2, limit);
  EXPECT_TRUE(std::isnan(ng[0]));
  EXPECT_TRUE(std::isnan(nu[0]));
  EXPECT_TRUE(std::isnan(ng[1]));
  EXPECT_FALSE(std::isnan(nu[1]));
}

// ---- rope ----

// The whole head, and part of it (partial rotary embeddings: the rest passes its gradient on), in
// both layouts: pairs (i, i + rd/2) and adjacent pairs (2i, 2i + 1), Cohere's and GLM's.
TEST(RopeInputGrad, MatchesFiniteDifferences) {
  const int n = 5, heads = 3, hd = 16;
  for (const bool adjacent : {false, true}) {
    for (const int rd : {16, 12}) {
      const auto inv_freq = rope_inverse_frequencies(rd, 10000.0, RopeScaling{});
      const std::vector<std::int64_t> positions{0, 3, 4, 17, 250};
      const auto x = random_floats(n * heads * hd, 11);
      const auto dy = random_floats(x.size(), 12);
      std::vector<float> dx = dy;
      const double magnitude = 1.3;  // LongRoPE's attention factor scales the rotation
      (adjacent ? rope_rotate_adjacent_input_grad : rope_rotate_half_input_grad)(dx.data(), n, heads, hd, rd, positions.data(),
                                                                                 inv_freq.data(), magnitude);
      const auto loss = [&](const Vec& xs) {
        double s = 0;
        for (int t = 0; t < n; ++t)
          for (int h = 0; h < heads; ++h) {
            const int base = (t * heads + h) * hd;
            for (int i = 0; i < rd / 2; ++i) {
              const int first = base + (adjacent ? 2 * i : i), second = base + (adjacent ? 2 * i + 1 : i + rd / 2);
              const double angle = static_cast<double>(positions[t]) * inv_freq[i];
              const double a = xs[first], b = xs[second];
              s += magnitude * (dy[first] * (a * std::cos(angle) - b * std::sin(angle)) +
                                dy[second] * (b * std::cos(angle) + a * std::sin(angle)));
            }
            for (int i = rd; i < hd; ++i) s += dy[base + i] * xs[base + i];
          }
        return s;
      };
      EXPECT_LT(normalized_error(dx, finite_differences(loss, widen(x))), 1e-5) << rd << (adjacent ? " adjacent" : "");
    }
  }
}

// ---- attention ----

// Σ dout · attention(q, k, v) in float64, causal over one sequence (with ALiBi slopes and a
// sliding window when given); layouts as the kernel's.
double attention_loss(const Vec& q, const Vec& k, const Vec& v, int n, const AttentionDims& d,
                      const std::vector<float>& dout, const std::vector<float>& slopes = {}, int window = 0) {
  const int group = static_cast<int>(d.heads / d.kv_heads), hd = static_cast<int>(d.head_dim);
  double s = 0;
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < d.heads; ++h) {
      const int g = h / group;
      std::vector<double> p(i + 1);
      double top = -INFINITY;
      for (int j = 0; j <= i; ++j) {
        double dotp = 0;
        for (int e = 0; e < hd; ++e) dotp += q[(i * d.heads + h) * hd + e] * k[(g * n + j) * hd + e];
        p[j] = dotp * (d.scale > 0 ? d.scale : 1 / std::sqrt(static_cast<double>(hd)));
        if (d.softcap > 0) p[j] = d.softcap * std::tanh(p[j] / d.softcap);
        p[j] += slopes.empty() ? 0.0 : slopes[h] * (j - i);
        if (window > 0 && j <= i - window) p[j] = -INFINITY;
        top = std::max(top, p[j]);
      }
      double z = 0;
      for (double& e : p) z += (e = std::exp(e - top));
      for (int e = 0; e < hd; ++e) {
        double o = 0;
        for (int j = 0; j <= i; ++j) o += p[j] / z * v[(g * n + j) * hd + e];
        s += dout[(i * d.heads + h) * hd + e] * o;
      }
    }
  return s;
}

class AttentionInputGradTest : public ::testing::TestWithParam<std::tuple<int, int, int, int, bool, int>> {};

TEST_P(AttentionInputGradTest, MatchesFiniteDifferences) {
  const auto [n, heads, kv_heads, hd, with_alibi, window] = GetParam();
  const std::vector<float> slopes = with_alibi ? alibi_slopes(heads) : std::vector<float>{};
  const AttentionDims dims{heads, kv_heads, hd};
  const auto q = random_floats(static_cast<std::size_t>(n * heads * hd), 13, 1.5f);
  const auto k = random_floats(static_cast<std::size_t>(kv_heads * n * hd), 14, 1.5f);
  const auto v = random_floats(k.size(), 15);
  const auto dout = random_floats(q.size(), 16);
  std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN);
  attention_causal_input_grad(q.data(), k.data(), v.data(), n, dims, dout.data(), dq.data(), dk.data(), dv.data(),
                              with_alibi ? slopes.data() : nullptr, window);
  const Vec qd = widen(q), kd = widen(k), vd = widen(v);
  const auto loss = [&](const Vec& qs, const Vec& ks, const Vec& vs) {
    return attention_loss(qs, ks, vs, n, dims, dout, slopes, window);
  };
  const auto fq = finite_differences([&](const Vec& x) { return loss(x, kd, vd); }, qd);
  const auto fk = finite_differences([&](const Vec& x) { return loss(qd, x, vd); }, kd);
  const auto fv = finite_differences([&](const Vec& x) { return loss(qd, kd, x); }, vd);
  EXPECT_LT(normalized_error(dq, fq), 2e-5);
  EXPECT_LT(normalized_error(dk, fk), 2e-5);
  EXPECT_LT(normalized_error(dv, fv), 2e-5);
}

// Gemma 2's attention: scores scaled by a given factor and soft-capped (tight, so most are in
// tanh's bend), with grouped heads and a window.
TEST(AttentionInputGrad, SoftCappedScoresMatchFiniteDifferences) {
  const int n = 8, heads = 4, kv_heads = 2, hd = 16, window = 5;
  AttentionDims dims{heads, kv_heads, hd};
  dims.scale = 0.45f;
  dims.softcap = 1.5f;
  const auto q = random_floats(static_cast<std::size_t>(n * heads * hd), 23, 1.5f);
  const auto k = random_floats(static_cast<std::size_t>(kv_heads * n * hd), 24, 1.5f);
  const auto v = random_floats(k.size(), 25);
  const auto dout = random_floats(q.size(), 26);
  std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN);
  attention_causal_input_grad(q.data(), k.data(), v.data(), n, dims, dout.data(), dq.data(), dk.data(), dv.data(), nullptr,
                              window);
  const Vec qd = widen(q), kd = widen(k), vd = widen(v);
  const auto loss = [&](const Vec& qs, const Vec& ks, const Vec& vs) {
    return attention_loss(qs, ks, vs, n, dims, dout, {}, window);
  };
  EXPECT_LT(normalized_error(dq, finite_differences([&](const Vec& x) { return loss(x, kd, vd); }, qd)), 2e-5);
  EXPECT_LT(normalized_error(dk, finite_differences([&](const Vec& x) { return loss(qd, x, vd); }, kd)), 2e-5);
  EXPECT_LT(normalized_error(dv, finite_differences([&](const Vec& x) { return loss(qd, kd, x); }, vd)), 2e-5);
}

// (n, heads, kv_heads, head_dim, ALiBi, window): plain heads, grouped-query heads, head dims with
// and without the AVX-512 score kernel; BLOOM's ALiBi (6 heads: the extra slopes) and Mistral's
// sliding window.
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionInputGradTest,
                         ::testing::Values(std::tuple{1, 2, 2, 8, false, 0}, std::tuple{7, 4, 2, 8, false, 0},
                                           std::tuple{6, 4, 1, 32, false, 0}, std::tuple{9, 2, 2, 64, false, 0},
                                           std::tuple{8, 6, 6, 8, true, 0}, std::tuple{9, 4, 2, 16, false, 3},
                                           std::tuple{10, 4, 4, 32, true, 4}));

TEST(AttentionInputGrad, SameBitsAtAnyThreadCount) {
  const int n = 40, heads = 8, kv_heads = 4, hd = 32;
  const AttentionDims dims{heads, kv_heads, hd};
  const auto q = random_floats(static_cast<std::size_t>(n * heads * hd), 17);
  const auto k = random_floats(static_cast<std::size_t>(kv_heads * n * hd), 18);
  const auto v = random_floats(k.size(), 19);
  const auto dout = random_floats(q.size(), 20);
  std::vector<float> dq1(q.size()), dk1(k.size()), dv1(v.size()), dq2 = dq1, dk2 = dk1, dv2 = dv1;
  const int threads = compute_threads();
  set_compute_threads(1);
  attention_causal_input_grad(q.data(), k.data(), v.data(), n, dims, dout.data(), dq1.data(), dk1.data(), dv1.data());
  set_compute_threads(2);
  attention_causal_input_grad(q.data(), k.data(), v.data(), n, dims, dout.data(), dq2.data(), dk2.data(), dv2.data());
  set_compute_threads(threads);
  EXPECT_EQ(dq1, dq2);
  EXPECT_EQ(dk1, dk2);
  EXPECT_EQ(dv1, dv2);
}

}  // namespace
}  // namespace sepal

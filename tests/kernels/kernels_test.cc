// Every CPU kernel against an independent double-precision reference, with per-op tolerances on
// the normalised error; the matrix kernels run at every CPU level this machine supports.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <tuple>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/sampling.h"
#include "kernels/softmax.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using test::normalized_error;
using test::clamped_swiglu_inputs;
using test::random_floats;

// ---- matmul: (isa, dtype, tokens, rows, cols) ----

using MatmulCase = std::tuple<CpuIsa, DType, int, int, int>;

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulTest, MatchesDoubleReference) {
  const auto [isa, dtype, n, rows, cols] = GetParam();
  if (!cpu_supports(isa)) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(isa);
  const auto x = random_floats(static_cast<std::size_t>(n) * cols, 1);
  auto wf = random_floats(static_cast<std::size_t>(rows) * cols, 2, 0.1f);
  std::vector<std::uint16_t> wb;
  if (dtype == DType::kBF16) {
    for (auto& v : wf) {
      wb.push_back(f32_to_bf16(v));
      v = bf16_to_f32(wb.back());  // the reference uses the rounded weights
    }
  }
  WeightView w{dtype, rows, cols, dtype == DType::kF32 ? static_cast<const void*>(wf.data()) : wb.data()};
  std::vector<float> y(static_cast<std::size_t>(n) * rows, NAN);
  matmul(x.data(), n, w, y.data(), isa);
  std::vector<double> ref(y.size());
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < rows; ++r) {
      double s = 0;
      for (int k = 0; k < cols; ++k) s += static_cast<double>(x[t * cols + k]) * wf[r * cols + k];
      ref[t * rows + r] = s;
    }
  EXPECT_LT(normalized_error(y, ref), 2e-6);
}

std::string matmul_case_name(const ::testing::TestParamInfo<MatmulCase>& info) {
  const auto& [isa, dtype, n, rows, cols] = info.param;
  return std::string(cpu_isa_name(isa)) + "_" + std::string(dtype_name(dtype)) + "_n" +
         std::to_string(n) + "_r" + std::to_string(rows) + "_c" + std::to_string(cols);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatmulTest,
    ::testing::Combine(::testing::Values(CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAmx),
                       ::testing::Values(DType::kF32, DType::kBF16),
                       ::testing::Values(1, 2, 3, 4, 7, 33),      // streaming and blocked paths
                       ::testing::Values(1, 5, 64, 172, 259),     // rows: tails of 4 and of 16
                       ::testing::Values(1, 13, 32, 64, 120, 172, 300)),  // cols: not multiples of 8/16/32
    matmul_case_name);

TEST(Matmul, LevelsAgreeOnLargeMatrix) {
  const int rows = 1000, cols = 2048;
  const auto x = random_floats(cols, 3);
  const auto w = random_floats(static_cast<std::size_t>(rows) * cols, 4, 0.05f);
  WeightView view{DType::kF32, rows, cols, w.data()};
  std::vector<float> base(rows);
  matmul(x.data(), 1, view, base.data(), CpuIsa::kGeneric);
  std::vector<double> ref(base.begin(), base.end());
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAmx}) {
    if (!cpu_supports(isa)) continue;
    std::vector<float> y(rows);
    matmul(x.data(), 1, view, y.data(), isa);
    EXPECT_LT(normalized_error(y, ref), 1e-6) << cpu_isa_name(isa);
  }
}

// bf16 prompts on AMX add three exact products per weight in f32 where the AVX-512 tiles run one
// fused chain: on long rows (where rounding accumulates) they must be as close to the exact
// product as the chain is.
TEST(Matmul, Bf16PromptsOnAmxAreAsAccurateAsTheFmaTiles) {
  if (!cpu_supports(CpuIsa::kAmx)) GTEST_SKIP() << "CPU or OS lacks AMX";
  const int n = 37, rows = 70, cols = 4100;
  const auto x = random_floats(static_cast<std::size_t>(n) * cols, 5);
  auto wf = random_floats(static_cast<std::size_t>(rows) * cols, 6, 0.05f);
  std::vector<std::uint16_t> wb;
  for (float& v : wf) {
    wb.push_back(f32_to_bf16(v));
    v = bf16_to_f32(wb.back());
  }
  std::vector<double> ref(static_cast<std::size_t>(n) * rows);
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < rows; ++r) {
      double sum = 0;
      for (int k = 0; k < cols; ++k)
        sum += static_cast<double>(x[static_cast<std::size_t>(t) * cols + k]) * wf[static_cast<std::size_t>(r) * cols + k];
      ref[static_cast<std::size_t>(t) * rows + r] = sum;
    }
  const WeightView view{DType::kBF16, rows, cols, wb.data()};
  std::vector<float> amx(ref.size()), fma(ref.size());
  matmul(x.data(), n, view, amx.data(), CpuIsa::kAmx);
  matmul(x.data(), n, view, fma.data(), CpuIsa::kAvx512);
  const double amx_error = normalized_error(amx, ref), fma_error = normalized_error(fma, ref);
  EXPECT_LT(amx_error, 1e-6);
  EXPECT_LT(amx_error, 3 * fma_error) << "AMX " << amx_error << ", FMA tiles " << fma_error;
}

// ---- CPU levels ----

TEST(CpuLevels, NamesParseBackAndAmxCountsAsVnniForNumerics) {
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni, CpuIsa::kAmx}) {
    EXPECT_EQ(parse_cpu_isa(cpu_isa_name(isa)), isa);
    // A level the CPU has implies every level below it.
    if (cpu_supports(isa) && isa != CpuIsa::kGeneric)
      EXPECT_TRUE(cpu_supports(static_cast<CpuIsa>(static_cast<int>(isa) - 1))) << cpu_isa_name(isa);
  }
  EXPECT_FALSE(parse_cpu_isa("amx2").has_value());
  // With f32 weights AMX runs the VNNI level's kernels: hosts on either announce the same
  // numerics. Its bf16 products and its bf16 and int8 training gradients round their own way
  // (its int8 prompts have the VNNI bits, matmul_batch_test.cc, but a host's numerics cover
  // training too), and every other level is its own.
  EXPECT_EQ(numerics_level(CpuIsa::kAmx, DType::kF32), CpuIsa::kAvx512Vnni);
  EXPECT_EQ(numerics_level(CpuIsa::kAmx, DType::kI8), CpuIsa::kAmx);
  EXPECT_EQ(numerics_level(CpuIsa::kAmx, DType::kBF16), CpuIsa::kAmx);
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni})
    for (DType weights : {DType::kF32, DType::kBF16, DType::kI8}) EXPECT_EQ(numerics_level(isa, weights), isa);
  EXPECT_LE(active_cpu_isa(), CpuIsa::kAmx);
  EXPECT_TRUE(cpu_supports(active_cpu_isa()));
}

// ---- dtype conversions ----

TEST(DTypes, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-12f), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

// Every binary16 value: the bulk conversion (F16C from the avx2 level on; the generic run of this
// test takes the scalar loop) gives the scalar conversion's bits, at any alignment and for any
// count of tail values; and the scalar one gives IEEE's values, a NaN made quiet as F16C makes it.
TEST(DTypes, F16BulkConversionGivesTheScalarBitsForEveryValue) {
  std::vector<std::uint16_t> all(65536 + 8);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  std::vector<std::byte> bytes(all.size() * 2 + 1);
  for (int offset : {0, 1}) {
    std::memcpy(bytes.data() + offset, all.data(), all.size() * 2);
    for (std::int64_t n : {std::int64_t{65536}, std::int64_t{65536 + 7}, std::int64_t{5}, std::int64_t{0}}) {
      std::vector<float> out(static_cast<std::size_t>(n) + 1, -7.0f);
      f16_to_f32(bytes.data() + offset, n, out.data());
      for (std::int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(std::bit_cast<std::uint32_t>(out[static_cast<std::size_t>(i)]),
                  std::bit_cast<std::uint32_t>(f16_to_f32(all[static_cast<std::size_t>(i)])))
            << "value 0x" << std::hex << all[static_cast<std::size_t>(i)] << ", offset " << offset << ", count " << n;
      }
      EXPECT_EQ(out[static_cast<std::size_t>(n)], -7.0f);  // nothing written past the count
    }
  }
  EXPECT_EQ(f16_to_f32(std::uint16_t{0x0001}), 0x1p-24f);    // the smallest subnormal
  EXPECT_EQ(f16_to_f32(std::uint16_t{0x83ff}), -0x3ffp-24f);  // the largest, negative
  EXPECT_EQ(f16_to_f32(std::uint16_t{0x7bff}), 65504.0f);
  EXPECT_EQ(std::bit_cast<std::uint32_t>(f16_to_f32(std::uint16_t{0xfc00})), 0xff800000u);  // -infinity
  EXPECT_EQ(std::bit_cast<std::uint32_t>(f16_to_f32(std::uint16_t{0x7c01})), 0x7fc02000u);  // signalling: quiet
  EXPECT_EQ(std::bit_cast<std::uint32_t>(f16_to_f32(std::uint16_t{0xfe00})), 0xffc00000u);  // quiet stays
}

TEST(DTypes, F16RoundTripsAndHandlesEdges) {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 0x1p-24f, 0x1p-14f, 3.140625f}) {
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  }
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
}

// ---- rmsnorm ----

TEST(RmsNorm, MatchesReference) {
  for (int dim : {1, 64, 172, 2048}) {
    const int n = 3;
    const auto x = random_floats(static_cast<std::size_t>(n) * dim, 5, 3.0f);
    const auto w = random_floats(dim, 6);
    std::vector<float> y(x.size());
    rmsnorm(x.data(), n, dim, w.data(), 1e-5f, y.data());
    std::vector<double> ref(x.size());
    for (int t = 0; t < n; ++t) {
      double ms = 0;
      for (int i = 0; i < dim; ++i) ms += static_cast<double>(x[t * dim + i]) * x[t * dim + i];
      const double scale = 1.0 / std::sqrt(ms / dim + 1e-5);
      for (int i = 0; i < dim; ++i) ref[t * dim + i] = x[t * dim + i] * scale * w[i];
    }
    EXPECT_LT(normalized_error(y, ref), 1e-6) << dim;
  }
}

TEST(LayerNorm, MatchesReference) {
  for (int dim : {1, 64, 172, 2048}) {
    const int n = 3;
    auto x = random_floats(static_cast<std::size_t>(n) * dim, 15, 3.0f);
    for (auto& v : x) v += 5.0f;  // a mean far from zero
    const auto w = random_floats(dim, 16), b = random_floats(dim, 17);
    std::vector<float> y(x.size());
    layernorm(x.data(), n, dim, w.data(), b.data(), 1e-5f, y.data());
    std::vector<double> ref(x.size());
    for (int t = 0; t < n; ++t) {
      double mean = 0, var = 0;
      for (int i = 0; i < dim; ++i) mean += x[t * dim + i];
      mean /= dim;
      for (int i = 0; i < dim; ++i) var += (x[t * dim + i] - mean) * (x[t * dim + i] - mean);
      const double inv = 1.0 / std::sqrt(var / dim + 1e-5);
      for (int i = 0; i < dim; ++i) ref[t * dim + i] = (x[t * dim + i] - mean) * inv * w[i] + b[i];
    }
    EXPECT_LT(normalized_error(y, ref), 1e-6) << dim;
    if (dim == 1) continue;  // a one-value row normalises to 0: nothing left to compare
    // No bias (Cohere's norms): the same less the bias.
    layernorm(x.data(), n, dim, w.data(), nullptr, 1e-5f, y.data());
    for (std::size_t i = 0; i < ref.size(); ++i) ref[i] -= b[i % static_cast<std::size_t>(dim)];
    EXPECT_LT(normalized_error(y, ref), 1e-6) << dim << " without a bias";
  }
}

// ---- rope ----

std::vector<double> reference_inv_freq(int head_dim, double theta) {
  std::vector<double> f;
  for (int i = 0; i < head_dim / 2; ++i) f.push_back(std::pow(theta, -2.0 * i / head_dim));
  return f;
}

// The whole head, and its first 10 of 16 dimensions (partial rotary embeddings, Phi-4-mini's
// kind: the other 6 pass unchanged, unscaled).
TEST(Rope, RotateHalfMatchesReference) {
  const int n = 4, heads = 3, hd = 16;
  for (const int rd : {16, 10}) {
    auto x = random_floats(static_cast<std::size_t>(n) * heads * hd, 7);
    const auto original = x;
    const std::vector<std::int64_t> positions = {0, 1, 17, 511};
    const auto inv = rope_inverse_frequencies(rd, 10000.0, {});
    const auto ref_inv = reference_inv_freq(rd, 10000.0);
    for (int i = 0; i < rd / 2; ++i) EXPECT_NEAR(inv[i], ref_inv[i], 1e-15);
    const double magnitude = 1.5;
    rope_rotate_half(x.data(), n, heads, hd, rd, positions.data(), inv.data(), magnitude);
    std::vector<double> ref(original.begin(), original.end());
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < rd / 2; ++i) {
          const int base = (t * heads + h) * hd;
          const double a = original[base + i], b = original[base + i + rd / 2];
          const double ang = positions[t] * ref_inv[i];
          ref[base + i] = magnitude * (a * std::cos(ang) - b * std::sin(ang));
          ref[base + i + rd / 2] = magnitude * (b * std::cos(ang) + a * std::sin(ang));
        }
    EXPECT_LT(normalized_error(x, ref), 1e-6) << rd;
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = rd; i < hd; ++i) EXPECT_EQ(x[(t * heads + h) * hd + i], original[(t * heads + h) * hd + i]) << rd;
  }
}

// Cohere's layout: pairs (2i, 2i + 1) turn by inv_freq[i]; the whole head and its first 10 of 16.
TEST(Rope, RotateAdjacentMatchesReference) {
  const int n = 3, heads = 2, hd = 16;
  for (const int rd : {16, 10}) {
    auto x = random_floats(static_cast<std::size_t>(n) * heads * hd, 8);
    const auto original = x;
    const std::vector<std::int64_t> positions = {0, 5, 300};
    const auto inv = rope_inverse_frequencies(rd, 10000.0, {});
    const auto ref_inv = reference_inv_freq(rd, 10000.0);
    const double magnitude = 1.25;
    rope_rotate_adjacent(x.data(), n, heads, hd, rd, positions.data(), inv.data(), magnitude);
    std::vector<double> ref(original.begin(), original.end());
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < rd / 2; ++i) {
          const int base = (t * heads + h) * hd;
          const double a = original[base + 2 * i], b = original[base + 2 * i + 1];
          const double ang = positions[t] * ref_inv[i];
          ref[base + 2 * i] = magnitude * (a * std::cos(ang) - b * std::sin(ang));
          ref[base + 2 * i + 1] = magnitude * (b * std::cos(ang) + a * std::sin(ang));
        }
    EXPECT_LT(normalized_error(x, ref), 1e-6) << rd;
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = rd; i < hd; ++i) EXPECT_EQ(x[(t * heads + h) * hd + i], original[(t * heads + h) * hd + i]) << rd;
  }
}

TEST(Rope, Llama3ScalingFollowsThePiecewiseRule) {
  RopeScaling s;
  s.kind = RopeScaling::Kind::kLlama3;
  s.factor = 8.0;
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 8192;
  const int hd = 128;
  const double theta = 500000.0;
  const auto scaled = rope_inverse_frequencies(hd, theta, s);
  const auto plain = reference_inv_freq(hd, theta);
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < hd / 2; ++i) {
    const double wavelen = 2 * std::numbers::pi / plain[i];
    if (wavelen < 8192.0 / 4.0) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i]);
      ++kept;
    } else if (wavelen > 8192.0) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i] / 8.0);
      ++divided;
    } else {
      EXPECT_LT(scaled[i], plain[i]);
      EXPECT_GT(scaled[i], plain[i] / 8.0);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

// YaRN: the inverse frequencies Hugging Face's _compute_yarn_parameters gives (its steps written
// out in numpy in float64, values pasted here), for a small head, Qwen2.5's 128-wide heads with
// the factor of 4 over 32768 positions its card gives, and a ramp left untruncated.
TEST(Rope, YarnBlendsEachFrequencyAsHuggingFaceDoes) {
  struct Case {
    std::int64_t head_dim;
    double theta, factor, original, beta_fast, beta_slow;
    bool truncate;
    std::vector<std::pair<std::size_t, double>> want;  // (index, inverse frequency)
  };
  const Case cases[] = {
      {16, 10000.0, 4.0, 64, 32, 1, true,
       {{0, 1.0}, {1, 0.23717082451262847}, {2, 0.05}, {3, 0.007905694150420948}, {4, 0.0025},
        {5, 0.000790569415042095}, {6, 0.00025}, {7, 7.905694150420948e-05}}},
      {128, 1e6, 4.0, 32768, 32, 1, true,
       {{0, 1.0}, {22, 0.008659643233600653}, {23, 0.006978305848598663}, {24, 0.005375321490790102},
        {30, 0.001064360981247002}, {40, 4.4456985250973074e-05}, {41, 3.582531425592407e-05},
        {63, 3.102344401879299e-07}}},
      {32, 10000.0, 8.0, 16, 16, 2, false, {{0, 1.0}, {1, 0.07029266564879363}, {15, 2.2228492625486537e-05}}},
  };
  for (const Case& c : cases) {
    RopeScaling s;
    s.kind = RopeScaling::Kind::kYarn;
    s.factor = c.factor;
    s.original_max_position_embeddings = c.original;
    s.beta_fast = c.beta_fast;
    s.beta_slow = c.beta_slow;
    s.truncate = c.truncate;
    const auto got = rope_inverse_frequencies(c.head_dim, c.theta, s);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(c.head_dim / 2));
    for (const auto& [i, want] : c.want) EXPECT_NEAR(got[i], want, 1e-12 * want) << c.head_dim << " dimension " << i;
  }
}

// Linear scaling (positions interpolated; Gemma 3's global blocks): every inverse frequency
// divided by the factor; a factor that is not positive is refused.
TEST(Rope, LinearScalingDividesEveryInverseFrequency) {
  RopeScaling s;
  s.kind = RopeScaling::Kind::kLinear;
  s.factor = 8.0;
  const auto scaled = rope_inverse_frequencies(16, 1000000.0, s);
  const auto plain = reference_inv_freq(16, 1000000.0);
  ASSERT_EQ(scaled.size(), 8u);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(scaled[i], plain[i] / 8.0);
  s.factor = 0.0;
  EXPECT_THROW((void)rope_inverse_frequencies(16, 1000000.0, s), Error);
}

// GGUF's form of the scaling (rope_freqs.weight): each inverse frequency divided by its factor.
TEST(Rope, FrequencyFactorsDivideEachInverseFrequency) {
  RopeScaling s;
  s.kind = RopeScaling::Kind::kFactors;
  s.freq_factors = {1.0, 2.0, 3.5, 8.0};
  const auto scaled = rope_inverse_frequencies(8, 10000.0, s);
  const auto plain = reference_inv_freq(8, 10000.0);
  ASSERT_EQ(scaled.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(scaled[i], plain[i] / s.freq_factors[i]);
  s.freq_factors = {1.0, 2.0, 3.0};
  EXPECT_THROW((void)rope_inverse_frequencies(8, 10000.0, s), Error);
  s.freq_factors = {1.0, 2.0, 0.0, 8.0};
  EXPECT_THROW((void)rope_inverse_frequencies(8, 10000.0, s), Error);
}

// ---- attention ----

TEST(Attention, CausalGqaMatchesReference) {
  const int heads = 8, kv_heads = 2, hd = 16, capacity = 40, start = 5, n = 6;
  const auto q = random_floats(static_cast<std::size_t>(n) * heads * hd, 8);
  const auto k = random_floats(static_cast<std::size_t>(kv_heads) * capacity * hd, 9);
  const auto v = random_floats(static_cast<std::size_t>(kv_heads) * capacity * hd, 10);
  std::vector<float> out(static_cast<std::size_t>(n) * heads * hd);
  attention_causal(q.data(), n, start, k.data(), v.data(), capacity, {heads, kv_heads, hd}, out.data());
  std::vector<double> ref(out.size());
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      const int kv = h / (heads / kv_heads);
      const int visible = start + t + 1;
      std::vector<double> s(visible);
      double mx = -1e300;
      for (int p = 0; p < visible; ++p) {
        double d = 0;
        for (int i = 0; i < hd; ++i) d += static_cast<double>(q[(t * heads + h) * hd + i]) * k[(kv * capacity + p) * hd + i];
        s[p] = d / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, s[p]);
      }
      double z = 0;
      for (auto& e : s) z += (e = std::exp(e - mx));
      for (int i = 0; i < hd; ++i) {
        double acc = 0;
        for (int p = 0; p < visible; ++p) acc += s[p] / z * v[(kv * capacity + p) * hd + i];
        ref[(t * heads + h) * hd + i] = acc;
      }
    }
  EXPECT_LT(normalized_error(out, ref), 1e-5);
}

// Gemma 2's scores: a given scale (1/√query_pre_attn_scalar) and soft-capping, on heads of 64 (the
// AVX-512 score kernel) and 24 (the generic loops), f32 and bf16 caches; a chain of tree nodes
// gives the same bits.
TEST(Attention, SoftCappedScoresMatchReference) {
  for (const int hd : {64, 24}) {
    const int heads = 4, kv_heads = 2, capacity = 40, start = 21, n = 4;
    AttentionDims dims{heads, kv_heads, hd};
    dims.scale = 0.3f;
    dims.softcap = 2.0f;
    const auto q = random_floats(static_cast<std::size_t>(n) * heads * hd, 48);
    const auto k = random_floats(static_cast<std::size_t>(kv_heads) * capacity * hd, 49);
    const auto v = random_floats(k.size(), 50);
    std::vector<float> out(static_cast<std::size_t>(n) * heads * hd);
    attention_causal(q.data(), n, start, k.data(), v.data(), capacity, dims, out.data());
    std::vector<double> ref(out.size());
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h) {
        const int kv = h / (heads / kv_heads), visible = start + t + 1;
        std::vector<double> sc(visible);
        double mx = -1e300;
        for (int p = 0; p < visible; ++p) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += static_cast<double>(q[(t * heads + h) * hd + i]) * k[(kv * capacity + p) * hd + i];
          sc[p] = 2.0 * std::tanh(d * 0.3 / 2.0);
          mx = std::max(mx, sc[p]);
        }
        double z = 0;
        for (auto& e : sc) z += (e = std::exp(e - mx));
        for (int i = 0; i < hd; ++i) {
          double acc = 0;
          for (int p = 0; p < visible; ++p) acc += sc[p] / z * v[(kv * capacity + p) * hd + i];
          ref[(t * heads + h) * hd + i] = acc;
        }
      }
    EXPECT_LT(normalized_error(out, ref), 1e-5) << "head_dim " << hd;
    const std::vector<std::int32_t> chain = {-1, 0, 1, 2};
    std::vector<float> tree(out.size());
    attention_tree(q.data(), 0, n, start, chain.data(), k.data(), v.data(), capacity, dims, tree.data());
    EXPECT_EQ(tree, out) << "head_dim " << hd;
  }
}

TEST(Attention, AlibiSlopesFollowPressEtAl) {
  const std::vector<float> eight = alibi_slopes(8);
  ASSERT_EQ(eight.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(eight[i], static_cast<float>(std::pow(2.0, -(i + 1))));
  // 12 heads: the 8 of the largest power of two below, then every other slope of 16 heads.
  const std::vector<float> twelve = alibi_slopes(12);
  ASSERT_EQ(twelve.size(), 12u);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(twelve[8 + i], static_cast<float>(std::pow(2.0, -0.5 * (2 * i + 1))));
}

TEST(Attention, CausalAlibiMatchesReferenceAndTreesFollowIt) {
  const int heads = 4, hd = 8, capacity = 24, start = 7, n = 5;
  const auto q = random_floats(static_cast<std::size_t>(n) * heads * hd, 18);
  const auto k = random_floats(static_cast<std::size_t>(heads) * capacity * hd, 19);
  const auto v = random_floats(static_cast<std::size_t>(heads) * capacity * hd, 20);
  const std::vector<float> slopes = alibi_slopes(heads);
  std::vector<float> out(static_cast<std::size_t>(n) * heads * hd);
  attention_causal(q.data(), n, start, k.data(), v.data(), capacity, {heads, heads, hd}, out.data(), slopes.data());
  std::vector<double> ref(out.size());
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      const int visible = start + t + 1;
      std::vector<double> s(visible);
      double mx = -1e300;
      for (int p = 0; p < visible; ++p) {
        double d = 0;
        for (int i = 0; i < hd; ++i) d += static_cast<double>(q[(t * heads + h) * hd + i]) * k[(h * capacity + p) * hd + i];
        s[p] = d / std::sqrt(static_cast<double>(hd)) + slopes[h] * static_cast<double>(p - (start + t));
        mx = std::max(mx, s[p]);
      }
      double z = 0;
      for (auto& e : s) z += (e = std::exp(e - mx));
      for (int i = 0; i < hd; ++i) {
        double acc = 0;
        for (int p = 0; p < visible; ++p) acc += s[p] / z * v[(h * capacity + p) * hd + i];
        ref[(t * heads + h) * hd + i] = acc;
      }
    }
  EXPECT_LT(normalized_error(out, ref), 1e-5);
  // A chain of tree nodes is that sequence, bit for bit.
  const std::vector<std::int32_t> chain = {-1, 0, 1, 2, 3};
  std::vector<float> tree(out.size());
  attention_tree(q.data(), 0, n, start, chain.data(), k.data(), v.data(), capacity, {heads, heads, hd}, tree.data(), slopes.data());
  EXPECT_EQ(tree, out);
}

TEST(Attention, Bf16CacheGivesTheBitsOfF32OverTheRoundedValues) {
  // Head widths with AVX-512 rows (64) and with the generic loops only (24); grouped heads, ALiBi
  // and a window. Tree attention over the bf16 cache gives the same bits.
  for (const int hd : {64, 24}) {
    const int heads = 4, kv_heads = 2, capacity = 50, start = 33, n = 3;
    const AttentionDims dims{heads, kv_heads, hd};
    const auto rows = random_floats(static_cast<std::size_t>(start + n) * kv_heads * hd, 30 + hd);
    const auto value_rows = random_floats(rows.size(), 31 + hd);
    const auto q = random_floats(static_cast<std::size_t>(n) * heads * hd, 32 + hd);
    const std::size_t size = static_cast<std::size_t>(kv_heads) * capacity * hd;
    std::vector<std::uint16_t> k16(size), v16(size);
    std::vector<float> k32(size), v32(size);
    store_kv(rows.data(), start + n, 0, kv_heads, hd, capacity, KvArray{k16.data(), DType::kBF16});
    store_kv(value_rows.data(), start + n, 0, kv_heads, hd, capacity, KvArray{v16.data(), DType::kBF16});
    for (int t = 0; t < start + n; ++t)  // the stored bits are each value rounded to nearest even
      for (int h = 0; h < kv_heads; ++h)
        for (int i = 0; i < hd; ++i) {
          const std::size_t slot = (static_cast<std::size_t>(h) * capacity + t) * hd + i;
          const std::size_t row = (static_cast<std::size_t>(t) * kv_heads + h) * hd + i;
          ASSERT_EQ(k16[slot], f32_to_bf16(rows[row]));
          ASSERT_EQ(v16[slot], f32_to_bf16(value_rows[row]));
        }
    for (std::size_t i = 0; i < size; ++i) k32[i] = bf16_to_f32(k16[i]), v32[i] = bf16_to_f32(v16[i]);
    const std::vector<float> slopes = alibi_slopes(heads);
    for (const std::int64_t window : {0, 10}) {
      std::vector<float> want(q.size()), got(q.size());
      attention_causal(q.data(), n, start, k32.data(), v32.data(), capacity, dims, want.data(), slopes.data(), window);
      attention_causal(q.data(), n, start, KvArray{k16.data(), DType::kBF16}, KvArray{v16.data(), DType::kBF16}, capacity,
                       dims, got.data(), slopes.data(), window);
      EXPECT_EQ(got, want) << "head_dim " << hd << ", window " << window;
      const std::vector<std::int32_t> chain = {-1, 0, 1};  // the last n positions as a chain of tree nodes
      attention_tree(q.data(), 0, n, start, chain.data(), KvArray{k16.data(), DType::kBF16}, KvArray{v16.data(), DType::kBF16},
                     capacity, dims, got.data(), slopes.data(), window);
      EXPECT_EQ(got, want) << "tree, head_dim " << hd << ", window " << window;
    }
  }
  std::vector<float> any(64);
  EXPECT_THROW(store_kv(any.data(), 1, 0, 1, 64, 1, KvArray{any.data(), DType::kI8}), Error);
}

// ---- activations and softmax ----

TEST(Activation, SiluMulMatchesReference) {
  auto g = random_floats(1000, 11, 8.0f);
  const auto u = random_floats(1000, 12);
  std::vector<double> ref(g.size());
  for (std::size_t i = 0; i < g.size(); ++i) ref[i] = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
  silu_mul(g.data(), u.data(), static_cast<std::int64_t>(g.size()));
  EXPECT_LT(normalized_error(g, ref), 1e-6);
}

// Over the whole range of the exponential: large negative inputs (e^(-2u) overflows), large
// positive ones (it underflows), and everything between; more than one thread's span of values,
// none of them a multiple of 16 long. ctest also runs it with SEPAL_CPU_ISA=generic.
TEST(Activation, GeluTanhMatchesReference) {
  std::vector<float> x;
  for (int i = -400; i <= 400; ++i) x.push_back(static_cast<float>(i) / 40.0f);
  for (float v : {-1e4f, -90.0f, -1e-6f, 0.0f, 1e-6f, 90.0f, 1e4f}) x.push_back(v);
  const auto noise = random_floats(200001, 14, 6.0f);
  x.insert(x.end(), noise.begin(), noise.end());
  std::vector<float> y = x;
  gelu_tanh(y.data(), static_cast<std::int64_t>(y.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double ref = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (v + 0.044715 * v * v * v)));
    ASSERT_NEAR(y[i], ref, 2e-6 * (1.0 + std::abs(ref))) << v << " at " << cpu_isa_name(active_cpu_isa());
  }
}

// Gemma's GeGLU over the exponential's whole range: gates far below 0 (e^(-2u) overflows), far
// above (it underflows), and between. ctest also runs it with SEPAL_CPU_ISA=generic.
TEST(Activation, GeluTanhMulMatchesReference) {
  std::vector<float> g;
  for (int i = -400; i <= 400; ++i) g.push_back(static_cast<float>(i) / 40.0f);
  for (float v : {-1e4f, -90.0f, -1e-6f, 1e-6f, 90.0f, 1e4f}) g.push_back(v);
  const auto u = random_floats(g.size(), 13, 3.0f);
  std::vector<float> y = g;
  gelu_tanh_mul(y.data(), u.data(), static_cast<std::int64_t>(y.size()));
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double v = g[i];
    const double ref = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (v + 0.044715 * v * v * v))) * u[i];
    EXPECT_NEAR(y[i], ref, 2e-6 * (1.0 + std::abs(ref))) << v << " at " << cpu_isa_name(active_cpu_isa());
  }
  std::vector<float> via = g;
  gate_mul(GateActivation::kGeluTanh, via.data(), u.data(), static_cast<std::int64_t>(via.size()));
  EXPECT_EQ(via, y);
}

// Gemma 2's soft-capping against double: near 0 (where 1 - 2/(1 + e^(2y)) would cancel), across
// the switch between the tanh's two formulas (|x| / cap = 0.625), into saturation, at ±infinity,
// and the tanh kept for the gradient. ctest also runs it with SEPAL_CPU_ISA=generic.
TEST(Activation, SoftcapMatchesReference) {
  for (float cap : {30.0f, 50.0f, 0.5f}) {
    std::vector<float> x;
    for (int i = -400; i <= 400; ++i) x.push_back(static_cast<float>(i) * cap / 100.0f);
    for (float v : {1e-30f, -1e-20f, 1e-6f, 0.0f, -0.0f}) x.push_back(v * cap);
    for (float r : {0.62f, 0.6249999f, 0.625f, 0.6250001f, 0.63f, 9.0f, 44.0f, 1e4f}) {
      x.push_back(r * cap);
      x.push_back(-r * cap);
    }
    x.push_back(INFINITY);
    x.push_back(-INFINITY);
    const auto noise = random_floats(5003, 17, 3.0f * cap);
    x.insert(x.end(), noise.begin(), noise.end());
    std::vector<float> y = x, t(x.size()), z = x;
    softcap(y.data(), static_cast<std::int64_t>(y.size()), cap, t.data());
    softcap(z.data(), static_cast<std::int64_t>(z.size()), cap);
    EXPECT_EQ(y, z) << "the tanh kept for the gradient changed the result";
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double th = std::tanh(static_cast<double>(x[i]) / cap);
      ASSERT_NEAR(t[i], th, 3e-7 * std::abs(th) + 1e-37) << x[i] << " cap " << cap << " at " << cpu_isa_name(active_cpu_isa());
      ASSERT_NEAR(y[i], cap * th, 4e-7 * std::abs(cap * th) + 1e-37) << x[i] << " cap " << cap;
    }
  }
  float nan = NAN;
  softcap(&nan, 1, 30.0f);
  EXPECT_TRUE(std::isnan(nan));
}

// GPT-OSS's clamped SwiGLU against double: gates below, inside and above the limit (and far
// below, where the exponential overflows), ups clamped on both sides, NaN kept. ctest also runs
// it with SEPAL_CPU_ISA=generic.
TEST(Activation, ClampedSwigluMulMatchesReference) {
  const float limit = 7.0f;
  const auto [g, u] = clamped_swiglu_inputs(100003, 21);
  std::vector<float> y = g;
  clamped_swiglu_mul(y.data(), u.data(), static_cast<std::int64_t>(y.size()), limit);
  for (std::size_t i = 0; i < g.size(); ++i) {
    const double gc = std::min<double>(g[i], limit), uc = std::clamp<double>(u[i], -limit, limit);
    const double ref = gc / (1.0 + std::exp(-static_cast<double>(kClampedSwigluAlpha) * gc)) * (uc + 1.0);
    ASSERT_NEAR(y[i], ref, 2e-6 * (1.0 + std::abs(ref))) << g[i] << " " << u[i] << " at " << cpu_isa_name(active_cpu_isa());
  }
  std::vector<float> via = g;
  gate_mul(GateActivation::kClampedSwiglu, via.data(), u.data(), static_cast<std::int64_t>(via.size()), limit);
  EXPECT_EQ(via, y);
  std::vector<float> nan_gate = {NAN, 1.0f}, nan_up = {1.0f, NAN};
  clamped_swiglu_mul(nan_gate.data(), nan_up.data(), 2, limit);
  EXPECT_TRUE(std::isnan(nan_gate[0]));
  EXPECT_TRUE(std::isnan(nan_gate[1]));
}

TEST(Activation, SiluMulHoldsAtTheEndsOfTheRange) {
  std::vector<float> g = {-200.0f, -88.0f, -20.0f, -1e-3f, 0.0f, 1e-3f, 20.0f, 88.0f, 200.0f};
  const std::vector<float> u(g.size(), 1.5f);
  std::vector<double> ref;
  for (float v : g) ref.push_back(v / (1.0 + std::exp(-static_cast<double>(v))) * 1.5);
  silu_mul(g.data(), u.data(), static_cast<std::int64_t>(g.size()));
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], ref[i], 1e-6 * std::max(1.0, std::fabs(ref[i]))) << i;
}

TEST(Softmax, MatchesReferenceOverAWideRange) {
  for (int count : {1, 7, 16, 33, 1000}) {
    auto x = random_floats(static_cast<std::size_t>(count), 40 + count, 30.0f);
    double max_value = -INFINITY, sum = 0;
    for (float v : x) max_value = std::max(max_value, static_cast<double>(v));
    std::vector<double> ref;
    for (float v : x) sum += std::exp(v - max_value);
    for (float v : x) ref.push_back(std::exp(v - max_value) / sum);
    softmax(x.data(), count);
    for (int i = 0; i < count; ++i) EXPECT_NEAR(x[i], ref[i], 1e-6 * ref[i] + 1e-12) << count << " " << i;
  }
}

TEST(Softmax, SumsToOneAndIsStable) {
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f, -INFINITY};
  softmax(x.data(), 4);
  EXPECT_NEAR(x[0] + x[1] + x[2] + x[3], 1.0, 1e-6);
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_NEAR(x[1], std::exp(1.0) / (1 + std::exp(1.0) + std::exp(-1.0)), 1e-6);
  const std::vector<float> y = {1000.0f, 1000.0f};
  EXPECT_NEAR(log_sum_exp(y.data(), 2), 1000.0 + std::log(2.0), 1e-9);
}

// A vocabulary-wide row of logits (and shorter ones, none a multiple of 16 long), against double:
// log_sum_exp, and exp_shifted by it (the softmax, scaled). ctest also runs it with
// SEPAL_CPU_ISA=generic.
TEST(Softmax, LogSumExpAndExpShiftedMatchDouble) {
  for (const int count : {1, 17, 1000, 32003}) {
    auto x = random_floats(count, 40 + count, 12.0f);
    if (count > 2) x[1] = -INFINITY;  // a masked logit
    double top = -INFINITY;
    for (float v : x) top = std::max(top, static_cast<double>(v));
    double sum = 0;
    for (float v : x) sum += std::exp(static_cast<double>(v) - top);
    const double ref = top + std::log(sum);
    const double lse = log_sum_exp(x.data(), count);
    EXPECT_NEAR(lse, ref, 2e-7 * std::abs(ref) + 1e-7) << count;
    std::vector<float> p = x;
    exp_shifted(p.data(), count, lse, 0.5f);
    double total = 0;
    for (int i = 0; i < count; ++i) {
      // In f32, x - lse is rounded to a relative 2^-24 of itself: so is the exponential, on top of its 2 ulp.
      const double d = static_cast<double>(x[i]) - ref, want = 0.5 * std::exp(d);
      if (std::isinf(d)) {  // the masked logit
        ASSERT_EQ(p[i], 0.0f);
        continue;
      }
      ASSERT_NEAR(p[i], want, (2.5e-7 + 1.2e-7 * std::abs(d)) * want + 1e-30)
          << count << " " << i << " at " << cpu_isa_name(active_cpu_isa());
      total += p[i];
    }
    EXPECT_NEAR(total, 0.5, 1e-6);
  }
  std::vector<float> masked(33, -INFINITY);
  EXPECT_EQ(log_sum_exp(masked.data(), 33), -INFINITY);
  masked[20] = 3.0f;
  EXPECT_NEAR(log_sum_exp(masked.data(), 33), 3.0, 1e-12);
  masked[5] = NAN;
  EXPECT_TRUE(std::isnan(log_sum_exp(masked.data(), 33)));
}

// ---- sampling ----

TEST(Sampling, GreedyIsArgmaxWithFirstTie) {
  const std::vector<float> logits = {0.1f, 3.0f, 3.0f, -1.0f};
  Rng rng(1);
  EXPECT_EQ(sample_token(logits.data(), 4, {}, rng), 1);
}

TEST(Sampling, ArgmaxIsStdMaxElement) {
  // Vocabularies of every length around the vector widths, the largest value anywhere, ties,
  // infinities, signed zeros and NaN (std::max_element never takes a NaN, but keeps a NaN first).
  for (const std::int64_t n : {1, 2, 15, 16, 17, 63, 64, 65, 1000, 32000}) {
    for (int trial = 0; trial < 6; ++trial) {
      auto x = random_floats(static_cast<std::size_t>(n), static_cast<std::uint32_t>(n * 10 + trial), 3.0f);
      const auto at = [&](std::int64_t i) -> float& { return x[static_cast<std::size_t>(i % n)]; };
      if (trial == 1) at(n - 1) = 50.0f;                             // the last
      if (trial == 2) at(n / 3) = at(2 * n / 3) = 50.0f;             // a tie
      if (trial == 3) at(n / 2) = INFINITY, at(n / 4) = NAN;         // infinity, NaN before it
      if (trial == 4) std::fill(x.begin(), x.end(), -0.0f), at(n / 2) = 0.0f;  // signed zeros
      if (trial == 5) at(0) = NAN;                                   // NaN first
      const auto want = std::max_element(x.begin(), x.end()) - x.begin();
      EXPECT_EQ(argmax(x.data(), n), want) << "n " << n << ", trial " << trial;
    }
  }
}

TEST(Sampling, SameSeedSameTokensDifferentSeedDifferent) {
  const auto logits = random_floats(500, 13, 2.0f);
  SamplingParams p{1.0f, 0, 1.0f};
  auto draw = [&](std::uint64_t seed) {
    Rng rng(seed);
    std::vector<int> out;
    for (int i = 0; i < 50; ++i) out.push_back(sample_token(logits.data(), 500, p, rng));
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

// Every path draws tokens as often as their softmax says, and never one whose logit is -inf (a
// grammar's mask), on a small vocabulary and on one of 150 000 where all but four are masked.
TEST(Sampling, DrawsFollowTheSoftmaxAndSkipMaskedTokens) {
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  for (const std::int64_t vocab : {std::int64_t{8}, std::int64_t{150000}}) {
    std::vector<float> logits(static_cast<std::size_t>(vocab), kMasked);
    const std::int64_t ids[] = {1, vocab / 2, vocab - 3, vocab - 1};
    const double p[] = {0.4, 0.3, 0.2, 0.1};
    for (int k = 0; k < 4; ++k) logits[static_cast<std::size_t>(ids[k])] = static_cast<float>(std::log(p[k]) + 2.0);
    for (const SamplingParams params : {SamplingParams{1.0f, 0, 1.0f}, SamplingParams{1.0f, 10, 1.0f}, SamplingParams{1.0f, 0, 0.999f}}) {
      Rng rng(11);
      std::map<std::int64_t, int> counts;
      const int draws = vocab > 100 ? 2000 : 20000;  // the tolerance is 3.5 standard deviations or more
      for (int i = 0; i < draws; ++i) ++counts[sample_token(logits.data(), vocab, params, rng)];
      ASSERT_EQ(counts.size(), 4u) << vocab;
      for (int k = 0; k < 4; ++k) {
        EXPECT_NEAR(counts[ids[k]] / double(draws), p[k], vocab > 100 ? 0.04 : 0.015) << vocab << " id " << ids[k];
      }
    }
  }
}

TEST(Sampling, TopKAndTopPRestrictTheCandidates) {
  // Probabilities at temperature 1: 0.5, 0.25, 0.125, 0.125.
  const std::vector<float> logits = {std::log(4.f), std::log(2.f), 0.f, 0.f};
  Rng rng(3);
  std::map<int, int> counts;
  for (int i = 0; i < 4000; ++i) ++counts[sample_token(logits.data(), 4, {1.0f, 2, 1.0f}, rng)];
  EXPECT_EQ(counts.count(2) + counts.count(3), 0u);
  EXPECT_NEAR(counts[0] / 4000.0, 2.0 / 3.0, 0.03);
  counts.clear();
  for (int i = 0; i < 4000; ++i) ++counts[sample_token(logits.data(), 4, {1.0f, 0, 0.7f}, rng)];
  EXPECT_EQ(counts.count(2) + counts.count(3), 0u);  // 0.5 + 0.25 reaches 0.7
  EXPECT_GT(counts[1], 0);
  counts.clear();
  for (int i = 0; i < 4000; ++i) ++counts[sample_token(logits.data(), 4, {1.0f, 0, 0.4f}, rng)];
  EXPECT_EQ(counts.size(), 1u);  // the top token alone reaches 0.4
  // Temperature sharpens: at 0.25 the top token has probability 16/(16+1+1/16+1/16) ~ 0.93.
  counts.clear();
  for (int i = 0; i < 4000; ++i) ++counts[sample_token(logits.data(), 4, {0.25f, 0, 1.0f}, rng)];
  EXPECT_NEAR(counts[0] / 4000.0, 16.0 / (16.0 + 1.0 + 0.125), 0.02);
}

}  // namespace
}  // namespace sepal

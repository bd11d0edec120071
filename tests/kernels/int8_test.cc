// LLM.int8() on the CPU: quantization, and the int8 product at every CPU level against a plain
// double-precision reference that applies the same quantization and outlier decomposition.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "kernels/blockwise_quant.h"
#include "kernels/error.h"
#include "kernels/matmul.h"
#include "kernels/quantize.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using test::normalized_error;
using test::random_floats;

struct QuantizedMatrix {
  std::vector<std::int8_t> q;
  std::vector<float> scales;
  WeightView view(std::int64_t rows, std::int64_t cols, float threshold) const {
    WeightView w{DType::kI8, rows, cols, q.data()};
    w.scales = scales.data();
    w.outlier_threshold = threshold;
    return w;
  }
};

QuantizedMatrix quantize(const std::vector<float>& w, std::int64_t rows, std::int64_t cols) {
  QuantizedMatrix m{std::vector<std::int8_t>(w.size()), std::vector<float>(static_cast<std::size_t>(rows))};
  for (std::int64_t r = 0; r < rows; ++r) m.scales[r] = quantize_row_i8(w.data() + r * cols, cols, m.q.data() + r * cols);
  return m;
}

// The LLM.int8() product written out plainly, in double: outlier columns over every token of
// the call, or each token's own on the streaming path (up to kStreamingMaxTokens tokens).
std::vector<double> reference(const std::vector<float>& x, std::int64_t n, const QuantizedMatrix& m, std::int64_t rows,
                              std::int64_t cols, float threshold) {
  std::vector<double> y(static_cast<std::size_t>(n * rows));
  for (std::int64_t t = 0; t < n; ++t) {
    std::vector<bool> outlier(static_cast<std::size_t>(cols), false);
    for (std::int64_t u = 0; u < n; ++u) {
      if (n <= kStreamingMaxTokens && u != t) continue;
      for (std::int64_t k = 0; k < cols; ++k)
        if (std::fabs(x[u * cols + k]) >= threshold) outlier[k] = true;
    }
    std::vector<float> inliers(x.begin() + t * cols, x.begin() + (t + 1) * cols);
    for (std::int64_t k = 0; k < cols; ++k)
      if (outlier[k]) inliers[k] = 0;
    std::vector<std::int8_t> q(static_cast<std::size_t>(cols));
    const double xs = quantize_row_i8(inliers.data(), cols, q.data());
    for (std::int64_t r = 0; r < rows; ++r) {
      double dot = 0, out = 0;
      for (std::int64_t k = 0; k < cols; ++k) {
        dot += static_cast<double>(q[k]) * m.q[r * cols + k];
        if (outlier[k]) out += static_cast<double>(x[t * cols + k]) * m.q[r * cols + k];
      }
      y[t * rows + r] = m.scales[r] * (xs * dot + out);
    }
  }
  return y;
}

using Int8Case = std::tuple<CpuIsa, int, int, int>;  // isa, tokens, rows, cols
class Int8MatmulTest : public ::testing::TestWithParam<Int8Case> {};

TEST_P(Int8MatmulTest, MatchesThePlainReferenceWithAndWithoutOutliers) {
  const auto [isa, n, rows, cols] = GetParam();
  if (!cpu_supports(isa)) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(isa);
  auto x = random_floats(static_cast<std::size_t>(n) * cols, 11);
  // Two outlier columns, one of them in a single token only.
  x[(cols / 3)] = 9.5f;
  x[(n - 1) * cols + cols - 1] = -7.0f;
  const auto wf = random_floats(static_cast<std::size_t>(rows) * cols, 12, 0.1f);
  const QuantizedMatrix m = quantize(wf, rows, cols);
  for (float threshold : {6.0f, INFINITY}) {
    std::vector<float> y(static_cast<std::size_t>(n) * rows, NAN);
    matmul(x.data(), n, m.view(rows, cols, threshold), y.data(), isa);
    EXPECT_LT(normalized_error(y, reference(x, n, m, rows, cols, threshold)), 1e-6) << "threshold " << threshold;
  }
}

std::string int8_case_name(const ::testing::TestParamInfo<Int8Case>& info) {
  const auto& [isa, n, rows, cols] = info.param;
  return std::string(cpu_isa_name(isa)) + "_n" + std::to_string(n) + "_r" + std::to_string(rows) + "_c" +
         std::to_string(cols);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Int8MatmulTest,
    ::testing::Combine(::testing::Values(CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni, CpuIsa::kAmx),
                       ::testing::Values(1, 2, 3, 4, 5, 33),      // decode (rows in pairs from 2 tokens) and blocked paths
                       ::testing::Values(1, 2, 5, 130),           // tails of 4 rows and of a pair; threaded slices
                       ::testing::Values(1, 37, 64, 172, 2100)),  // tails of 32 and 64 bytes; long rows
    int8_case_name);

// A prompt whose tokens put outliers in a third of the columns, as an MLP's down projection sees
// (the AMX kernel takes that part on bf16 tiles, 32 columns a step): every level against the
// reference.
TEST(Int8, ManyOutlierColumnsMatchTheReferenceAtEveryLevel) {
  const int n = 45, rows = 70, cols = 400;
  auto x = random_floats(static_cast<std::size_t>(n) * cols, 41);
  for (int c = 0; c < cols; c += 3) x[static_cast<std::size_t>((c % n) * cols + c)] = (c % 2 ? 1.0f : -1.0f) * (6.5f + c % 7);
  const QuantizedMatrix m = quantize(random_floats(static_cast<std::size_t>(rows) * cols, 42, 0.1f), rows, cols);
  const std::vector<double> want = reference(x, n, m, rows, cols, 6.0f);
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni, CpuIsa::kAmx}) {
    if (!cpu_supports(isa)) continue;
    std::vector<float> y(static_cast<std::size_t>(n) * rows, NAN);
    matmul(x.data(), n, m.view(rows, cols, 6.0f), y.data(), isa);
    EXPECT_LT(normalized_error(y, want), 1e-6) << cpu_isa_name(isa);
  }
}

TEST(Int8, CloseToTheFloatProduct) {
  const int n = 6, rows = 300, cols = 512;
  const auto x = random_floats(static_cast<std::size_t>(n) * cols, 21);
  const auto wf = random_floats(static_cast<std::size_t>(rows) * cols, 22, 0.05f);
  const QuantizedMatrix m = quantize(wf, rows, cols);
  std::vector<float> y(static_cast<std::size_t>(n) * rows);
  matmul(x.data(), n, m.view(rows, cols, 6.0f), y.data());
  std::vector<double> exact(y.size());
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < cols; ++k) exact[t * rows + r] += static_cast<double>(x[t * cols + k]) * wf[r * cols + k];
  EXPECT_LT(normalized_error(y, exact), 2e-2);
}

TEST(Int8, OutlierDecompositionKeepsLargeFeaturesAccurate) {
  // One hidden dimension 60 times larger than the rest, as in large models: quantizing it with
  // the others costs most of their precision; the decomposition computes it in float.
  const int n = 4, rows = 256, cols = 512;
  auto x = random_floats(static_cast<std::size_t>(n) * cols, 31);
  for (int t = 0; t < n; ++t) x[t * cols + 100] = 60.0f * (t % 2 ? 1 : -1);
  const auto wf = random_floats(static_cast<std::size_t>(rows) * cols, 32, 0.05f);
  const QuantizedMatrix m = quantize(wf, rows, cols);
  std::vector<double> exact(static_cast<std::size_t>(n) * rows);
  for (int t = 0; t < n; ++t)
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < cols; ++k) exact[t * rows + r] += static_cast<double>(x[t * cols + k]) * wf[r * cols + k];
  std::vector<float> with(exact.size()), without(exact.size());
  matmul(x.data(), n, m.view(rows, cols, 6.0f), with.data());
  matmul(x.data(), n, m.view(rows, cols, INFINITY), without.data());
  EXPECT_LT(normalized_error(with, exact), 2e-2);
  EXPECT_GT(normalized_error(without, exact), 3 * normalized_error(with, exact));
}

TEST(Int8, QuantizeRow) {
  const std::vector<float> v{0.5f, -1.0f, 0.25f, 0.0f};
  std::vector<std::int8_t> q(4);
  EXPECT_FLOAT_EQ(quantize_row_i8(v.data(), 4, q.data()), 1.0f / 127);
  EXPECT_EQ(q, (std::vector<std::int8_t>{64, -127, 32, 0}));  // 63.5 rounds to even
  const std::vector<float> zeros(5, 0.0f);
  EXPECT_EQ(quantize_row_i8(zeros.data(), 5, q.data()), 0.0f);
  const std::vector<float> bad{1.0f, NAN};
  EXPECT_THROW(quantize_row_i8(bad.data(), 2, q.data()), Error);
}

// Weights are quantized at load with the active level's code (sixteen values at a time at
// AVX-512): every level gives the scalar code's bytes and scale, for rows of any length (tails
// of 1 to 15 values included), and refuses NaN and infinity wherever they are.
TEST(Int8, QuantizeRowGivesTheSameBytesAtEveryLevel) {
  for (const std::int64_t n : {1, 15, 16, 17, 203, 2048}) {
    auto v = random_floats(static_cast<std::size_t>(n), 51 + static_cast<unsigned>(n), 2.0f);
    std::vector<std::int8_t> expected(static_cast<std::size_t>(n));
    const float scale = quantize_row_i8(v.data(), n, expected.data(), CpuIsa::kGeneric);
    for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni, CpuIsa::kAmx}) {
      if (!cpu_supports(isa)) continue;
      std::vector<std::int8_t> q(static_cast<std::size_t>(n), 99);
      EXPECT_EQ(quantize_row_i8(v.data(), n, q.data(), isa), scale) << cpu_isa_name(isa) << " n=" << n;
      EXPECT_EQ(q, expected) << cpu_isa_name(isa) << " n=" << n;
      for (const float bad : {NAN, INFINITY, -INFINITY}) {
        auto broken = v;
        broken[static_cast<std::size_t>(n - 1)] = bad;  // in the tail where n is not a multiple of 16
        EXPECT_THROW(quantize_row_i8(broken.data(), n, q.data(), isa), Error) << cpu_isa_name(isa) << " n=" << n;
      }
    }
  }
  // Values whose scaled form is exactly half-way between two integers round to even, as the
  // scalar code does: absmax 127 makes the scale 1.
  const std::vector<float> ties{127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, 3.0f, 0, 0, 0, 0, 0, 0, 0, 4.5f};
  for (CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx512}) {
    if (!cpu_supports(isa)) continue;
    std::vector<std::int8_t> q(ties.size());
    EXPECT_EQ(quantize_row_i8(ties.data(), static_cast<std::int64_t>(ties.size()), q.data(), isa), 1.0f);
    EXPECT_EQ(q, (std::vector<std::int8_t>{127, 0, 2, 2, 0, -2, -2, 126, 3, 0, 0, 0, 0, 0, 0, 0, 4})) << cpu_isa_name(isa);
  }
}

TEST(Int8, MalformedScalesAreRejected) {
  const std::vector<float> good{0.1f, 0.2f};
  EXPECT_EQ(check_quantized_scales("w", 2, good.data(), 2), "");
  EXPECT_EQ(check_quantized_scales("w", 3, good.data(), 2), "w has 2 scales for 3 rows");
  const std::vector<float> nan{0.1f, NAN}, inf{INFINITY, 0.1f}, negative{0.1f, -1.0f};
  EXPECT_EQ(check_quantized_scales("w", 2, nan.data(), 2), "w: scale of row 1 is not finite");
  EXPECT_EQ(check_quantized_scales("w", 2, inf.data(), 2), "w: scale of row 0 is not finite");
  EXPECT_EQ(check_quantized_scales("w", 2, negative.data(), 2), "w: scale of row 1 is negative");
}

TEST(Int8, NonFiniteActivationsAreAnError) {
  const std::vector<float> wf(64, 0.1f);
  const QuantizedMatrix m = quantize(wf, 1, 64);
  std::vector<float> x(64, 1.0f);
  x[5] = NAN;
  float y = 0;
  EXPECT_THROW(matmul(x.data(), 1, m.view(1, 64, 6.0f), &y), Error);
}

// ---- blockwise dynamic 8-bit quantization (hidden states on the wire) ----

TEST(Blockwise, TheCodeIsIncreasingAndHoldsZeroAndPlusMinusOne) {
  const auto& code = dynamic_code();
  for (std::size_t i = 1; i < code.size(); ++i) EXPECT_LT(code[i - 1], code[i]) << i;
  EXPECT_EQ(code.front(), -1.0f);
  EXPECT_EQ(code.back(), 1.0f);
  EXPECT_NE(std::find(code.begin(), code.end(), 0.0f), code.end());
}

TEST(Blockwise, ErrorIsSmallRelativeToTheBlockAndRequantizingChangesNothing) {
  // Hidden-state-like rows: mostly small values with a few large ones, across several blocks.
  const std::int64_t n = 3 * kBlockwiseBlock + 17;
  auto x = random_floats(static_cast<std::size_t>(n), 41);
  x[5] = 40.0f;
  x[300] = -25.0f;
  std::vector<std::uint8_t> codes(n), again(n);
  std::vector<float> absmax(blockwise_blocks(n)), absmax2(blockwise_blocks(n)), y(n), z(n);
  quantize_blockwise(x.data(), n, codes.data(), absmax.data());
  dequantize_blockwise(codes.data(), absmax.data(), n, y.data());
  for (std::int64_t i = 0; i < n; ++i) {
    // The code's steps are at most 0.9 / 64 of the block's absmax apart (its top decade).
    EXPECT_LE(std::fabs(y[i] - x[i]), absmax[i / kBlockwiseBlock] * 0.9f / 128 + 1e-7f) << i;
  }
  EXPECT_EQ(absmax[0], 40.0f);
  EXPECT_EQ(y[5], 40.0f);
  quantize_blockwise(y.data(), n, again.data(), absmax2.data());
  EXPECT_EQ(codes, again);
  EXPECT_EQ(absmax, absmax2);
  dequantize_blockwise(again.data(), absmax2.data(), n, z.data());
  EXPECT_EQ(y, z);
  std::vector<float> bad(10, 1.0f);
  bad[3] = INFINITY;
  EXPECT_THROW(quantize_blockwise(bad.data(), 10, codes.data(), absmax.data()), Error);
}

TEST(Blockwise, EveryValueGetsItsNearestCodeTheLowerOnATie) {
  // Values at every code point, at the midpoints between neighbours, just either side of both,
  // and random ones; the block's absmax is 1, so each value is quantized as it is.
  const auto& code = dynamic_code();
  std::vector<float> values;
  for (std::size_t j = 0; j < code.size(); ++j) {
    values.push_back(code[j]);
    values.push_back(std::nextafter(code[j], 2.0f));
    values.push_back(std::nextafter(code[j], -2.0f));
    if (j + 1 < code.size()) {
      const float mid = code[j] + (code[j + 1] - code[j]) / 2;
      for (const float v : {mid, std::nextafter(mid, 2.0f), std::nextafter(mid, -2.0f)}) values.push_back(v);
    }
  }
  for (const float v : random_floats(4000, 7)) values.push_back(std::clamp(v / 3, -1.0f, 1.0f));
  for (const CpuIsa isa : {CpuIsa::kGeneric, CpuIsa::kAvx512}) {
    if (!cpu_supports(isa)) continue;
    for (const float v : values) {
      // A block of two: the value and 1 (so the absmax is 1 and v is quantized unscaled).
      const float x[2] = {std::clamp(v, -1.0f, 1.0f), 1.0f};
      std::uint8_t codes[2];
      float absmax = 0;
      quantize_blockwise(x, 2, codes, &absmax, isa);
      ASSERT_EQ(absmax, 1.0f);
      std::size_t best = 0;
      for (std::size_t j = 1; j < code.size(); ++j) {
        if (std::fabs(x[0] - code[j]) < std::fabs(x[0] - code[best])) best = j;
      }
      EXPECT_EQ(codes[0], best) << cpu_isa_name(isa) << ": value " << x[0];
    }
  }
}

TEST(Blockwise, EveryCpuLevelGivesTheSameCodes) {
  // Rows of every length around the 16- and 64-value steps and the 256-value blocks, at scales
  // from tiny to large, with values on the code's points after scaling; the generic search (the
  // one TheCodeIs... and EveryValueGets... check against the code itself) is the oracle.
  const auto& code = dynamic_code();
  for (const std::int64_t n : {1, 15, 16, 17, 63, 64, 65, 255, 256, 257, 768, 2051}) {
    for (const float scale : {1e-6f, 1.0f, 37.5f}) {
      auto x = random_floats(static_cast<std::size_t>(n), static_cast<std::uint32_t>(n));
      for (std::int64_t i = 0; i < n; i += 7) x[static_cast<std::size_t>(i)] = code[static_cast<std::size_t>(i % 256)];
      for (float& v : x) v *= scale;
      std::vector<std::uint8_t> want(static_cast<std::size_t>(n)), got(want.size());
      std::vector<float> want_absmax(static_cast<std::size_t>(blockwise_blocks(n))), got_absmax(want_absmax.size());
      quantize_blockwise(x.data(), n, want.data(), want_absmax.data(), CpuIsa::kGeneric);
      for (const CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni}) {
        if (!cpu_supports(isa)) continue;
        quantize_blockwise(x.data(), n, got.data(), got_absmax.data(), isa);
        EXPECT_EQ(got, want) << cpu_isa_name(isa) << ", n " << n << ", scale " << scale;
        EXPECT_EQ(got_absmax, want_absmax);
      }
    }
  }
}

}  // namespace
}  // namespace sepal

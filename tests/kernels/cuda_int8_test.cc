// The CUDA LLM.int8() kernels against the CPU ones, the numerical oracle. Labelled gpu: CI skips
// it; it runs where a GPU exists (scripts/test.sh picks it up when nvidia-smi sees one).
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "kernels/cuda/int8_matmul.h"
#include "kernels/error.h"
#include "kernels/matmul.h"
#include "kernels/quantize.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using test::normalized_error;
using test::random_floats;

TEST(CudaInt8, QuantizeAndDequantizeMatchTheCpu) {
  ASSERT_TRUE(cuda::device_available()) << "no CUDA device";
  const std::int64_t rows = 37, cols = 1000;
  const auto x = random_floats(static_cast<std::size_t>(rows * cols), 51, 3.0f);
  std::vector<std::int8_t> q(x.size()), q_cpu(x.size());
  std::vector<float> scales(rows), scales_cpu(rows);
  cuda::quantize_rows(x.data(), rows, cols, q.data(), scales.data());
  for (std::int64_t r = 0; r < rows; ++r) scales_cpu[r] = quantize_row_i8(x.data() + r * cols, cols, q_cpu.data() + r * cols);
  EXPECT_EQ(scales, scales_cpu);
  std::int64_t differ = 0;  // a product rounded on either side of .5 may differ by one
  for (std::size_t i = 0; i < q.size(); ++i) {
    EXPECT_LE(std::abs(q[i] - q_cpu[i]), 1) << i;
    differ += q[i] != q_cpu[i];
  }
  EXPECT_LT(differ, 5);
  std::vector<float> out(x.size()), out_cpu(x.size());
  cuda::dequantize_rows(q_cpu.data(), scales_cpu.data(), rows, cols, out.data());
  for (std::int64_t r = 0; r < rows; ++r) dequantize_row_i8(q_cpu.data() + r * cols, cols, scales_cpu[r], out_cpu.data() + r * cols);
  EXPECT_EQ(out, out_cpu);
}

class CudaInt8Matmul : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

std::string shape_name(const ::testing::TestParamInfo<std::tuple<int, int, int>>& info) {
  std::ostringstream name;
  name << 'n' << std::get<0>(info.param) << "_r" << std::get<1>(info.param) << "_c" << std::get<2>(info.param);
  return name.str();
}

TEST_P(CudaInt8Matmul, MatchesTheCpuWithAndWithoutOutliers) {
  ASSERT_TRUE(cuda::device_available()) << "no CUDA device";
  const auto [n, rows, cols] = GetParam();
  auto x = random_floats(static_cast<std::size_t>(n) * cols, 61);
  x[cols / 2] = 12.0f;                    // an outlier column in token 0
  x[(n - 1) * cols + 3] = -8.0f;          // and one in the last token
  const auto wf = random_floats(static_cast<std::size_t>(rows) * cols, 62, 0.05f);
  std::vector<std::int8_t> wq(wf.size());
  std::vector<float> scales(static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r) scales[r] = quantize_row_i8(wf.data() + r * cols, cols, wq.data() + r * cols);
  for (float threshold : {6.0f, INFINITY}) {
    WeightView w{DType::kI8, rows, cols, wq.data()};
    w.scales = scales.data();
    w.outlier_threshold = threshold;
    std::vector<float> cpu(static_cast<std::size_t>(n) * rows), gpu(cpu.size(), NAN);
    matmul(x.data(), n, w, cpu.data());
    cuda::Int8Matmul device(w);
    device.forward(x.data(), n, gpu.data());
    EXPECT_LT(normalized_error(gpu, std::vector<double>(cpu.begin(), cpu.end())), 1e-5) << "threshold " << threshold;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaInt8Matmul,
                         ::testing::Values(std::make_tuple(1, 256, 512), std::make_tuple(3, 2048, 2048),
                                           std::make_tuple(17, 5632, 2048), std::make_tuple(128, 2048, 5632)),
                         shape_name);

TEST(CudaInt8, NonFiniteActivationsAreAnError) {
  ASSERT_TRUE(cuda::device_available()) << "no CUDA device";
  std::vector<std::int8_t> wq(64 * 64, 1);
  std::vector<float> scales(64, 0.01f), x(64, 1.0f), y(64);
  WeightView w{DType::kI8, 64, 64, wq.data()};
  w.scales = scales.data();
  x[7] = NAN;
  cuda::Int8Matmul device(w);
  EXPECT_THROW(device.forward(x.data(), 1, y.data()), Error);
}

}  // namespace
}  // namespace sepal

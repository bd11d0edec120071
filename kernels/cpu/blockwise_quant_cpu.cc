#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/blockwise_quant.h"
#include "kernels/cpu/blockwise_codes.h"
#include "kernels/error.h"

namespace sepal {
namespace {

std::array<float, 256> make_dynamic_code() {
  std::vector<float> positive;
  for (int e = -6; e <= 0; ++e) {
    const int items = 1 << (e + 6);
    for (int j = 0; j < items; ++j) {
      const double m = 0.1 + 0.9 * (j + 0.5) / items;
      positive.push_back(static_cast<float>(std::pow(10.0, e) * m));
    }
  }
  std::vector<float> values{0.0f, 1.0f, -1.0f};
  std::sort(positive.begin(), positive.end());
  for (std::size_t i = 0; i < positive.size(); ++i) {
    values.push_back(positive[i]);
    if (i > 0) values.push_back(-positive[i]);
  }
  std::sort(values.begin(), values.end());
  SEPAL_CHECK(values.size() == 256);
  std::array<float, 256> code{};
  std::copy(values.begin(), values.end(), code.begin());
  return code;
}

// The entry nearest to v in [-1, 1] (= [code[0], code[255]]), the lower on a tie. Without
// branches: on hidden states a binary search's branches mispredict about half the time.
inline std::uint8_t nearest_code(const std::array<float, 256>& code, float v) {
  // Entries below v: at most 255, since v <= code[255].
  unsigned pos = 0;
  for (unsigned half = 128; half >= 1; half /= 2) pos += static_cast<unsigned>(code[pos + half - 1] < v) * half;
  const unsigned lo = pos - (pos > 0);
  const unsigned lower = static_cast<unsigned>(pos > 0) & static_cast<unsigned>(v - code[lo] <= code[pos] - v);
  return static_cast<std::uint8_t>(pos - lower);
}

}  // namespace

const std::array<float, 256>& dynamic_code() {
  static const std::array<float, 256> code = make_dynamic_code();
  return code;
}

void quantize_blockwise(const float* x, std::int64_t n, std::uint8_t* codes, float* absmax) {
  quantize_blockwise(x, n, codes, absmax, active_cpu_isa());
}

void quantize_blockwise(const float* x, std::int64_t n, std::uint8_t* codes, float* absmax, CpuIsa isa) {
  const auto& code = dynamic_code();
  for (std::int64_t b = 0; b * kBlockwiseBlock < n; ++b) {
    const std::int64_t begin = b * kBlockwiseBlock, end = std::min(n, begin + kBlockwiseBlock);
    float amax = 0.0f;
    for (std::int64_t i = begin; i < end; ++i) {
      const float a = std::fabs(x[i]);
      if (!(a <= amax)) amax = a;
    }
    if (!std::isfinite(amax)) fail("cannot compress hidden states that hold NaN or infinity");
    absmax[b] = amax;
    if (amax == 0.0f) {
      std::fill(codes + begin, codes + end, nearest_code(code, 0.0f));
      continue;
    }
    if (isa >= CpuIsa::kAvx512 && cpu_supports(CpuIsa::kAvx512)) {
      cpu::nearest_codes_avx512(x + begin, end - begin, amax, code.data(), codes + begin);
      continue;
    }
    for (std::int64_t i = begin; i < end; ++i) codes[i] = nearest_code(code, x[i] / amax);
  }
}

void dequantize_blockwise(const std::uint8_t* codes, const float* absmax, std::int64_t n, float* out) {
  const auto& code = dynamic_code();
  for (std::int64_t i = 0; i < n; ++i) out[i] = code[codes[i]] * absmax[i / kBlockwiseBlock];
}

}  // namespace sepal

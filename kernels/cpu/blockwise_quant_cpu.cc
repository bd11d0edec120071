#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/blockwise_quant.h"
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

inline std::uint8_t nearest_code(const std::array<float, 256>& code, float v) {
  const auto it = std::lower_bound(code.begin(), code.end(), v);
  if (it == code.begin()) return 0;
  if (it == code.end()) return 255;
  const auto hi = static_cast<std::size_t>(it - code.begin());
  return static_cast<std::uint8_t>(v - code[hi - 1] <= code[hi] - v ? hi - 1 : hi);
}

}  // namespace

const std::array<float, 256>& dynamic_code() {
  static const std::array<float, 256> code = make_dynamic_code();
  return code;
}

void quantize_blockwise(const float* x, std::int64_t n, std::uint8_t* codes, float* absmax) {
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
    for (std::int64_t i = begin; i < end; ++i) codes[i] = nearest_code(code, x[i] / amax);
  }
}

void dequantize_blockwise(const std::uint8_t* codes, const float* absmax, std::int64_t n, float* out) {
  const auto& code = dynamic_code();
  for (std::int64_t i = 0; i < n; ++i) out[i] = code[codes[i]] * absmax[i / kBlockwiseBlock];
}

}  // namespace sepal

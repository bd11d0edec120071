#include <cmath>

#include "kernels/cpu/i8_activations.h"
#include "kernels/error.h"
#include "kernels/quantize.h"

namespace sepal {

float quantize_row_i8(const float* v, std::int64_t n, std::int8_t* q) {
  return quantize_row_i8(v, n, q, active_cpu_isa());
}

float quantize_row_i8(const float* v, std::int64_t n, std::int8_t* q, CpuIsa isa) {
  if (isa >= CpuIsa::kAvx512 && cpu_supports(CpuIsa::kAvx512)) {
    const float scale = cpu::quantize_inliers_avx512(v, n, /*is_outlier=*/nullptr, q, /*qsum=*/nullptr);
    if (!std::isfinite(scale)) fail("cannot quantize a row that holds NaN or infinity");
    return scale;
  }
  float absmax = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(v[i]);
    if (!(a <= absmax)) absmax = a;  // NaN too, so that the check below sees it
  }
  if (!std::isfinite(absmax)) fail("cannot quantize a row that holds NaN or infinity");
  if (absmax == 0.0f) {
    for (std::int64_t i = 0; i < n; ++i) q[i] = 0;
    return 0.0f;
  }
  // Adding and taking off 1.5 * 2^23 rounds to nearest even, as nearbyint does in the default
  // rounding mode, without a library call per element (|v[i] * inverse| <= 127 here).
  const float inverse = 127.0f / absmax;
  constexpr float kRound = 12582912.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    const float scaled = v[i] * inverse;
    q[i] = static_cast<std::int8_t>(static_cast<int>((scaled + kRound) - kRound));
  }
  return absmax / 127.0f;
}

void dequantize_row_i8(const std::int8_t* q, std::int64_t n, float scale, float* out) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale;
}

std::string check_quantized_scales(const std::string& what, std::int64_t rows, const float* scales,
                                   std::int64_t scale_count) {
  if (scale_count != rows) {
    return detail::concat(what, " has ", scale_count, " scales for ", rows, " rows");
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!std::isfinite(scales[r])) return detail::concat(what, ": scale of row ", r, " is not finite");
    if (scales[r] < 0) return detail::concat(what, ": scale of row ", r, " is negative");
  }
  return {};
}

}  // namespace sepal

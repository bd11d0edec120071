#include "kernels/cpu/gemv_i8.h"

namespace sepal::cpu {

void gemv_i8_generic(const I8Activations& x, std::int64_t n, const WeightView& w, std::int64_t r0,
                     std::int64_t r1, std::int64_t ldy, float* y) {
  const auto* data = static_cast<const std::int8_t*>(w.data);
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int8_t* row = data + r * w.cols;
    for (std::int64_t t = 0; t < n; ++t) {
      const std::int8_t* q = x.q + t * x.ldq;
      std::int32_t dot = 0;
      for (std::int64_t k = 0; k < w.cols; ++k) dot += static_cast<std::int32_t>(q[k]) * row[k];
      y[t * ldy + r] = finish_i8_row(x, t, row, w.scales[r], dot);
    }
  }
}

}  // namespace sepal::cpu

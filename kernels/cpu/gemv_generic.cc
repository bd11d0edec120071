#include <cstring>

#include "kernels/cpu/gemv.h"

namespace sepal::cpu {
namespace {

template <typename Load>
void gemv_rows(const float* x, std::int64_t n, std::int64_t cols, std::int64_t r0,
               std::int64_t r1, std::int64_t ldy, float* y, Load load) {
  for (std::int64_t r = r0; r < r1; ++r) {
    for (std::int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * cols;
      // Eight partial sums keep the reduction order close to the vector kernels'.
      float acc[8] = {};
      std::int64_t k = 0;
      for (; k + 8 <= cols; k += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += xt[k + j] * load(r, k + j);
      }
      float sum = 0.f;
      for (; k < cols; ++k) sum += xt[k] * load(r, k);
      for (float a : acc) sum += a;
      y[t * ldy + r] = sum;
    }
  }
}

}  // namespace

void gemv_generic(const float* x, std::int64_t n, const WeightView& w, std::int64_t r0,
                  std::int64_t r1, float* y) {
  const std::int64_t cols = w.cols;
  if (w.dtype == DType::kF32) {
    const float* wf = static_cast<const float*>(w.data);
    gemv_rows(x, n, cols, r0, r1, w.rows, y,
              [&](std::int64_t r, std::int64_t k) { return wf[r * cols + k]; });
  } else {
    const std::uint16_t* wb = static_cast<const std::uint16_t*>(w.data);
    gemv_rows(x, n, cols, r0, r1, w.rows, y,
              [&](std::int64_t r, std::int64_t k) { return bf16_to_f32(wb[r * cols + k]); });
  }
}

}  // namespace sepal::cpu

// matmul_input_grad's tile below AVX-512, in portable loops the compiler vectorizes for the
// machine's level (GCC target_clones).
#include <algorithm>

#include "kernels/cpu/input_grad.h"
#include "kernels/dtype.h"

namespace sepal::cpu {

__attribute__((target_clones("arch=x86-64-v3", "default"))) void input_grad_tile(
    const float* dy, std::int64_t tokens, const WeightView& w, std::int64_t c0, std::int64_t width, float* dx) {
  float acc[kInputGradTokens][kInputGradCols] = {};
  float row[kInputGradCols] = {};
  const std::int64_t rows = w.rows, cols = w.cols;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (w.dtype == DType::kF32) {
      const float* src = static_cast<const float*>(w.data) + r * cols + c0;
      for (std::int64_t c = 0; c < width; ++c) row[c] = src[c];
    } else if (w.dtype == DType::kBF16) {
      const std::uint16_t* src = static_cast<const std::uint16_t*>(w.data) + r * cols + c0;
#pragma omp simd
      for (std::int64_t c = 0; c < width; ++c) row[c] = bf16_to_f32(src[c]);
    } else {
      const std::int8_t* src = static_cast<const std::int8_t*>(w.data) + r * cols + c0;
      const float scale = w.scales[r];
#pragma omp simd
      for (std::int64_t c = 0; c < width; ++c) row[c] = static_cast<float>(src[c]) * scale;
    }
    for (std::int64_t t = 0; t < tokens; ++t) {
      const float a = dy[t * rows + r];
#pragma omp simd
      for (std::int64_t c = 0; c < kInputGradCols; ++c) acc[t][c] += a * row[c];
    }
  }
  for (std::int64_t t = 0; t < tokens; ++t) std::copy(acc[t], acc[t] + width, dx + t * cols + c0);
}

}  // namespace sepal::cpu

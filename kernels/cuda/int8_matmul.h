#pragma once
// LLM.int8() on CUDA: the same product as the CPU's (kernels/matmul.h, the numerical oracle),
// with the int8 part in cuBLASLt (int8 x int8 -> int32) and the outlier part and the scaling in a
// fused epilogue kernel; plus the quantize and dequantize kernels.
//
// The interface takes host pointers so that callers and tests need no CUDA headers; each call
// copies in, runs on the current device's stream, and copies out. Errors throw sepal::Error
// naming the CUDA or cuBLASLt call.
//
// Thread-safety: one Int8Matmul per thread; the functions are thread-safe.

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/matmul.h"

namespace sepal::cuda {

/// True when a CUDA device can be used.
bool device_available();

/// Vector-wise quantization of rows [rows, cols] on the device, as quantize_row_i8 does on the
/// CPU: q gets rows * cols values, scales one per row.
void quantize_rows(const float* x, std::int64_t rows, std::int64_t cols, std::int8_t* q, float* scales);

/// out[r, c] = q[r, c] * scales[r] on the device.
void dequantize_rows(const std::int8_t* q, const float* scales, std::int64_t rows, std::int64_t cols, float* out);

/// An int8 weight held on the device, and the product with it.
class Int8Matmul {
 public:
  /// Uploads an int8 WeightView (data and scales).
  explicit Int8Matmul(const WeightView& w);
  ~Int8Matmul();
  Int8Matmul(const Int8Matmul&) = delete;
  Int8Matmul& operator=(const Int8Matmul&) = delete;

  /// y[n, rows] = x[n, cols] · wᵀ with the outlier decomposition at the weight's threshold.
  void forward(const float* x, std::int64_t n, float* y);

 private:
  struct Device;
  std::unique_ptr<Device> device_;
};

}  // namespace sepal::cuda

#pragma once
// LLM.int8() on device pointers (kernels/cuda/int8_matmul.cu): what Int8Matmul and the CUDA
// backend both run.

#include <cublasLt.h>

#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/matmul.h"

namespace sepal::cuda {

/// Working memory of int8 products, grown as needed; one per thread.
struct Int8Scratch {
  Buffer<float> x_scale;
  Buffer<std::int8_t> xq;
  Buffer<std::int32_t> acc;
  Buffer<int> flags, outlier_cols;
  Buffer<char> workspace;
  std::vector<int> host_flags, outlier_list;
};

/// y[n, w.rows] = x[n, w.cols] · wᵀ with the outlier columns of the whole call (kernels/matmul.h);
/// x, y, w.data and w.scales are device memory; rows and cols divisible by 4 (cuBLASLt's int8).
/// Throws sepal::Error when x holds NaN or infinity.
void int8_product(cublasLtHandle_t lt, Int8Scratch& scratch, const float* x, std::int64_t n, const WeightView& w,
                  float* y);

}  // namespace sepal::cuda

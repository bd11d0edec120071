#pragma once
// What every CUDA source of kernels/cuda/ shares: errors of CUDA and cuBLAS calls as
// sepal::Error naming the call, device memory that frees itself, and launch sizes.

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/error.h"

namespace sepal::cuda {

inline void check(cudaError_t e, const char* call) {
  if (e != cudaSuccess) fail("CUDA ", call, " failed: ", cudaGetErrorString(e));
}
inline void check(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLAS ", call, " failed: status ", static_cast<int>(s));
}
#define SEPAL_CUDA_CHECK(call) ::sepal::cuda::check((call), #call)

/// Device memory of `count` T that grows on demand (its contents are then lost) and frees itself.
template <typename T>
struct Buffer {
  T* p = nullptr;
  std::size_t n = 0;
  Buffer() = default;
  explicit Buffer(std::size_t count) { resize(count); }
  ~Buffer() {
    if (p) cudaFree(p);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void resize(std::size_t count) {
    if (count <= n) return;
    if (p) cudaFree(p);
    p = nullptr;
    n = 0;
    SEPAL_CUDA_CHECK(cudaMalloc(&p, count * sizeof(T)));
    n = count;
  }
};

inline constexpr int kThreads = 256;

/// Blocks of kThreads that cover `items`.
inline unsigned grid(std::int64_t items) { return static_cast<unsigned>((items + kThreads - 1) / kThreads); }

}  // namespace sepal::cuda

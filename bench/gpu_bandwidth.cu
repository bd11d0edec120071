#include "bench/gpu_bandwidth.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/error.h"

namespace sepal::bench {
namespace {

void check(cudaError_t e, const char* call) {
  if (e != cudaSuccess) fail("CUDA ", call, " failed: ", cudaGetErrorString(e));
}

// Every thread sums its float4s (a grid-stride loop) and writes one value, so no load is dead.
__global__ void read_kernel(const float4* data, std::int64_t count, float* sums) {
  float s = 0.0f;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float4 v = data[i];
    s += v.x + v.y + v.z + v.w;
  }
  sums[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

}  // namespace

double gpu_read_bandwidth(int device, std::int64_t bytes, int rounds) {
  check(cudaSetDevice(device), "cudaSetDevice");
  cudaDeviceProp properties{};
  check(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
  const std::int64_t count = bytes / 16;
  const int threads = 256, blocks = properties.multiProcessorCount * 8;
  float4* data = nullptr;
  float* sums = nullptr;
  check(cudaMalloc(&data, count * 16), "cudaMalloc");
  check(cudaMalloc(&sums, static_cast<std::size_t>(blocks) * threads * sizeof(float)), "cudaMalloc");
  check(cudaMemset(data, 0, count * 16), "cudaMemset");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  float best_ms = 1e30f;
  for (int r = 0; r <= rounds; ++r) {  // round 0 warms up
    check(cudaEventRecord(start), "cudaEventRecord");
    read_kernel<<<blocks, threads>>>(data, count, sums);
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (r > 0) best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(sums);
  cudaFree(data);
  return static_cast<double>(count * 16) / (best_ms / 1e3);
}

}  // namespace sepal::bench

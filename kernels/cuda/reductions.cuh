#pragma once
// Sums across a warp and across a thread block, shared by the CUDA kernels of kernels/cuda/.

namespace sepal::cuda {

template <typename T>
__device__ T warp_sum(T v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The sum of v over the block (blockDim.x a multiple of 32), returned to every thread.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T shared[32];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : T(0);
    v = warp_sum(v);
    if (threadIdx.x == 0) shared[0] = v;
  }
  __syncthreads();
  const T result = shared[0];
  __syncthreads();
  return result;
}

}  // namespace sepal::cuda

// The entry point of bin/libsepal_cuda.so, the CUDA backend as a plugin (kernels/cuda_plugin.cc
// loads it). It may throw sepal::Error: plugin and program share the C++ runtime.
#include "kernels/cuda/cuda_backend.h"

extern "C" __attribute__((visibility("default"))) sepal::Backend* sepal_cuda_backend_open(int index) {
  return sepal::cuda::new_cuda_backend(index);
}

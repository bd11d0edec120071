#pragma once
// The CUDA backend's constructor, for the plugin's entry point (plugin_entry.cc) and for tests
// that link the CUDA kernels directly.

#include "kernels/backend.h"

namespace sepal::cuda {

/// A new CUDA backend on GPU `index`, owned by the caller. Throws sepal::Error in one line when
/// the GPU cannot be used.
Backend* new_cuda_backend(int index);

}  // namespace sepal::cuda

// open_cuda_backend in a build without CUDA (SEPAL_CUDA off): the CPU-only build links no CUDA
// library at all, and asking for a GPU says so in one line.
#include "kernels/backend.h"
#include "kernels/error.h"

namespace sepal {

std::unique_ptr<Backend> open_cuda_backend(int index) {
  fail("--device cuda:", index, ": this sepal was built without CUDA (configure with -DSEPAL_CUDA=ON where nvcc is)");
}

}  // namespace sepal

#include "kernels/backend.h"

namespace sepal {

std::unique_ptr<Backend> open_backend(const Device& device) {
  if (device.is_cpu()) return open_cpu_backend();
  return open_cuda_backend(device.index);
}

}  // namespace sepal

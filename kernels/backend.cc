#include "kernels/backend.h"

#include "kernels/error.h"

namespace sepal {

DeviceMatrix Backend::upload_matrix(const WeightView& host) {
  if (!holds(host.dtype)) fail(info().name, " does not hold ", dtype_name(host.dtype), " weights");
  DeviceMatrix matrix{host, nullptr};
  const std::int64_t data_bytes = host.rows * host.cols * static_cast<std::int64_t>(dtype_size(host.dtype));
  const std::int64_t scale_bytes = host.dtype == DType::kI8 ? host.rows * 4 : 0;
  const std::int64_t scale_offset = (data_bytes + 255) / 256 * 256;
  matrix.storage = allocate(scale_offset + scale_bytes);
  auto* base = static_cast<char*>(matrix.storage.get());
  copy_in(base, host.data, data_bytes);
  matrix.view.data = base;
  if (scale_bytes > 0) {
    copy_in(base + scale_offset, host.scales, scale_bytes);
    matrix.view.scales = reinterpret_cast<const float*>(base + scale_offset);
  }
  return matrix;
}

}  // namespace sepal

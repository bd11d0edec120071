#include "runtime/buffer.h"

#include <cstdlib>

namespace sepal {

std::shared_ptr<Buffer> Buffer::allocate(std::size_t size) {
  const std::size_t rounded = (size + kWireAlignment - 1) / kWireAlignment * kWireAlignment;
  void* p = std::aligned_alloc(kWireAlignment, rounded == 0 ? kWireAlignment : rounded);
  if (!p) return nullptr;
  return std::shared_ptr<Buffer>(new Buffer(static_cast<std::byte*>(p), size));
}

Buffer::~Buffer() { std::free(data_); }

}  // namespace sepal

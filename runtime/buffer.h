#pragma once
// Byte buffers that frames are received into, and the read-only segments frames are sent from.
//
// Thread-safety: a Buffer is written by one thread before it is shared, then only read.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace sepal {

/// Alignment of received frames and of tensor data inside them.
inline constexpr std::size_t kWireAlignment = 64;

/// A heap block aligned to kWireAlignment. Blocks of 64 KiB and more are recycled through a
/// process-wide pool (up to 512 MiB cached), so streams of large frames do not fault in fresh pages.
class Buffer {
 public:
  /// Allocates `size` bytes (contents undefined); nullptr when memory is exhausted.
  static std::shared_ptr<Buffer> allocate(std::size_t size);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  Buffer(std::byte* data, std::size_t size) : data_(data), size_(size) {}
  std::byte* data_;
  std::size_t size_;
};

/// A read-only run of bytes to send.
struct ConstSegment {
  const std::byte* data = nullptr;
  std::size_t size = 0;
};

}  // namespace sepal

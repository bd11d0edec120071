#pragma once
// A tensor as messages carry it: element type, shape and raw bytes. The runtime does not
// interpret the values; actors map ElementType to their own types.
//
// Thread-safety: a value; the bytes it points to must not change while it is shared.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace sepal {

/// Element types a tensor on the wire may have. Values are part of the wire format.
enum class ElementType : std::uint8_t { kF32 = 1, kF16 = 2, kBF16 = 3, kI8 = 4, kU8 = 5, kI32 = 6, kI64 = 7 };

/// Bytes per element, or 0 for a value that is not an ElementType.
std::size_t element_size(ElementType type);
/// Name, e.g. "f32".
std::string_view element_type_name(ElementType type);

/// Tensor bytes with their type and shape. `owner` keeps `data` alive: on the send side the
/// encoder references the bytes without copying when an owner is set (and copies them when it is
/// not); on the receive side `data` points into the received frame and `owner` holds the frame.
struct TensorPayload {
  ElementType type = ElementType::kF32;
  std::vector<std::int64_t> shape = {0};  ///< empty by default
  const std::byte* data = nullptr;
  std::size_t bytes = 0;
  std::shared_ptr<const void> owner;

  /// Product of the shape (1 for a scalar).
  std::int64_t elements() const;
  /// Elements as a typed pointer (the caller checks `type`).
  template <typename T>
  const T* as() const { return reinterpret_cast<const T*>(data); }

  /// A payload that owns a copy of `values` with the given shape.
  template <typename T>
  static TensorPayload copy_of(ElementType type, std::vector<std::int64_t> shape, const T* values,
                               std::size_t count);
};

/// Shares `storage` (any shared vector of trivially copyable values) as a payload without copying.
template <typename T>
TensorPayload share_vector(ElementType type, std::vector<std::int64_t> shape,
                           std::shared_ptr<const std::vector<T>> storage) {
  TensorPayload p;
  p.type = type;
  p.shape = std::move(shape);
  p.data = reinterpret_cast<const std::byte*>(storage->data());
  p.bytes = storage->size() * sizeof(T);
  p.owner = std::move(storage);
  return p;
}

template <typename T>
TensorPayload TensorPayload::copy_of(ElementType type, std::vector<std::int64_t> shape,
                                     const T* values, std::size_t count) {
  return share_vector<T>(type, std::move(shape),
                         std::make_shared<const std::vector<T>>(values, values + count));
}

}  // namespace sepal

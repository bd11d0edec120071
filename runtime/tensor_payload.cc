#include "runtime/tensor_payload.h"

namespace sepal {

std::size_t element_size(ElementType type) {
  switch (type) {
    case ElementType::kF32: return 4;
    case ElementType::kF16: return 2;
    case ElementType::kBF16: return 2;
    case ElementType::kI8: return 1;
    case ElementType::kU8: return 1;
    case ElementType::kI32: return 4;
    case ElementType::kI64: return 8;
  }
  return 0;
}

std::string_view element_type_name(ElementType type) {
  switch (type) {
    case ElementType::kF32: return "f32";
    case ElementType::kF16: return "f16";
    case ElementType::kBF16: return "bf16";
    case ElementType::kI8: return "i8";
    case ElementType::kU8: return "u8";
    case ElementType::kI32: return "i32";
    case ElementType::kI64: return "i64";
  }
  return "?";
}

std::int64_t TensorPayload::elements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

}  // namespace sepal

#pragma once
// Element types of weights and activations, and the scalar conversions between them.
// All functions are pure and thread-safe.

#include <bit>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sepal {

/// Element type of a stored tensor.
enum class DType : std::uint8_t {
  kF32,
  kF16,
  kBF16,
  kI8,  ///< LLM.int8() weights: int8 values with one f32 scale per row (kernels/quantize.h)
};

/// Bytes per element.
constexpr std::size_t dtype_size(DType t) { return t == DType::kF32 ? 4 : t == DType::kI8 ? 1 : 2; }

/// Lower-case name as used on the command line ("f32", "f16", "bf16", "int8").
std::string_view dtype_name(DType t);

/// Parses "f32" / "f16" / "bf16" / "int8" (also "float32", "float16", "bfloat16", "i8"); nullopt
/// otherwise.
std::optional<DType> parse_dtype(std::string_view name);

/// bfloat16 bits to float (exact).
inline float bf16_to_f32(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

/// float to bfloat16 bits, rounding to nearest even; NaN stays NaN.
inline std::uint16_t f32_to_bf16(float value) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

/// IEEE binary16 bits to float (exact, subnormals included; a NaN comes out quiet, its payload
/// kept).
float f16_to_f32(std::uint16_t bits);

/// The same for n values stored little-endian at any alignment (F16C from the avx2 level on:
/// the same bits); loading f16 weights.
void f16_to_f32(const void* bits, std::int64_t n, float* out);

/// float to IEEE binary16 bits, rounding to nearest even; overflow gives infinity.
std::uint16_t f32_to_f16(float value);

}  // namespace sepal

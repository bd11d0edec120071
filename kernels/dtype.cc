#include "kernels/dtype.h"

#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstring>

#include "kernels/cpu_isa.h"

namespace sepal {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI8: return "int8";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  if (name == "f32" || name == "float32" || name == "fp32") return DType::kF32;
  if (name == "f16" || name == "float16" || name == "fp16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "int8" || name == "i8") return DType::kI8;
  return std::nullopt;
}

float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) {  // infinity, or NaN made quiet (its top mantissa bit set), as F16C does
    const std::uint32_t quiet = mantissa != 0 ? 0x200u : 0u;
    return std::bit_cast<float>(sign | 0x7f800000u | ((mantissa | quiet) << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

namespace {
std::uint16_t load_u16(const std::byte* p) {  // any alignment
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Eight values an instruction, for the same bits as the scalar loop (which compilers do not
// vectorize): 0.21 against 1.5 ns a value on weights, 2.4 on random bits (AMD EPYC, Zen 5).
__attribute__((target("avx2,f16c"))) void f16_to_f32_f16c(const std::byte* bits, std::int64_t n, float* out) {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bits + 2 * i))));
  }
  for (; i < n; ++i) out[i] = f16_to_f32(load_u16(bits + 2 * i));
}
}  // namespace

void f16_to_f32(const void* bits, std::int64_t n, float* out) {
  const auto* bytes = static_cast<const std::byte*>(bits);
  if (active_cpu_isa() >= CpuIsa::kAvx2) return f16_to_f32_f16c(bytes, n, out);
  for (std::int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(load_u16(bytes + 2 * i));
}

std::uint16_t f32_to_f16(float value) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(value);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;             // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;            // rounds past 65504: infinity
  if (abs < 0x38800000u) {                                   // below 2^-14: subnormal or zero
    const float magnitude = std::bit_cast<float>(abs);
    const long q = std::lrint(std::ldexp(magnitude, 24));   // round to nearest even
    return sign | static_cast<std::uint16_t>(q);
  }
  std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return sign | static_cast<std::uint16_t>((rounded - (112u << 23)) >> 13);
}

}  // namespace sepal

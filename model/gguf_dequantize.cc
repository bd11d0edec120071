#include "model/gguf_dequantize.h"

#include <cmath>
#include <cstring>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "model/gguf.h"
#include "model/mxfp4.h"

namespace sepal {
namespace {

constexpr int kQK = 32;    // values per block of the simple formats
constexpr int kQKK = 256;  // values per K-quant super-block

std::uint16_t u16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
float half(const std::uint8_t* p) { return f16_to_f32(u16(p)); }

// Q4_0: d (f16), 16 bytes of 4-bit codes; value = (code - 8) * d. Low nibbles are values
// 0..15, high nibbles 16..31.
void q4_0(const std::uint8_t* b, float* y) {
  const float d = half(b);
  const std::uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}
// MXFP4 (GPT-OSS's experts): an E8M0 scale byte e, then 16 bytes of FP4 (E2M1) codes; value =
// fp4(code) * 2^(e - 127). Low nibbles are values 0..15, high nibbles 16..31, as Q4_0's.
void mxfp4(const std::uint8_t* b, float* y) {
  const int exponent = static_cast<int>(b[0]) - 127;
  const std::uint8_t* qs = b + 1;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = std::ldexp(fp4_value(qs[j] & 0x0F), exponent);
    y[j + kQK / 2] = std::ldexp(fp4_value(qs[j] >> 4), exponent);
  }
}
// IQ4_NL and IQ4_XS: 4-bit codes that index a fixed table of 16 levels, spaced more closely
// near zero (the format's own constants, ggml's kvalues_iq4nl).
constexpr std::int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
// 32 values from 16 bytes of codes at scale d: low nibbles are values 0..15, high 16..31.
void iq4_values(const std::uint8_t* qs, float d, float* y) {
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(kIq4Levels[qs[j] & 0x0F]);
    y[j + kQK / 2] = d * static_cast<float>(kIq4Levels[qs[j] >> 4]);
  }
}
// IQ4_NL: d (f16), 16 bytes of codes; value = d * level(code).
void iq4_nl(const std::uint8_t* b, float* y) { iq4_values(b + 2, half(b), y); }
// IQ4_XS: d (f16), the 6-bit scales of the 8 groups of 32 (high 2 bits: u16, bits 2g; low 4 bits:
// 4 bytes, group g in byte g / 2, low nibble for even g), then 128 bytes of codes, 16 a group.
// Value = d * (scale - 32) * level(code).
void iq4_xs(const std::uint8_t* b, float* y) {
  const float d = half(b);
  const std::uint16_t high = u16(b + 2);
  const std::uint8_t* low = b + 4;
  const std::uint8_t* qs = b + 8;
  for (int g = 0; g < kQKK / kQK; ++g) {
    const int scale = ((low[g / 2] >> (4 * (g % 2))) & 0x0F) | (((high >> (2 * g)) & 3) << 4);
    iq4_values(qs + 16 * g, d * static_cast<float>(scale - 32), y + kQK * g);
  }
}
// Q4_1: d, m (f16), 16 bytes of codes; value = code * d + m.
void q4_1(const std::uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  const std::uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
    y[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}
// Q5_0: d, 32 high bits (u32, bit j for value j), 16 bytes of low nibbles; value = (code - 16) * d.
void q5_0(const std::uint8_t* b, float* y) {
  const float d = half(b);
  std::uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const std::uint8_t* qs = b + 6;
  for (int j = 0; j < kQK / 2; ++j) {
    const int high0 = static_cast<int>((qh >> j) & 1) << 4, high1 = static_cast<int>((qh >> (j + 16)) & 1) << 4;
    y[j] = static_cast<float>(((qs[j] & 0x0F) | high0) - 16) * d;
    y[j + kQK / 2] = static_cast<float>(((qs[j] >> 4) | high1) - 16) * d;
  }
}
// Q5_1: d, m, 32 high bits, 16 bytes of low nibbles; value = code * d + m.
void q5_1(const std::uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  std::uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const std::uint8_t* qs = b + 8;
  for (int j = 0; j < kQK / 2; ++j) {
    const int high0 = static_cast<int>((qh >> j) & 1) << 4, high1 = static_cast<int>((qh >> (j + 16)) & 1) << 4;
    y[j] = static_cast<float>((qs[j] & 0x0F) | high0) * d + m;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) | high1) * d + m;
  }
}
// Q8_0: d, 32 signed bytes; value = code * d.
void q8_0(const std::uint8_t* b, float* y) {
  const float d = half(b);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(static_cast<std::int8_t>(b[2 + j])) * d;
}

// Q2_K: 16 bytes of 4-bit scale and min pairs, 64 bytes of 2-bit codes, d, dmin (f16). Each of
// the 16 groups of 16 values: d * scale * code - dmin * min.
void q2_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* scales = b;
  const std::uint8_t* q = b + 16;
  const float d = half(b + 80), dmin = half(b + 82);
  int group = 0;
  for (int half_block = 0; half_block < 2; ++half_block, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part, ++group) {
        const float scale = d * static_cast<float>(scales[group] & 0x0F), min = dmin * static_cast<float>(scales[group] >> 4);
        for (int l = 0; l < 16; ++l) *y++ = scale * static_cast<float>((q[l + 16 * part] >> shift) & 3) - min;
      }
    }
  }
}
// Q3_K: 32 bytes of high bits (bit k of byte l for value 32k + l of each 128), 64 bytes of 2-bit
// codes, 12 bytes packing 16 6-bit scales, d. Value = d * (scale - 32) * (code - (high ? 0 : 4)).
void q3_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* hmask = b;
  const std::uint8_t* q = b + 32;
  const std::uint8_t* packed = b + 96;
  const float d = half(b + 108);
  int scales[16];
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? (packed[i] & 0x0F) : (packed[i - 8] >> 4);
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = (low | (high << 4)) - 32;
  }
  int group = 0;
  std::uint8_t bit = 1;
  for (int half_block = 0; half_block < 2; ++half_block, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, bit = static_cast<std::uint8_t>(bit << 1)) {
      for (int part = 0; part < 2; ++part, ++group) {
        const float scale = d * static_cast<float>(scales[group]);
        for (int l = 0; l < 16; ++l) {
          const int k = l + 16 * part;
          const int code = ((q[k] >> shift) & 3) - ((hmask[k] & bit) ? 0 : 4);
          *y++ = scale * static_cast<float>(code);
        }
      }
    }
  }
}
// The 6-bit scale and min of group j (0..7) packed in 12 bytes (Q4_K, Q5_K).
void scale_min_k4(int j, const std::uint8_t* q, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
// Q4_K: d, dmin, 12 bytes of scales and mins, 128 bytes of 4-bit codes; 8 groups of 32 values:
// d * scale * code - dmin * min.
void q4_k(const std::uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  const std::uint8_t* packed = b + 4;
  const std::uint8_t* q = b + 16;
  for (int pair = 0; pair < 4; ++pair, q += 32) {
    int s0, m0, s1, m1;
    scale_min_k4(2 * pair, packed, &s0, &m0);
    scale_min_k4(2 * pair + 1, packed, &s1, &m1);
    for (int l = 0; l < 32; ++l) *y++ = d * static_cast<float>(s0) * static_cast<float>(q[l] & 0x0F) - dmin * static_cast<float>(m0);
    for (int l = 0; l < 32; ++l) *y++ = d * static_cast<float>(s1) * static_cast<float>(q[l] >> 4) - dmin * static_cast<float>(m1);
  }
}
// Q5_K: as Q4_K with a fifth bit per value from 32 bytes of high bits.
void q5_k(const std::uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  const std::uint8_t* packed = b + 4;
  const std::uint8_t* qh = b + 16;
  const std::uint8_t* q = b + 48;
  for (int pair = 0; pair < 4; ++pair, q += 32) {
    int s0, m0, s1, m1;
    scale_min_k4(2 * pair, packed, &s0, &m0);
    scale_min_k4(2 * pair + 1, packed, &s1, &m1);
    const std::uint8_t bit0 = static_cast<std::uint8_t>(1u << (2 * pair)), bit1 = static_cast<std::uint8_t>(2u << (2 * pair));
    for (int l = 0; l < 32; ++l) {
      const int code = (q[l] & 0x0F) + ((qh[l] & bit0) ? 16 : 0);
      *y++ = d * static_cast<float>(s0) * static_cast<float>(code) - dmin * static_cast<float>(m0);
    }
    for (int l = 0; l < 32; ++l) {
      const int code = (q[l] >> 4) + ((qh[l] & bit1) ? 16 : 0);
      *y++ = d * static_cast<float>(s1) * static_cast<float>(code) - dmin * static_cast<float>(m1);
    }
  }
}
// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 signed 8-bit scales, d.
// Value = d * scale * (code - 32), 16 values a scale.
void q6_k(const std::uint8_t* b, float* y) {
  const std::uint8_t* ql = b;
  const std::uint8_t* qh = b + 128;
  const auto* scales = reinterpret_cast<const std::int8_t*>(b + 192);
  const float d = half(b + 208);
  for (int half_block = 0; half_block < 2; ++half_block, y += 128, ql += 64, qh += 32, scales += 8) {
    for (int l = 0; l < 32; ++l) {
      const int s = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(scales[s]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(scales[s + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(scales[s + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(scales[s + 6]) * static_cast<float>(q4);
    }
  }
}

}  // namespace

void dequantize_ggml(std::uint32_t type, const std::byte* data, std::int64_t n, float* out) {
  std::int64_t block_values = 0, block_bytes = 0;
  if (!ggml_block_layout(type, &block_values, &block_bytes)) fail("ggml type ", ggml_type_name(type), " is not supported");
  SEPAL_CHECK(n % block_values == 0, "a count of ", n, " values is not whole blocks of ", block_values);
  const auto* b = reinterpret_cast<const std::uint8_t*>(data);
  using Block = void (*)(const std::uint8_t*, float*);
  Block block = nullptr;
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: std::memcpy(out, data, static_cast<std::size_t>(n) * 4); return;
    case GgmlType::kF16:
      f16_to_f32(data, n, out);
      return;
    case GgmlType::kBF16:
      for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(u16(b + 2 * i));
      return;
    case GgmlType::kQ4_0: block = q4_0; break;
    case GgmlType::kQ4_1: block = q4_1; break;
    case GgmlType::kQ5_0: block = q5_0; break;
    case GgmlType::kQ5_1: block = q5_1; break;
    case GgmlType::kQ8_0: block = q8_0; break;
    case GgmlType::kQ2_K: block = q2_k; break;
    case GgmlType::kQ3_K: block = q3_k; break;
    case GgmlType::kQ4_K: block = q4_k; break;
    case GgmlType::kQ5_K: block = q5_k; break;
    case GgmlType::kQ6_K: block = q6_k; break;
    case GgmlType::kIq4_Nl: block = iq4_nl; break;
    case GgmlType::kIq4_Xs: block = iq4_xs; break;
    case GgmlType::kMxfp4: block = mxfp4; break;
  }
  for (std::int64_t i = 0; i < n / block_values; ++i) block(b + i * block_bytes, out + i * block_values);
}

}  // namespace sepal

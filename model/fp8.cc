#include "model/fp8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/parallel.h"

namespace sepal {
namespace {

const std::string kBlockScales = "_scale_inv", kScales = "_scale";

// A scale tensor's element i as f32.
float scale_at(const TensorRef& scales, std::int64_t i) {
  std::uint16_t h;
  switch (scales.dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, scales.data + i * 4, 4);
      return f;
    }
    case DType::kBF16: std::memcpy(&h, scales.data + i * 2, 2); return bf16_to_f32(h);
    case DType::kF16: std::memcpy(&h, scales.data + i * 2, 2); return f16_to_f32(h);
    default: return std::numeric_limits<float>::quiet_NaN();
  }
}

}  // namespace

std::array<std::int64_t, 2> fp8_weight_block_size(const nlohmann::json& q, const std::string& where) {
  if (!q.is_object() || !q.contains("weight_block_size") || q["weight_block_size"].is_null()) return {128, 128};
  const nlohmann::json& b = q["weight_block_size"];
  const auto whole = [](const nlohmann::json& v) {
    return v.is_number_integer() && v.get<std::int64_t>() >= 1 && v.get<std::int64_t>() <= 65536;
  };
  if (!b.is_array() || b.size() != 2 || !whole(b[0]) || !whole(b[1])) {
    fail(where, ": quantization_config weight_block_size must be two whole numbers from 1 to 65536, not ", b.dump());
  }
  return {b[0].get<std::int64_t>(), b[1].get<std::int64_t>()};
}

float fp8_e4m3_value(std::uint8_t code) {
  const int exponent = (code >> 3) & 15, mantissa = code & 7;
  if (exponent == 15 && mantissa == 7) return std::numeric_limits<float>::quiet_NaN();
  const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)  // subnormal: m / 8 · 2^-6
                                        : std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  return (code & 0x80) ? -magnitude : magnitude;
}

void unpack_fp8_tensors(std::map<std::string, TensorRef>& tensors,
                        std::map<std::string, Checkpoint::Conversion>& conversions,
                        std::array<std::int64_t, 2> block_size, const std::string& where) {
  std::vector<std::string> names;
  for (const auto& [name, ref] : tensors) {
    if (ref.float8) names.push_back(name);
    else if (name.ends_with(kBlockScales) && !tensors.count(name.substr(0, name.size() - kBlockScales.size()))) {
      fail(where, ": tensor '", name, "' (FP8 scales) has no ", name.substr(0, name.size() - kBlockScales.size()));
    }
  }
  for (const std::string& name : names) {
    const TensorRef weight = tensors.at(name);
    if (weight.shape.size() != 2) fail(where, ": FP8 tensor '", name, "' ", weight.shape_string(), " is not a matrix");
    const std::int64_t rows = weight.shape[0], cols = weight.shape[1];
    // Block-wise scales (X_scale_inv), or compressed-tensors' (X_scale): a row's, or the tensor's.
    const bool blocks = tensors.count(name + kBlockScales) > 0;
    const std::string scale_name = name + (blocks ? kBlockScales : kScales);
    const auto scales_it = tensors.find(scale_name);
    if (scales_it == tensors.end()) {
      fail(where, ": tensor '", name, "' (F8_E4M3) has no ", name, kBlockScales, " (scales of blocks) or ", name, kScales,
           " (of rows, or of the tensor)");
    }
    const TensorRef scales = scales_it->second;
    if (scales.float8 || (scales.dtype != DType::kF32 && scales.dtype != DType::kBF16 && scales.dtype != DType::kF16)) {
      fail(where, ": FP8 scales '", scale_name, "' must be F32, BF16 or F16");
    }
    std::int64_t bh = block_size[0], bw = block_size[1];
    if (!blocks) {
      if (scales.shape == std::vector<std::int64_t>{rows, 1}) bh = 1, bw = cols;
      else if (scales.elements() == 1 && scales.shape.size() <= 2) bh = rows, bw = cols;
      else {
        fail(where, ": FP8 scales '", scale_name, "' ", scales.shape_string(), " are neither one a row of '", name, "' ",
             weight.shape_string(), " ([", rows, ", 1]) nor one for the tensor");
      }
    }
    const std::int64_t block_rows = (rows + bh - 1) / bh, block_cols = (cols + bw - 1) / bw;
    if (blocks && scales.shape != std::vector<std::int64_t>{block_rows, block_cols}) {
      fail(where, ": FP8 scales '", scale_name, "' ", scales.shape_string(), " do not cover '", name, "' ",
           weight.shape_string(), " in blocks of ", bh, " x ", bw, " (expected [", block_rows, ", ", block_cols, "])");
    }
    TensorRef out;
    out.name = name;
    out.dtype = DType::kF32;
    out.shape = {rows, cols};
    out.bytes = static_cast<std::size_t>(rows * cols) * 4;
    tensors.erase(scale_name);
    tensors[name] = out;
    conversions[name] = [weight, scales, rows, cols, bh, bw, block_cols, where](TensorRef& t) {
      std::array<float, 256> table;
      for (int code = 0; code < 256; ++code) table[static_cast<std::size_t>(code)] = fp8_e4m3_value(static_cast<std::uint8_t>(code));
      auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(rows * cols));
      const auto* codes = reinterpret_cast<const std::uint8_t*>(weight.data);
      parallel_for(rows, [&](std::int64_t r) {
        const std::uint8_t* row = codes + r * cols;
        float* out = values->data() + r * cols;
        for (std::int64_t c0 = 0; c0 < cols; c0 += bw) {  // a block's columns share a scale
          const float scale = scale_at(scales, (r / bh) * block_cols + c0 / bw);
          for (std::int64_t c = c0; c < std::min(cols, c0 + bw); ++c) out[c] = table[row[c]] * scale;
        }
      });
      for (const float v : *values) {
        if (!std::isfinite(v)) fail(where, ": FP8 tensor '", weight.name, "' holds a NaN or an infinity (its scale's)");
      }
      t.data = reinterpret_cast<const std::byte*>(values->data());
      t.storage = values;
      t.mapped = false;
    };
  }
}

}  // namespace sepal

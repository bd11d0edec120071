#include "model/mxfp4.h"

#include <cmath>
#include <memory>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/parallel.h"

namespace sepal {
namespace {

constexpr std::int64_t kGroup = 32;  // values per scale
const std::string kBlocks = "_blocks", kScales = "_scales";

}  // namespace

float fp4_value(std::uint8_t nibble) {
  static constexpr float kMagnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMagnitudes[nibble & 7];
  return (nibble & 8) ? -m : m;
}

void unpack_mxfp4_tensors(std::map<std::string, TensorRef>& tensors,
                          std::map<std::string, Checkpoint::Conversion>& conversions, const std::string& where) {
  std::vector<std::string> names;
  for (const auto& [name, ref] : tensors) {
    if (name.ends_with(kBlocks)) names.push_back(name.substr(0, name.size() - kBlocks.size()));
    else if (name.ends_with(kScales) && !tensors.count(name.substr(0, name.size() - kScales.size()) + kBlocks) &&
             ref.dtype == DType::kI8) {
      fail(where, ": tensor '", name, "' (MXFP4 scales) has no ", name.substr(0, name.size() - kScales.size()), kBlocks);
    }
  }
  for (const std::string& base : names) {
    const TensorRef blocks = tensors.at(base + kBlocks);
    const auto scales_it = tensors.find(base + kScales);
    if (scales_it == tensors.end()) fail(where, ": tensor '", base, kBlocks, "' (MXFP4) has no ", base, kScales);
    const TensorRef scales = scales_it->second;
    if (blocks.dtype != DType::kI8 || scales.dtype != DType::kI8) {
      fail(where, ": MXFP4 tensors '", base, kBlocks, "' and '", base, kScales, "' must be U8");
    }
    // blocks [experts, rows, G, 16], scales [experts, rows, G]
    if (blocks.shape.size() != 4 || blocks.shape[3] != kGroup / 2 || scales.shape.size() != 3 ||
        scales.shape[0] != blocks.shape[0] || scales.shape[1] != blocks.shape[1] || scales.shape[2] != blocks.shape[2]) {
      fail(where, ": MXFP4 tensors '", base, kBlocks, "' ", blocks.shape_string(), " and '", base, kScales, "' ",
           scales.shape_string(), " must be [experts, rows, groups, 16] and [experts, rows, groups]");
    }
    if (tensors.count(base)) fail(where, ": tensor '", base, "' is stored both whole and as MXFP4 blocks");
    const std::int64_t experts = blocks.shape[0], rows = blocks.shape[1], cols = blocks.shape[2] * kGroup;
    TensorRef out;
    out.name = base;
    out.dtype = DType::kBF16;
    out.shape = {experts, cols, rows};
    out.bytes = static_cast<std::size_t>(experts * cols * rows) * 2;
    tensors.erase(base + kBlocks);
    tensors.erase(base + kScales);
    tensors.emplace(base, out);
    conversions[base] = [blocks, scales, experts, rows, cols](TensorRef& t) {
      auto values = std::make_shared<std::vector<std::uint16_t>>(static_cast<std::size_t>(experts * cols * rows));
      const auto* codes = reinterpret_cast<const std::uint8_t*>(blocks.data);
      const auto* exponents = reinterpret_cast<const std::uint8_t*>(scales.data);
      parallel_for(experts * rows, [&](std::int64_t er) {
        const std::int64_t e = er / rows, r = er % rows;
        for (std::int64_t c = 0; c < cols; ++c) {
          const std::uint8_t byte = codes[er * (cols / 2) + c / 2];
          const float value = std::ldexp(fp4_value(c % 2 == 0 ? byte & 0x0F : byte >> 4),
                                         static_cast<int>(exponents[er * (cols / kGroup) + c / kGroup]) - 127);
          (*values)[static_cast<std::size_t>((e * cols + c) * rows + r)] = f32_to_bf16(value);
        }
      });
      t.data = reinterpret_cast<const std::byte*>(values->data());
      t.storage = values;
      t.mapped = false;
    };
  }
}

}  // namespace sepal

#include "model/int8_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/error.h"
#include "kernels/quantize.h"
#include "model/weight_holding.h"

namespace sepal {
namespace {

const char* safetensors_name(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI8: return "I8";
  }
  return "?";
}

std::string scales_name(const std::string& name) {
  return name.ends_with(".weight") ? name.substr(0, name.size() - 7) + ".SCB" : name + ".SCB";
}

}  // namespace

std::vector<TensorToWrite> quantize_checkpoint_tensors(const Checkpoint& checkpoint,
                                                       const std::function<void(double)>& progress) {
  std::vector<TensorToWrite> out;
  std::size_t done = 0;
  for (const auto& [name, listed] : checkpoint.tensors()) {
    const TensorRef& t = checkpoint.get(name);  // its values (a GGUF file converts them when asked)
    // Matrices, and stacks of them (Granite-MoE's experts, [experts, rows, cols]: rows of every
    // matrix quantized alike, their scales [experts, rows]). A norm's weights stay as they are,
    // matrices too (Cohere's q and k norms, [heads, head_dim]).
    const bool norm = name.ends_with("norm.weight");
    if ((t.shape.size() == 2 || t.shape.size() == 3) && t.dtype != DType::kI8 && !norm) {
      const std::int64_t cols = t.shape.back(), rows = t.elements() / cols;
      TensorToWrite q{name, "I8", t.shape, std::vector<std::byte>(static_cast<std::size_t>(rows * cols))};
      TensorToWrite scb{scales_name(name), "F32", std::vector<std::int64_t>(t.shape.begin(), t.shape.end() - 1),
                        std::vector<std::byte>(static_cast<std::size_t>(rows * 4))};
      std::vector<float> row(static_cast<std::size_t>(cols));
      for (std::int64_t r = 0; r < rows; ++r) {
        elements_as_f32(t, r * cols, cols, row.data());
        float scale = 0;
        try {
          scale = quantize_row_i8(row.data(), cols, reinterpret_cast<std::int8_t*>(q.bytes.data()) + r * cols);
        } catch (const Error&) {
          fail("tensor '", name, "' row ", r, " holds NaN or infinity");
        }
        const float absmax = scale * 127.0f;
        std::memcpy(scb.bytes.data() + r * 4, &absmax, 4);
      }
      out.push_back(std::move(q));
      out.push_back(std::move(scb));
    } else {
      out.push_back(TensorToWrite{name, safetensors_name(t.dtype), t.shape, std::vector<std::byte>(t.data, t.data + t.bytes)});
    }
    if (progress) progress(static_cast<double>(++done) / static_cast<double>(checkpoint.tensors().size()));
  }
  return out;
}

void fold_peqa_scales(const ModelConfig& config, const BlockAdapters& adapters, std::vector<TensorToWrite>& tensors) {
  if (adapters.shape.method != AdapterMethod::kPeqa) fail("only PEQA adapters fold into int8 scales");
  auto named = [&](const std::string& n) {
    return std::find_if(tensors.begin(), tensors.end(), [&](const TensorToWrite& t) { return t.name == n; });
  };
  // The rows of projection p (expert `copy`'s in a sparse block) in its module's scales (BLOOM's
  // q, k and v share query_key_value's); BLOOM's published checkpoints name their tensors without
  // "transformer.".
  auto fold = [&](std::int64_t b, Projection p, std::int64_t copy) {
    const ProjectionModule module = projection_module(config, b, p, copy);
    std::string name = scales_name(module.path + ".weight");
    auto it = named(name);
    if (it == tensors.end() && name.starts_with("transformer.")) it = named(name = name.substr(12));
    if (it == tensors.end() || it->dtype != "F32") fail("the int8 checkpoint has no F32 scales '", name, "'");
    const auto rows = static_cast<std::int64_t>(it->bytes.size() / 4);
    if (rows != module.rows) fail("scales '", name, "' hold ", rows, " rows");
    const float* m = adapters.of(config, b, p, copy)->values;
    for (std::int64_t i = 0; i < projection_shape(config, p, b, copy).first; ++i) {
      const std::int64_t r = module.module_row(i);
      float absmax;
      std::memcpy(&absmax, it->bytes.data() + r * 4, 4);
      absmax *= 1.0f + m[i];
      if (!(absmax >= 0) || !std::isfinite(absmax)) fail("the tuned scale of row ", r, " of '", name, "' is ", absmax, " (not a scale int8 checkpoints can hold)");
      std::memcpy(it->bytes.data() + r * 4, &absmax, 4);
    }
  };
  for (std::int64_t b = adapters.first; b < adapters.first + adapters.blocks; ++b) {
    for (const Projection p : adapters.shape.targets) {
      for (std::int64_t copy = 0; copy < projection_copies(config, p, b); ++copy) fold(b, p, copy);
    }
  }
}

}  // namespace sepal

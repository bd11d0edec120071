#include "model/bnb4.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/parallel.h"

namespace sepal {
namespace {

using json = nlohmann::json;

const std::string kStateNf4 = ".quant_state.bitsandbytes__nf4", kStateFp4 = ".quant_state.bitsandbytes__fp4";

// The settings of one weight's quant_state JSON.
struct QuantState {
  std::int64_t out = 0, in = 0, blocksize = 0, nested_blocksize = 0;
  DType dtype = DType::kF32;
  bool nested = false;
  float nested_offset = 0;
};

std::int64_t whole(const json& value, const std::string& what, std::int64_t top) {
  if (!value.is_number_integer() || value.get<std::int64_t>() < 1 || value.get<std::int64_t>() > top) {
    fail(what, " must be a whole number from 1 to ", top, ", not ", value.dump());
  }
  return value.get<std::int64_t>();
}

QuantState read_state(const TensorRef& blob, const std::string& what) {
  json j;
  try {
    j = json::parse(std::string(reinterpret_cast<const char*>(blob.data), blob.bytes));
  } catch (const json::exception& e) {
    fail(what, " is not JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(what, " is not a JSON object");
  QuantState s;
  const json shape = j.value("shape", json());
  if (!shape.is_array() || shape.size() != 2) fail(what, " shape must be [rows, columns], not ", shape.dump());
  s.out = whole(shape[0], what + " shape", std::int64_t{1} << 31);
  s.in = whole(shape[1], what + " shape", std::int64_t{1} << 31);
  s.blocksize = whole(j.value("blocksize", json()), what + " blocksize", 1 << 20);
  const std::string dtype = j.value("dtype", json()).is_string() ? j["dtype"].get<std::string>() : "";
  if (dtype == "bfloat16") s.dtype = DType::kBF16;
  else if (dtype == "float16") s.dtype = DType::kF16;
  else if (dtype != "float32") fail(what, " dtype must be bfloat16, float16 or float32, not '", dtype, "'");
  if (j.contains("nested_blocksize")) {
    s.nested = true;
    s.nested_blocksize = whole(j["nested_blocksize"], what + " nested_blocksize", 1 << 20);
    if (!j.value("nested_offset", json()).is_number()) fail(what, " has no nested_offset");
    s.nested_offset = j["nested_offset"].get<float>();
    if (!std::isfinite(s.nested_offset)) fail(what, " nested_offset is not finite");
  }
  return s;
}

float f32_at(const TensorRef& t, std::int64_t i) {
  float v;
  std::memcpy(&v, t.data + i * 4, 4);
  return v;
}

}  // namespace

void unpack_bnb4_tensors(std::map<std::string, TensorRef>& tensors, std::map<std::string, Checkpoint::Conversion>& conversions,
                         const std::string& where) {
  std::vector<std::string> states;
  for (const auto& entry : tensors) {
    if (entry.first.ends_with(kStateNf4) || entry.first.ends_with(kStateFp4)) states.push_back(entry.first);
  }
  for (const std::string& state_name : states) {
    const std::string name = state_name.substr(0, state_name.size() - kStateNf4.size());  // X.weight
    const TensorRef blob = tensors.at(state_name);
    const QuantState s = read_state(blob, where + ": '" + state_name + "'");
    const auto part = [&](const std::string& suffix) {
      const auto it = tensors.find(name + suffix);
      if (it == tensors.end()) fail(where, ": 4-bit weight '", name, "' has no ", name, suffix);
      return it->second;
    };
    const auto expect = [&](const TensorRef& t, bool bytes, std::int64_t count) {
      const bool right_type = bytes ? t.int_words == 1 : (t.int_words == 0 && !t.float8 && t.dtype == DType::kF32);
      if (!right_type || t.elements() != count) {
        fail(where, ": '", t.name, "' ", t.shape_string(), " must hold ", count, bytes ? " bytes (U8)" : " F32 values",
             " for '", name, "' [", s.out, ", ", s.in, "] in blocks of ", s.blocksize);
      }
    };
    const TensorRef codes = part(""), map = part(".quant_map"), absmax = part(".absmax");
    const std::int64_t n = s.out * s.in, blocks = (n + s.blocksize - 1) / s.blocksize;
    expect(codes, true, (n + 1) / 2);
    expect(map, false, 16);
    expect(absmax, s.nested, blocks);
    TensorRef nested_map, nested_absmax;
    std::vector<std::string> parts = {state_name, name + ".quant_map", name + ".absmax"};
    if (s.nested) {
      nested_map = part(".nested_quant_map");
      nested_absmax = part(".nested_absmax");
      expect(nested_map, false, 256);
      expect(nested_absmax, false, (blocks + s.nested_blocksize - 1) / s.nested_blocksize);
      parts.push_back(name + ".nested_quant_map");
      parts.push_back(name + ".nested_absmax");
    }
    for (const std::string& p : parts) tensors.erase(p);
    TensorRef out;
    out.name = name;
    out.dtype = DType::kF32;
    out.shape = {s.out, s.in};
    out.bytes = static_cast<std::size_t>(n) * 4;
    tensors[name] = out;
    conversions[name] = [s, codes, map, absmax, nested_map, nested_absmax, n, blocks, where](TensorRef& t) {
      float code_value[16];
      for (int c = 0; c < 16; ++c) code_value[c] = f32_at(map, c);
      std::vector<float> scales(static_cast<std::size_t>(blocks));  // each block's, double quantization undone
      for (std::int64_t b = 0; b < blocks; ++b) {
        scales[static_cast<std::size_t>(b)] =
            s.nested ? f32_at(nested_map, static_cast<std::uint8_t>(absmax.data[b])) * f32_at(nested_absmax, b / s.nested_blocksize) +
                           s.nested_offset
                     : f32_at(absmax, b);
      }
      for (const float v : scales) {
        if (!std::isfinite(v)) fail(where, ": the block scales of 4-bit weight '", t.name, "' hold a NaN or an infinity");
      }
      for (const float v : code_value) {
        if (!std::isfinite(v)) fail(where, ": '", map.name, "' holds a NaN or an infinity");
      }
      const auto rounded = [&](float v) {
        return s.dtype == DType::kBF16 ? bf16_to_f32(f32_to_bf16(v)) : s.dtype == DType::kF16 ? f16_to_f32(f32_to_f16(v)) : v;
      };
      auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(n));
      const auto* bytes = reinterpret_cast<const std::uint8_t*>(codes.data);
      parallel_for(s.out, [&](std::int64_t o) {
        for (std::int64_t i = o * s.in; i < (o + 1) * s.in; ++i) {
          const std::uint8_t byte = bytes[i / 2];
          const int code = i % 2 == 0 ? byte >> 4 : byte & 15;
          (*values)[static_cast<std::size_t>(i)] = rounded(code_value[code] * scales[static_cast<std::size_t>(i / s.blocksize)]);
        }
      });
      t.data = reinterpret_cast<const std::byte*>(values->data());
      t.storage = values;
      t.mapped = false;
    };
  }
}

}  // namespace sepal

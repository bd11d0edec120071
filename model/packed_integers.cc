#include "model/packed_integers.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/weight_holding.h"

namespace sepal {
namespace {

using json = nlohmann::json;

json member(const json& object, const char* key) { return object.is_object() && object.contains(key) ? object[key] : json(); }

std::int64_t group_size_of(const json& value, const std::string& what) {
  if (value.is_null()) return 0;
  if (!value.is_number_integer() || value.get<std::int64_t>() == 0 || value.get<std::int64_t>() < -1) {
    fail(what, " group_size must be a whole number above 0, or -1 for a row, not ", value.dump());
  }
  return std::max<std::int64_t>(0, value.get<std::int64_t>());
}

int bits_of(const json& value, const std::string& what) {
  if (value == 3) fail(what, " 3-bit weights are not supported (2, 4 and 8 bits are)");
  if (value != 2 && value != 4 && value != 8) fail(what, " bits must be 2, 4 or 8, not ", value.dump());
  return value.get<int>();
}

PackedIntegers compressed_tensors_packing(const json& q, bool packed, const std::string& where) {
  const json groups = member(q, "config_groups");
  if (!groups.is_object() || groups.empty()) fail(where, ": compressed-tensors needs config_groups");
  std::optional<PackedIntegers> packing;
  for (const auto& [group, g] : groups.items()) {
    const json w = member(g, "weights");
    const std::string what = where + ": compressed-tensors group '" + group + "'";
    const std::string format = packed ? "pack-quantized" : "int-quantized";
    if (member(w, "type") != "int") fail(what, " weights must be integers for format ", format, ", not ", w.dump());
    if (member(w, "dynamic") == true) fail(what, " weights must be stored, not quantized on the fly: ", w.dump());
    const json a = member(g, "input_activations");
    if (packed && !a.is_null()) {
      fail(what, ": quantized input activations are not supported with pack-quantized weights (weight-only, W4A16, is)");
    }
    if (!a.is_null() && member(a, "dynamic") != true) {
      fail(what, ": static input activation scales are not supported (dynamic ones are): ", a.dump());
    }
    PackedIntegers p;
    p.layout = packed ? PackedIntegers::Layout::kCompressedTensors : PackedIntegers::Layout::kCompressedTensorsInt8;
    p.bits = bits_of(member(w, "num_bits"), what);
    if (!packed && p.bits != 8) fail(what, " int-quantized weights must be 8-bit, not ", p.bits, "-bit");
    const json strategy = member(w, "strategy");
    if (strategy == "group") {
      p.group_size = group_size_of(member(w, "group_size"), what);
      if (p.group_size == 0) fail(what, " strategy 'group' needs a group_size");
    } else if (strategy != "channel" && (packed || strategy != "tensor")) {
      fail(what, " weights must have a scale a group or a row (strategy group or channel", packed ? "" : ", or tensor",
           "), not ", strategy.dump());
    }
    if (packing && (packing->bits != p.bits || packing->group_size != p.group_size)) {
      fail(where, ": compressed-tensors groups with different bits or group sizes are not supported");
    }
    packing = p;
  }
  return *packing;
}

// Value `k` (0-based) of word `w`, `bits` wide, the first value in the lowest bits.
inline int field(std::uint32_t w, int k, int bits) {
  return static_cast<int>((w >> (k * bits)) & ((1u << bits) - 1));
}

inline std::uint32_t word(const TensorRef& t, std::int64_t i) {
  std::uint32_t w;
  std::memcpy(&w, t.data + i * 4, 4);
  return w;
}

inline std::int64_t index_at(const TensorRef& t, std::int64_t i) {
  if (t.int_words == 8) {
    std::int64_t v;
    std::memcpy(&v, t.data + i * 8, 8);
    return v;
  }
  std::int32_t v;
  std::memcpy(&v, t.data + i * 4, 4);
  return v;
}

// The parts of one packed weight, and how to read them.
struct PackedWeight {
  std::string name;  // X.weight
  TensorRef values, zeros, scales, order;  // zeros and order may be empty (data null)
  std::int64_t out = 0, in = 0, groups = 0;
};

std::string shape_of(std::initializer_list<std::int64_t> dims) {
  std::string s = "[";
  for (auto d : dims) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
  return s + "]";
}

// compressed-tensors' int-quantized weights: X.weight I8 as it is, its scales (and zero points) a
// row, a group of a row, or the tensor's.
void unpack_int8_weights(std::map<std::string, TensorRef>& tensors, std::map<std::string, Checkpoint::Conversion>& conversions,
                         std::int64_t group_size, const std::string& where) {
  const std::string kScale = ".weight_scale", kZero = ".weight_zero_point";
  std::vector<std::string> names;
  for (const auto& entry : tensors) {
    if (entry.first.ends_with(kScale)) names.push_back(entry.first.substr(0, entry.first.size() - kScale.size()) + ".weight");
  }
  for (const std::string& name : names) {
    const std::string base = name.substr(0, name.size() - 7);
    const auto weight_it = tensors.find(name);
    if (weight_it == tensors.end()) fail(where, ": scales '", base, kScale, "' have no ", name);
    const TensorRef weight = weight_it->second, scales = tensors.at(base + kScale);
    if (weight.dtype != DType::kI8 || weight.int_words || weight.float8 || weight.shape.size() != 2) {
      fail(where, ": int-quantized weight '", name, "' must be an I8 matrix");
    }
    if (scales.int_words || scales.float8 || (scales.dtype != DType::kF32 && scales.dtype != DType::kBF16 && scales.dtype != DType::kF16)) {
      fail(where, ": scales '", scales.name, "' must be F16, BF16 or F32");
    }
    const std::int64_t out = weight.shape[0], in = weight.shape[1];
    const std::int64_t groups = group_size > 0 ? (in + group_size - 1) / group_size : 1;
    const bool per_tensor = scales.elements() == 1 && scales.shape.size() <= 1;
    if (!per_tensor && scales.shape != std::vector<std::int64_t>{out, groups}) {
      fail(where, ": scales '", scales.name, "' ", scales.shape_string(), " do not fit '", name, "' ", weight.shape_string(),
           " (expected [", out, ", ", groups, "], or one for the tensor)");
    }
    TensorRef zeros;
    if (const auto it = tensors.find(base + kZero); it != tensors.end()) {
      zeros = it->second;
      if (zeros.dtype != DType::kI8 || zeros.int_words || zeros.float8 || zeros.shape != scales.shape) {
        fail(where, ": zero points '", zeros.name, "' must be I8 of the scales' shape ", scales.shape_string());
      }
      tensors.erase(it);
    }
    tensors.erase(base + kScale);
    TensorRef converted;
    converted.name = name;
    converted.dtype = DType::kF32;
    converted.shape = {out, in};
    converted.bytes = static_cast<std::size_t>(out * in) * 4;
    tensors[name] = converted;
    const std::int64_t size = group_size > 0 ? group_size : in;
    conversions[name] = [weight, scales, zeros, out, in, groups, size, per_tensor, where](TensorRef& t) {
      const auto* q = reinterpret_cast<const std::int8_t*>(weight.data);
      const auto* z = reinterpret_cast<const std::int8_t*>(zeros.data);
      for (std::int64_t i = 0; i < scales.elements(); ++i) {
        if (!std::isfinite(element_as_f32(scales, i))) fail(where, ": scales '", scales.name, "' hold a NaN or an infinity");
      }
      auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(out * in));
      parallel_for(out, [&](std::int64_t o) {
        for (std::int64_t i = 0; i < in; ++i) {
          const std::int64_t k = per_tensor ? 0 : o * groups + i / size;
          (*values)[static_cast<std::size_t>(o * in + i)] =
              element_as_f32(scales, k) * static_cast<float>(q[o * in + i] - (z ? z[k] : 0));
        }
      });
      t.data = reinterpret_cast<const std::byte*>(values->data());
      t.storage = values;
      t.mapped = false;
    };
  }
}

}  // namespace

std::optional<PackedIntegers> packed_integers(const json& q, const std::string& where) {
  const json method = member(q, "quant_method");
  PackedIntegers p;
  if (method == "gptq") {
    p.layout = PackedIntegers::Layout::kGptq;
    p.bits = bits_of(member(q, "bits"), where + ": gptq");
    p.group_size = group_size_of(member(q, "group_size"), where + ": gptq");
    const json format = member(q, "checkpoint_format").is_null() ? member(q, "format") : member(q, "checkpoint_format");
    if (format.is_null() || format == "gptq") p.zero_offset = 1;
    else if (format != "gptq_v2") fail(where, ": gptq checkpoint_format ", format.dump(), " is not supported (gptq and gptq_v2 are)");
    return p;
  }
  if (method == "awq") {
    p.layout = PackedIntegers::Layout::kAwq;
    const json bits = member(q, "bits").is_null() ? member(q, "w_bit") : member(q, "bits");
    if (bits != 4) fail(where, ": awq bits must be 4, not ", bits.dump());
    p.group_size = group_size_of(member(q, "group_size").is_null() ? member(q, "q_group_size") : member(q, "group_size"),
                                 where + ": awq");
    const json version = member(q, "version");
    if (!version.is_null() && version != "gemm" && version != "GEMM") {
      fail(where, ": awq version ", member(q, "version").dump(), " is not supported (AutoAWQ's gemm layout is)");
    }
    if (member(q, "zero_point") == false) fail(where, ": awq without zero points is not supported");
    return p;
  }
  if (method == "compressed-tensors" && member(q, "format") == "pack-quantized") return compressed_tensors_packing(q, true, where);
  if (method == "compressed-tensors" && member(q, "format") == "int-quantized") return compressed_tensors_packing(q, false, where);
  if (method == "compressed-tensors" && member(q, "format") == "naive-quantized") {  // older W8A8: integers, or floats (FP8)
    const json groups = member(q, "config_groups");
    if (groups.is_object() && !groups.empty() && member(member(groups.begin().value(), "weights"), "type") == "int") {
      return compressed_tensors_packing(q, false, where);
    }
  }
  return std::nullopt;
}

void unpack_packed_integers(std::map<std::string, TensorRef>& tensors,
                            std::map<std::string, Checkpoint::Conversion>& conversions, const PackedIntegers& packing,
                            const std::string& where) {
  if (packing.layout == PackedIntegers::Layout::kCompressedTensorsInt8) {
    unpack_int8_weights(tensors, conversions, packing.group_size, where);
    return;
  }
  const bool ct = packing.layout == PackedIntegers::Layout::kCompressedTensors;
  const bool awq = packing.layout == PackedIntegers::Layout::kAwq;
  if ((packing.bits != 2 && packing.bits != 4 && packing.bits != 8) || (awq && packing.bits != 4) || packing.group_size < 0) {
    fail(where, ": packed integers of ", packing.bits, " bits in groups of ", packing.group_size, " are not supported");
  }
  const std::string values_suffix = ct ? ".weight_packed" : ".qweight";
  const std::string zeros_suffix = ct ? ".weight_zero_point" : ".qzeros";
  const std::string scales_suffix = ct ? ".weight_scale" : ".scales";
  const std::string order_suffix = ct ? ".weight_g_idx" : ".g_idx";
  const std::int64_t per_word = 32 / packing.bits;
  const auto words_for = [&](std::int64_t n) { return (n + per_word - 1) / per_word; };
  std::vector<PackedWeight> weights;
  for (const auto& entry : tensors) {  // not a structured binding: the lambda below captures the name
    const std::string& name = entry.first;
    const TensorRef& ref = entry.second;
    if (!name.ends_with(values_suffix)) continue;
    const std::string base = name.substr(0, name.size() - values_suffix.size());
    PackedWeight w;
    w.name = base + ".weight";
    w.values = ref;
    const auto part = [&](const std::string& suffix, bool required) {
      const auto it = tensors.find(base + suffix);
      if (it == tensors.end()) {
        if (required) fail(where, ": packed weight '", name, "' has no ", base, suffix);
        return TensorRef{};
      }
      return it->second;
    };
    w.scales = part(scales_suffix, true);
    w.zeros = part(zeros_suffix, !ct);
    w.order = part(order_suffix, false);
    if (ref.int_words != 4 || ref.shape.size() != 2) fail(where, ": packed weight '", name, "' must be a matrix of I32 words");
    if (w.scales.int_words || w.scales.float8 ||
        (w.scales.dtype != DType::kF32 && w.scales.dtype != DType::kBF16 && w.scales.dtype != DType::kF16)) {
      fail(where, ": scales '", w.scales.name, "' must be F16, BF16 or F32");
    }
    if (w.zeros.data && (w.zeros.int_words != 4 || w.zeros.shape.size() != 2)) {
      fail(where, ": zero points '", w.zeros.name, "' must be a matrix of I32 words");
    }
    if (w.scales.shape.size() != 2) fail(where, ": scales '", w.scales.name, "' ", w.scales.shape_string(), " are not a matrix");
    std::vector<std::int64_t> zeros_shape;
    if (ct) {
      const TensorRef shape = part(".weight_shape", true);
      if (!shape.int_words || shape.shape != std::vector<std::int64_t>{2}) {
        fail(where, ": '", shape.name, "' must be two integers (the weight's rows and columns)");
      }
      w.out = index_at(shape, 0);
      w.in = index_at(shape, 1);
      if (w.out < 1 || w.in < 1 || w.in > (std::int64_t{1} << 40) || ref.shape != std::vector<std::int64_t>{w.out, words_for(w.in)}) {
        fail(where, ": packed weight '", name, "' ", ref.shape_string(), " does not hold a weight of shape ",
             shape_of({w.out, w.in}), " at ", packing.bits, " bits");
      }
      w.groups = w.scales.shape[1];
      if (w.scales.shape[0] != w.out) {
        fail(where, ": scales '", w.scales.name, "' ", w.scales.shape_string(), " do not have a row for each of the ", w.out,
             " rows of '", name, "'");
      }
      zeros_shape = {words_for(w.out), w.groups};
    } else {
      w.in = awq ? ref.shape[0] : ref.shape[0] * per_word;
      w.out = awq ? ref.shape[1] * per_word : ref.shape[1];
      w.groups = w.scales.shape[0];
      if (w.scales.shape[1] != w.out) {
        fail(where, ": scales '", w.scales.name, "' ", w.scales.shape_string(), " do not have a column for each of the ",
             w.out, " outputs of '", name, "'");
      }
      zeros_shape = {w.groups, words_for(w.out)};
    }
    const std::int64_t expected_groups = packing.group_size > 0 ? (w.in + packing.group_size - 1) / packing.group_size : 1;
    if (w.groups != expected_groups) {
      fail(where, ": scales '", w.scales.name, "' ", w.scales.shape_string(), " hold ", w.groups, " groups, but the ", w.in,
           " input columns of '", name, "' in groups of ",
           packing.group_size > 0 ? std::to_string(packing.group_size) : "a row", " make ", expected_groups);
    }
    if (w.zeros.data && w.zeros.shape != zeros_shape) {
      fail(where, ": zero points '", w.zeros.name, "' ", w.zeros.shape_string(), " do not fit '", name, "' (expected ",
           shape_of({zeros_shape[0], zeros_shape[1]}), ")");
    }
    if (w.order.data) {
      if (!w.order.int_words || w.order.shape != std::vector<std::int64_t>{w.in}) {
        fail(where, ": group order '", w.order.name, "' must be ", w.in, " integers, one for each input column");
      }
      for (std::int64_t i = 0; i < w.in; ++i) {
        const std::int64_t g = index_at(w.order, i);
        if (g < 0 || g >= w.groups) {
          fail(where, ": group order '", w.order.name, "' puts input column ", i, " in group ", g, " of ", w.groups);
        }
      }
    }
    if (tensors.count(w.name)) fail(where, ": '", w.name, "' is stored both packed and as it is");
    weights.push_back(std::move(w));
  }
  for (PackedWeight& w : weights) {
    const std::string base = w.name.substr(0, w.name.size() - 7);
    for (const std::string& suffix : {values_suffix, zeros_suffix, scales_suffix, order_suffix, std::string(".weight_shape")}) {
      tensors.erase(base + suffix);
    }
    TensorRef out;
    out.name = w.name;
    out.dtype = DType::kF32;
    out.shape = {w.out, w.in};
    out.bytes = static_cast<std::size_t>(w.out * w.in) * 4;
    tensors[w.name] = out;
    conversions[w.name] = [w, packing, per_word, where](TensorRef& t) {
      const int bits = packing.bits, centre = 1 << (packing.bits - 1);
      const bool ct = packing.layout == PackedIntegers::Layout::kCompressedTensors;
      const bool awq = packing.layout == PackedIntegers::Layout::kAwq;
      constexpr std::array<int, 8> kAwqPosition = {0, 4, 1, 5, 2, 6, 3, 7};
      const std::int64_t group_size = packing.group_size > 0 ? packing.group_size : w.in;
      const auto group_of = [&](std::int64_t i) { return w.order.data ? index_at(w.order, i) : i / group_size; };
      // The integer at output o, input i; the zero point of output o in group g (its offset added).
      const auto value = [&](std::int64_t o, std::int64_t i) {
        if (ct) return field(word(w.values, o * w.values.shape[1] + i / per_word), static_cast<int>(i % per_word), bits) - centre;
        if (awq) return field(word(w.values, i * w.values.shape[1] + o / 8), kAwqPosition[static_cast<std::size_t>(o % 8)], 4);
        return field(word(w.values, (i / per_word) * w.out + o), static_cast<int>(i % per_word), bits);
      };
      const auto zero = [&](std::int64_t o, std::int64_t g) {
        if (!w.zeros.data) return 0;
        if (ct) return field(word(w.zeros, (o / per_word) * w.groups + g), static_cast<int>(o % per_word), bits) - centre;
        const std::int64_t cols = w.zeros.shape[1];
        if (awq) return field(word(w.zeros, g * cols + o / 8), kAwqPosition[static_cast<std::size_t>(o % 8)], 4);
        return field(word(w.zeros, g * cols + o / per_word), static_cast<int>(o % per_word), bits) + packing.zero_offset;
      };
      const auto scale = [&](std::int64_t o, std::int64_t g) {
        return element_as_f32(w.scales, ct ? o * w.groups + g : g * w.out + o);
      };
      for (std::int64_t i = 0; i < w.scales.elements(); ++i) {
        if (!std::isfinite(element_as_f32(w.scales, i))) fail(where, ": scales '", w.scales.name, "' hold a NaN or an infinity");
      }
      std::vector<std::int64_t> group(static_cast<std::size_t>(w.in));
      for (std::int64_t i = 0; i < w.in; ++i) group[static_cast<std::size_t>(i)] = group_of(i);
      auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(w.out * w.in));
      parallel_for(w.out, [&](std::int64_t o) {
        std::vector<float> scales(static_cast<std::size_t>(w.groups));  // row o's, a group each
        std::vector<int> zeros(static_cast<std::size_t>(w.groups));
        for (std::int64_t g = 0; g < w.groups; ++g) {
          scales[static_cast<std::size_t>(g)] = scale(o, g);
          zeros[static_cast<std::size_t>(g)] = zero(o, g);
        }
        float* row = values->data() + o * w.in;
        for (std::int64_t i = 0; i < w.in; ++i) {
          const auto g = static_cast<std::size_t>(group[static_cast<std::size_t>(i)]);
          row[i] = scales[g] * static_cast<float>(value(o, i) - zeros[g]);
        }
      });
      t.data = reinterpret_cast<const std::byte*>(values->data());
      t.storage = values;
      t.mapped = false;
    };
  }
}

}  // namespace sepal

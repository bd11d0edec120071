#include "model/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "kernels/error.h"
#include "model/bnb4.h"
#include "model/fp8.h"
#include "model/packed_integers.h"
#include "model/gguf_model.h"
#include "model/mxfp4.h"

namespace sepal {
namespace {

using nlohmann::json;

// Headers of real checkpoints are kilobytes; anything this large is corrupt or hostile.
constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;

std::optional<DType> safetensors_dtype(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (name == "I8") return DType::kI8;  // LLM.int8() weights, with their row scales beside them
  return std::nullopt;
}

std::int64_t checked_int(const json& value, const std::string& where) {
  if (!value.is_number_integer() && !value.is_number_unsigned()) fail(where, " is not an integer");
  if (value.is_number_unsigned()) {
    const auto u = value.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fail(where, " is too large");
    }
    return static_cast<std::int64_t>(u);
  }
  const auto v = value.get<std::int64_t>();
  if (v < 0) fail(where, " is negative");
  return v;
}

}  // namespace

std::int64_t TensorRef::elements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string TensorRef::shape_string() const {
  std::ostringstream out;
  out << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

std::map<std::string, TensorRef> read_safetensors(std::shared_ptr<const MappedFile> file) {
  const std::string where = file->path().string();
  const auto bytes = file->bytes();
  if (bytes.size() < 8) fail(where, ": not a safetensors file (", bytes.size(), " bytes, no header)");
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);  // little-endian, as the format specifies
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    fail(where, ": header length ", header_len, " runs past the end of the file (",
         bytes.size(), " bytes); the file is truncated or not safetensors");
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) {
    fail(where, ": header is not valid JSON (", e.what(), ")");
  }
  if (!header.is_object()) fail(where, ": header is not a JSON object");

  const std::byte* data = bytes.data() + 8 + header_len;
  const std::uint64_t data_size = bytes.size() - 8 - header_len;
  std::map<std::string, TensorRef> tensors;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string what = where + ": tensor '" + name + "'";
    if (!entry.is_object()) fail(what, " is not an object");
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) fail(what, " has no dtype");
    const auto dtype_text = entry["dtype"].get<std::string>();
    // MXFP4's blocks and scales (model/mxfp4.h, U8) and FP8 weights (model/fp8.h) are unpacked;
    // so are other integers (U8, I32, I64), packed weights and their parts (model/packed_integers.h,
    // model/bnb4.h).
    const bool mxfp4 = dtype_text == "U8" && (name.ends_with("_blocks") || name.ends_with("_scales"));
    const bool float8 = dtype_text == "F8_E4M3";
    const int int_words = dtype_text == "I32" ? 4 : dtype_text == "I64" ? 8 : dtype_text == "U8" && !mxfp4 ? 1 : 0;
    const auto dtype = mxfp4 || float8 || int_words ? DType::kI8 : safetensors_dtype(dtype_text);
    if (!dtype) {
      fail(what, " has unsupported dtype ", dtype_text,
           " (supported: F32, F16, BF16, I8, F8_E4M3 with its scales, and U8, I32 and I64 as packed weights' parts)");
    }
    if (!entry.contains("shape") || !entry["shape"].is_array()) fail(what, " has no shape");
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      fail(what, " has no data_offsets pair");
    }
    TensorRef ref;
    ref.name = name;
    ref.dtype = *dtype;
    ref.storage = file;
    ref.mapped = true;
    ref.float8 = float8;
    ref.int_words = int_words;
    std::uint64_t elements = 1;
    for (const auto& d : entry["shape"]) {
      const auto dim = static_cast<std::uint64_t>(checked_int(d, what + " shape"));
      if (dim != 0 && elements > (std::uint64_t{1} << 50) / dim) fail(what, " shape is absurdly large");
      elements *= dim;
      ref.shape.push_back(static_cast<std::int64_t>(dim));
    }
    const auto begin = static_cast<std::uint64_t>(checked_int(entry["data_offsets"][0], what + " offset"));
    const auto end = static_cast<std::uint64_t>(checked_int(entry["data_offsets"][1], what + " offset"));
    if (begin > end) fail(what, " has data_offsets [", begin, ", ", end, "] in the wrong order");
    if (end > data_size) {
      fail(what, " has data_offsets [", begin, ", ", end, "] past the end of the data (", data_size,
           " bytes); the file is truncated or corrupt");
    }
    const std::uint64_t element_bytes = int_words ? static_cast<std::uint64_t>(int_words) : dtype_size(*dtype);
    if (end - begin != elements * element_bytes) {
      fail(what, " holds ", end - begin, " bytes but its shape ", ref.shape_string(), " of ",
           dtype_text, " needs ", elements * element_bytes);
    }
    ref.data = data + begin;
    ref.bytes = end - begin;
    ranges.emplace_back(begin, end);
    tensors.emplace(name, std::move(ref));
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      fail(where, ": tensors overlap at data offsets [", ranges[i].first, ", ",
           ranges[i - 1].second, ")");
    }
  }
  return tensors;
}

std::optional<std::string> text_tower_tensor_name(const std::string& name) {
  for (const char* prefix : {"language_model.model.", "model.language_model."}) {
    if (name.starts_with(prefix)) return "model." + name.substr(std::string_view(prefix).size());
  }
  if (name == "language_model.lm_head.weight") return "lm_head.weight";
  return std::nullopt;
}

namespace {

// A multimodal checkpoint (Gemma3ForConditionalGeneration: its language model under
// "language_model.model." or "model.language_model.", beside a vision tower and a projector) as
// its language model alone, under a causal LM's names. Others are left as they are.
void keep_text_tower(std::map<std::string, TensorRef>& tensors, const std::string& where) {
  const bool multimodal = std::any_of(tensors.begin(), tensors.end(), [](const auto& t) {
    return t.first.starts_with("language_model.model.") || t.first.starts_with("model.language_model.");
  });
  if (!multimodal) return;
  std::map<std::string, TensorRef> text;
  for (auto& [name, ref] : tensors) {
    auto renamed = text_tower_tensor_name(name);
    if (!renamed && name == "lm_head.weight") renamed = name;
    if (!renamed) continue;  // the vision tower and the projector
    if (!text.emplace(*renamed, std::move(ref)).second) fail(where, ": two tensors of the language model are both ", *renamed);
  }
  tensors = std::move(text);
}

}  // namespace

Checkpoint Checkpoint::open(const std::filesystem::path& dir) {
  Checkpoint checkpoint;
  checkpoint.dir_ = dir;
  if (is_gguf_file(dir)) return gguf_checkpoint(GgufFile::open(dir));
  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(index)) {
    std::ifstream in(index);
    json parsed;
    try {
      parsed = json::parse(in);
    } catch (const json::exception& e) {
      fail(index.string(), ": not valid JSON (", e.what(), ")");
    }
    if (!parsed.contains("weight_map") || !parsed["weight_map"].is_object()) {
      fail(index.string(), ": no weight_map object");
    }
    std::set<std::string> shards;
    std::map<std::string, std::string> owner;
    for (const auto& [name, shard] : parsed["weight_map"].items()) {
      if (!shard.is_string()) fail(index.string(), ": weight_map entry '", name, "' is not a file name");
      const auto file = shard.get<std::string>();
      if (file.find('/') != std::string::npos || file == "..") {
        fail(index.string(), ": shard name '", file, "' must be a file in the model folder");
      }
      shards.insert(file);
      owner[name] = file;
    }
    for (const auto& shard : shards) {
      if (!std::filesystem::exists(dir / shard)) {
        fail("shard ", shard, " named by ", index.string(), " does not exist");
      }
      for (auto& [name, ref] : read_safetensors(MappedFile::open(dir / shard))) {
        const auto it = owner.find(name);
        if (it == owner.end() || it->second != shard) continue;  // the index decides
        checkpoint.tensors_.emplace(name, std::move(ref));
      }
    }
    for (const auto& [name, shard] : owner) {
      if (!checkpoint.tensors_.count(name)) {
        fail("tensor '", name, "' is listed in ", index.string(), " but missing from ", shard);
      }
    }
  } else if (std::filesystem::exists(single)) {
    checkpoint.tensors_ = read_safetensors(MappedFile::open(single));
  } else {
    // One weights file under another name (older GPTQ folders: gptq_model-4bit-128g.safetensors).
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(dir)) {
      for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        if (entry.is_regular_file() && entry.path().extension() == ".safetensors") files.push_back(entry.path());
      }
    }
    if (files.empty()) fail("no weights in ", dir.string(), ": expected model.safetensors or model.safetensors.index.json");
    if (files.size() > 1) {
      fail("no model.safetensors.index.json in ", dir.string(), " to say what its ", files.size(),
           " .safetensors files hold (nor a model.safetensors)");
    }
    checkpoint.tensors_ = read_safetensors(MappedFile::open(files.front()));
  }
  keep_text_tower(checkpoint.tensors_, dir.string());
  unpack_mxfp4_tensors(checkpoint.tensors_, checkpoint.conversions_, dir.string());
  const auto any = [&](auto&& is) { return std::any_of(checkpoint.tensors_.begin(), checkpoint.tensors_.end(), is); };
  const bool float8 = any([](const auto& t) { return t.second.float8; });
  const bool integers = any([](const auto& t) { return t.second.int_words != 0; });
  const bool int8 = any([](const auto& t) { return t.second.dtype == DType::kI8 && !t.second.int_words && !t.second.float8; });
  if (float8 || integers || int8) {
    const auto read_json = [](const std::filesystem::path& path) {
      try {
        std::ifstream in(path);
        return json::parse(in);
      } catch (const json::exception& e) {
        fail(path.string(), ": not valid JSON (", e.what(), ")");
      }
    };
    json quantization;
    if (const auto config = dir / "config.json"; std::filesystem::exists(config)) {
      const json c = read_json(config);
      if (c.is_object() && c.contains("quantization_config")) quantization = c["quantization_config"];
    }
    // Older GPTQ and AWQ folders keep their settings beside config.json: AutoGPTQ's
    // quantize_config.json, AutoAWQ's quant_config.json.
    for (const auto& [file, method] : {std::pair{"quantize_config.json", "gptq"}, std::pair{"quant_config.json", "awq"}}) {
      if (!integers || !quantization.is_null() || !std::filesystem::exists(dir / file)) continue;
      quantization = read_json(dir / file);
      if (quantization.is_object() && !quantization.contains("quant_method")) quantization["quant_method"] = method;
    }
    if (float8) {
      unpack_fp8_tensors(checkpoint.tensors_, checkpoint.conversions_, fp8_weight_block_size(quantization, dir.string()),
                         dir.string());
    }
    if (const auto packing = integers || int8 ? packed_integers(quantization, dir.string()) : std::nullopt) {
      unpack_packed_integers(checkpoint.tensors_, checkpoint.conversions_, *packing, dir.string());
    }
    if (integers) unpack_bnb4_tensors(checkpoint.tensors_, checkpoint.conversions_, dir.string());
    for (auto it = checkpoint.tensors_.begin(); it != checkpoint.tensors_.end();) {
      if (!it->second.int_words) {
        ++it;
        continue;
      }
      const std::string& name = it->first;
      if (name.ends_with(".qweight") || name.ends_with(".weight_packed") || name.ends_with(".weight")) {
        fail(dir.string(), ": tensor '", name, "' holds packed integer weights, but nothing says how: config.json's "
             "quantization_config names no GPTQ, AWQ or compressed-tensors packing, and no bitsandbytes quant_state is beside it");
      }
      it = checkpoint.tensors_.erase(it);  // sepal reads no integer tensor (position_ids buffers, say)
    }
  }
  checkpoint.converters_ = checkpoint.conversions_;
  return checkpoint;
}

Checkpoint Checkpoint::from_tensors(std::filesystem::path source, std::map<std::string, TensorRef> tensors,
                                    std::map<std::string, Conversion> conversions) {
  Checkpoint checkpoint;
  checkpoint.dir_ = std::move(source);
  checkpoint.tensors_ = std::move(tensors);
  checkpoint.conversions_ = std::move(conversions);
  checkpoint.converters_ = checkpoint.conversions_;
  return checkpoint;
}

void Checkpoint::release(const TensorRef& t) const {
  std::lock_guard lock(*mutex_);
  const auto it = tensors_.find(t.name);
  if (it == tensors_.end() || &it->second != &t) return;  // a copy or a part: not the checkpoint's to drop
  const auto converter = converters_.find(t.name);
  if (converter == converters_.end() || !it->second.storage || it->second.storage.use_count() != 1) return;
  it->second.data = nullptr;
  it->second.storage.reset();
  conversions_[t.name] = converter->second;
}

const TensorRef* Checkpoint::find(const std::string& name) const {
  std::lock_guard lock(*mutex_);
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) return nullptr;
  if (auto c = conversions_.find(name); c != conversions_.end()) {
    c->second(it->second);
    conversions_.erase(c);
  }
  return &it->second;
}

const TensorRef& Checkpoint::get(const std::string& name) const {
  const TensorRef* ref = find(name);
  if (!ref) fail("tensor '", name, "' is missing from the checkpoint in ", dir_.string());
  return *ref;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors) {
  json header = json::object();
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = json{{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  header["__metadata__"] = json{{"format", "pt"}};
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps tensor data 8-byte aligned
  std::FILE* out = std::fopen(path.c_str(), "wb");
  if (!out) fail("cannot write ", path.string());
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(out, std::fclose);
  const std::uint64_t length = text.size();
  bool ok = std::fwrite(&length, 8, 1, out) == 1 && std::fwrite(text.data(), 1, text.size(), out) == text.size();
  for (const auto& t : tensors) {
    ok = ok && std::fwrite(t.bytes.data(), 1, t.bytes.size(), out) == t.bytes.size();
  }
  if (!ok || std::fflush(out) != 0) fail("cannot write ", path.string(), ": disk full?");
}

}  // namespace sepal

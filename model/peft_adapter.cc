#include "model/peft_adapter.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "kernels/error.h"
#include "model/mapped_file.h"
#include "model/safetensors.h"
#include "model/weight_holding.h"

namespace sepal {
namespace {

using json = nlohmann::json;

// PEFT's name of a LoRA factor ("A" or "B") of projection p in block `layer`.
std::string factor_name(const ModelConfig& config, std::int64_t layer, Projection p, const char* factor) {
  std::string name = projection_tensor_name(config, layer, p);
  name.resize(name.size() - std::string(".weight").size());
  return "base_model.model." + name + ".lora_" + factor + ".weight";
}

}  // namespace

bool is_peft_folder(const std::filesystem::path& path) {
  return std::filesystem::is_directory(path) && std::filesystem::exists(path / "adapter_config.json");
}

void write_peft_adapter(const std::filesystem::path& dir, const ModelConfig& config, const PromptParameters& params,
                        const std::string& base_model) {
  if (params.method != TuningMethod::kLora) fail("only LoRA adapters have a PEFT layout, not ", tuning_method_name(params.method));
  const AdapterShape& shape = params.adapter_shape;
  const auto adapters = params.block_adapters();
  std::vector<TensorToWrite> tensors;
  json targets = json::array();
  for (const Projection p : shape.targets) targets.push_back(std::string(projection_name(p)));
  for (std::int64_t b = 0; b < params.layers; ++b) {
    for (const Projection p : shape.targets) {
      const auto [rows, cols] = projection_shape(config, p);
      const float* a = adapters->of(config, b, p)->values;
      const float* bm = a + shape.rank * cols;
      auto bytes = [](const float* v, std::int64_t n) {
        std::vector<std::byte> out(static_cast<std::size_t>(n * 4));
        std::memcpy(out.data(), v, out.size());
        return out;
      };
      tensors.push_back({factor_name(config, b, p, "A"), "F32", {shape.rank, cols}, bytes(a, shape.rank * cols)});
      tensors.push_back({factor_name(config, b, p, "B"), "F32", {rows, shape.rank}, bytes(bm, rows * shape.rank)});
    }
  }
  const json adapter_config = {{"peft_type", "LORA"},
                               {"task_type", "CAUSAL_LM"},
                               {"base_model_name_or_path", base_model},
                               {"r", shape.rank},
                               {"lora_alpha", shape.alpha},
                               {"target_modules", targets},
                               {"lora_dropout", 0.0},
                               {"bias", "none"},
                               {"fan_in_fan_out", false},
                               {"use_rslora", false},
                               {"use_dora", false},
                               {"inference_mode", true},
                               {"modules_to_save", nullptr},
                               {"layers_to_transform", nullptr},
                               {"init_lora_weights", true}};
  std::filesystem::create_directories(dir);
  write_safetensors(dir / "adapter_model.safetensors", tensors);
  std::ofstream out(dir / "adapter_config.json");
  out << adapter_config.dump(2) << "\n";
  if (!out) fail("cannot write ", (dir / "adapter_config.json").string());
}

PromptParameters read_peft_adapter(const std::filesystem::path& dir, const ModelConfig& config) {
  const std::string where = dir.string();
  std::ifstream in(dir / "adapter_config.json");
  if (!in) fail(where, ": cannot read adapter_config.json");
  json c;
  try {
    c = json::parse(in);
  } catch (const json::exception& e) {
    fail(where, "/adapter_config.json: not valid JSON (", e.what(), ")");
  }
  if (!c.is_object()) fail(where, "/adapter_config.json: not a JSON object");
  const std::string type = c.value("peft_type", std::string());
  if (type != "LORA") fail(where, ": PEFT type '", type, "' is not supported (only LORA)");
  auto flag = [&](const char* key) { return c.contains(key) && c[key].is_boolean() && c[key].get<bool>(); };
  if (flag("use_rslora")) fail(where, ": rank-stabilised LoRA (use_rslora) is not supported");
  if (flag("use_dora")) fail(where, ": DoRA (use_dora) is not supported");
  if (flag("fan_in_fan_out")) fail(where, ": fan_in_fan_out (transposed weights) is not supported");
  if (c.contains("bias") && c["bias"] != "none") fail(where, ": LoRA biases (bias '", c["bias"].dump(), "') are not supported");
  for (const char* key : {"layers_to_transform", "modules_to_save", "rank_pattern", "alpha_pattern"}) {
    if (c.contains(key) && !c[key].is_null() && !(c[key].is_object() && c[key].empty())) {
      fail(where, ": ", key, " is not supported (every block's adapters, one rank and alpha)");
    }
  }
  if (!c.contains("r") || !c["r"].is_number_integer()) fail(where, ": adapter_config.json has no integer r");
  if (!c.contains("lora_alpha") || !c["lora_alpha"].is_number()) fail(where, ": adapter_config.json has no lora_alpha");
  if (!c.contains("target_modules") || !c["target_modules"].is_array()) {
    fail(where, ": target_modules must be a list of projection names");
  }
  AdapterShape shape{AdapterMethod::kLora, c["r"].get<std::int64_t>(), c["lora_alpha"].get<double>(), {}};
  for (const auto& t : c["target_modules"]) {
    const auto p = t.is_string() ? parse_projection(t.get<std::string>()) : std::nullopt;
    if (!p) fail(where, ": target module ", t.dump(), " is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
    shape.targets.push_back(*p);
  }
  std::sort(shape.targets.begin(), shape.targets.end());
  try {
    validate(shape, config);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  const auto tensors = read_safetensors(MappedFile::open(dir / "adapter_model.safetensors"));
  std::map<std::string, const TensorRef*> by_name;
  for (const auto& [name, t] : tensors) {
    std::string key = name;
    if (!key.starts_with("base_model.model.")) key = "base_model.model." + key;
    const auto dot_default = key.find(".default.weight");
    if (dot_default != std::string::npos) key = key.substr(0, dot_default) + ".weight";
    by_name[key] = &t;
  }
  PromptParameters p = initial_adapter_parameters(shape, config, 0);
  std::set<std::string> used;
  for (std::int64_t b = 0; b < config.num_layers; ++b) {
    for (const Projection t : shape.targets) {
      const auto [rows, cols] = projection_shape(config, t);
      float* a = p.adapter.data() + b * shape.values_per_block(config) + shape.offset_in_block(config, t);
      for (const auto& [factor, r, k, out] :
           {std::tuple{"A", shape.rank, cols, a}, std::tuple{"B", rows, shape.rank, a + shape.rank * cols}}) {
        const std::string name = factor_name(config, b, t, factor);
        const auto it = by_name.find(name);
        if (it == by_name.end()) fail(where, ": adapter_model.safetensors has no ", name);
        const TensorRef& ref = *it->second;
        if (ref.dtype != DType::kF32 && ref.dtype != DType::kF16 && ref.dtype != DType::kBF16) {
          fail(where, ": ", name, " is not F32, F16 or BF16");
        }
        if (ref.shape != std::vector<std::int64_t>{r, k}) {
          fail(where, ": ", name, " has shape ", ref.shape_string(), ", not [", r, ", ", k, "]");
        }
        for (std::int64_t i = 0; i < r * k; ++i) {
          out[i] = element_as_f32(ref, i);
          if (!std::isfinite(out[i])) fail(where, ": ", name, " holds NaN or infinity");
        }
        used.insert(name);
      }
    }
  }
  for (const auto& [name, t] : by_name) {
    if (!used.count(name)) fail(where, ": adapter_model.safetensors holds ", name, ", which sepal does not apply");
  }
  return p;
}

}  // namespace sepal

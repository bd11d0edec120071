#include "model/peft_adapter.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "kernels/error.h"
#include "model/mapped_file.h"
#include "model/safetensors.h"
#include "model/weight_holding.h"

namespace sepal {
namespace {

using json = nlohmann::json;

// PEFT's name of a LoRA factor ("A" or "B") of a module.
std::string factor_name(const std::string& module_path, const char* factor) {
  return "base_model.model." + module_path + ".lora_" + factor + ".weight";
}

// A module's path in the model transformers builds from the folder: a causal LM's, or for a
// multimodal Gemma 3 (Gemma3ForConditionalGeneration, since transformers 4.52) the language
// model's layers under "model.language_model." (the reader takes either of its prefixes).
std::string exported_module_path(const ModelConfig& config, const std::string& module_path) {
  if (config.architecture == "Gemma3ForConditionalGeneration" && module_path.starts_with("model.")) {
    return "model.language_model." + module_path.substr(6);
  }
  return module_path;
}

// The modules of block `layer` that `targets` adapt (each expert's its own), each with the
// targets it holds, in order.
struct AdaptedModule {
  ProjectionModule module;
  std::vector<Projection> parts;
  std::int64_t copy = 0;  // the expert, for a sparse block's MLP
};
std::vector<AdaptedModule> adapted_modules(const ModelConfig& config, std::int64_t layer, const std::vector<Projection>& targets) {
  std::vector<AdaptedModule> out;
  for (const Projection p : targets) {
    for (std::int64_t copy = 0; copy < projection_copies(config, p, layer); ++copy) {
      ProjectionModule m = projection_module(config, layer, p, copy);
      const auto it = std::find_if(out.begin(), out.end(), [&](const AdaptedModule& a) { return a.module.path == m.path; });
      if (it != out.end()) {
        it->parts.push_back(p);
      } else {
        out.push_back({std::move(m), {p}, copy});
      }
    }
  }
  return out;
}

std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
  std::vector<std::byte> out(v.size() * sizeof(float));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// A rank_pattern or alpha_pattern of adapter_config.json: keys are module names or path suffixes
// ("query_key_value", "model.layers.3.self_attn.q_proj"), as PEFT matches them; regular
// expressions are not interpreted, so a key no module matches is refused rather than ignored.
class ModulePattern {
 public:
  ModulePattern(const json& config, const char* key, const std::string& where) : key_(key), where_(where) {
    if (!config.contains(key) || config[key].is_null()) return;
    if (!config[key].is_object()) fail(where, ": ", key, " must be an object of module names and numbers");
    for (const auto& [name, value] : config[key].items()) {
      const bool integer = std::string_view(key) == "rank_pattern";
      if (integer ? !value.is_number_integer() : !value.is_number()) {
        fail(where, ": ", key, "['", name, "'] is not ", integer ? "an integer" : "a number");
      }
      entries_.push_back({name, value.get<double>(), false});
    }
  }
  /// The value for a module path, or `fallback` when no key matches.
  double value_for(const std::string& path, double fallback) {
    Entry* found = nullptr;
    for (Entry& e : entries_) {
      if (path == e.key || (path.size() > e.key.size() && path.ends_with("." + e.key))) {
        if (found && found->value != e.value) fail(where_, ": ", key_, " keys '", found->key, "' and '", e.key, "' both match ", path);
        found = &e;
        e.used = true;
      }
    }
    return found ? found->value : fallback;
  }
  /// Fails on a key that matched no module.
  void check_all_used() const {
    for (const Entry& e : entries_) {
      if (!e.used) {
        fail(where_, ": ", key_, " key '", e.key,
             "' matches no adapted module (keys are module names or path suffixes; regular expressions are not supported)");
      }
    }
  }

 private:
  struct Entry {
    std::string key;
    double value;
    bool used;
  };
  std::string key_, where_;
  std::vector<Entry> entries_;
};

std::string module_target_list(const ModelConfig& config) {
  std::string out;
  std::set<std::string> listed;
  for (int i = 0; i < kProjections; ++i) {
    const auto p = static_cast<Projection>(i);
    if (!block_has_projection(config, p)) continue;
    const std::string target = projection_module(config, 0, p).target;
    if (listed.insert(target).second) out += (out.empty() ? "" : ", ") + target;
  }
  return out;
}

// One projection's LoRA as read from a module: the A rows and B columns it keeps.
struct ReadAdapter {
  std::int64_t layer = 0;
  Projection projection = Projection::kQ;
  std::int64_t copy = 0;
  std::shared_ptr<const std::vector<float>> a, b;  // the module's A [r, cols] and B [module rows, r]
  std::int64_t module_rank = 0;
  ProjectionModule module;
  double scaling = 0;
  std::vector<std::int64_t> kept;  // columns of B with a nonzero in this projection's rows
};

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
  json targets = json::array(), rank_pattern = json::object(), alpha_pattern = json::object();
  for (std::int64_t b = 0; b < params.layers; ++b) {
    for (const AdaptedModule& m : adapted_modules(config, b, shape.targets)) {
      // A fused module (BLOOM's query_key_value) gets one LoRA of rank parts × r: the parts' A
      // stacked, and a B whose columns for part j are nonzero only in part j's rows. Its alpha
      // grows with its rank, so the update keeps the scale alpha / r.
      const auto parts = static_cast<std::int64_t>(m.parts.size());
      const std::int64_t rank = parts * shape.rank;
      const std::int64_t cols = projection_shape(config, m.parts.front(), b, m.copy).second;
      std::vector<float> a(static_cast<std::size_t>(rank * cols)), bm(static_cast<std::size_t>(m.module.rows * rank), 0.0f);
      for (std::int64_t j = 0; j < parts; ++j) {
        const Projection p = m.parts[static_cast<std::size_t>(j)];
        const ProjectionModule place = projection_module(config, b, p, m.copy);
        const std::int64_t rows = projection_shape(config, p, b, m.copy).first;
        const float* pa = adapters->of(config, b, p, m.copy)->values;
        const float* pb = pa + shape.rank * cols;
        std::copy(pa, pa + shape.rank * cols, a.begin() + j * shape.rank * cols);
        for (std::int64_t i = 0; i < rows; ++i) {
          for (std::int64_t c = 0; c < shape.rank; ++c) {
            bm[static_cast<std::size_t>(place.module_row(i) * rank + j * shape.rank + c)] = pb[i * shape.rank + c];
          }
        }
      }
      const std::string path = exported_module_path(config, m.module.path);
      tensors.push_back({factor_name(path, "A"), "F32", {rank, cols}, f32_bytes(a)});
      tensors.push_back({factor_name(path, "B"), "F32", {m.module.rows, rank}, f32_bytes(bm)});
      if (b == 0 && m.copy == 0) {
        targets.push_back(m.module.target);
        if (parts > 1) {
          rank_pattern[m.module.target] = rank;
          alpha_pattern[m.module.target] = shape.alpha * static_cast<double>(parts);
        }
      }
    }
  }
  const json adapter_config = {{"peft_type", "LORA"},
                               {"task_type", "CAUSAL_LM"},
                               {"base_model_name_or_path", base_model},
                               {"r", shape.rank},
                               {"lora_alpha", shape.alpha},
                               {"target_modules", targets},
                               {"rank_pattern", rank_pattern},
                               {"alpha_pattern", alpha_pattern},
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
  const std::string type = c.contains("peft_type") && c["peft_type"].is_string() ? c["peft_type"].get<std::string>()
                                                                                  : c.value("peft_type", json()).dump();
  if (type != "LORA") fail(where, ": PEFT type '", type, "' is not supported (only LORA)");
  auto flag = [&](const char* key) {
    if (!c.contains(key) || c[key].is_null()) return false;
    if (!c[key].is_boolean()) fail(where, ": ", key, " must be true or false, not ", c[key].dump());
    return c[key].get<bool>();
  };
  if (flag("use_rslora")) fail(where, ": rank-stabilised LoRA (use_rslora) is not supported");
  if (flag("use_dora")) fail(where, ": DoRA (use_dora) is not supported");
  if (flag("fan_in_fan_out")) fail(where, ": fan_in_fan_out (transposed weights) is not supported");
  if (c.contains("bias") && c["bias"] != "none") fail(where, ": LoRA biases (bias '", c["bias"].dump(), "') are not supported");
  for (const char* key : {"layers_to_transform", "modules_to_save"}) {
    if (c.contains(key) && !c[key].is_null() && !(c[key].is_object() && c[key].empty())) {
      fail(where, ": ", key, " is not supported (adapters on every block, and nothing else)");
    }
  }
  if (!c.contains("r") || !c["r"].is_number_integer()) fail(where, ": adapter_config.json has no integer r");
  if (!c.contains("lora_alpha") || !c["lora_alpha"].is_number()) fail(where, ": adapter_config.json has no lora_alpha");
  if (!c.contains("target_modules") || !c["target_modules"].is_array()) {
    fail(where, ": target_modules must be a list of module names");
  }
  ModulePattern rank_pattern(c, "rank_pattern", where), alpha_pattern(c, "alpha_pattern", where);
  std::vector<Projection> targets;
  for (const auto& t : c["target_modules"]) {
    std::vector<Projection> named;
    for (int i = 0; i < kProjections && t.is_string(); ++i) {
      const auto p = static_cast<Projection>(i);
      if (block_has_projection(config, p) && projection_module(config, 0, p).target == t.get<std::string>()) named.push_back(p);
    }
    if (named.empty()) fail(where, ": target module ", t.dump(), " is not one of ", module_target_list(config));
    targets.insert(targets.end(), named.begin(), named.end());
  }
  std::sort(targets.begin(), targets.end());
  if (std::adjacent_find(targets.begin(), targets.end()) != targets.end()) fail(where, ": target_modules names a module twice");

  const auto tensors = read_safetensors(MappedFile::open(dir / "adapter_model.safetensors"));
  std::map<std::string, const TensorRef*> by_name;
  for (const auto& [name, t] : tensors) {
    std::string key = name;
    if (!key.starts_with("base_model.model.")) key = "base_model.model." + key;
    // An adapter of a multimodal model's language model (Gemma 3 4B and up) names its modules
    // under that model's prefix.
    if (auto text = text_tower_tensor_name(key.substr(17))) key = "base_model.model." + *text;
    const auto dot_default = key.find(".default.weight");
    if (dot_default != std::string::npos) key = key.substr(0, dot_default) + ".weight";
    by_name[key] = &t;
  }
  std::set<std::string> used;
  auto read_factor = [&](const std::string& name, std::int64_t rows, std::int64_t cols) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) fail(where, ": adapter_model.safetensors has no ", name);
    const TensorRef& ref = *it->second;
    if (ref.dtype != DType::kF32 && ref.dtype != DType::kF16 && ref.dtype != DType::kBF16) {
      fail(where, ": ", name, " is not F32, F16 or BF16");
    }
    if (ref.shape != std::vector<std::int64_t>{rows, cols}) {
      fail(where, ": ", name, " has shape ", ref.shape_string(), ", not [", rows, ", ", cols, "]");
    }
    auto out = std::make_shared<std::vector<float>>(static_cast<std::size_t>(rows * cols));
    for (std::int64_t i = 0; i < rows * cols; ++i) {
      (*out)[static_cast<std::size_t>(i)] = element_as_f32(ref, i);
      if (!std::isfinite((*out)[static_cast<std::size_t>(i)])) fail(where, ": ", name, " holds NaN or infinity");
    }
    used.insert(name);
    return out;
  };
  const double rank = c["r"].get<double>(), alpha = c["lora_alpha"].get<double>();
  struct ModuleSettings {
    std::int64_t layer;
    AdaptedModule module;
    double rank, alpha;
  };
  std::vector<ModuleSettings> modules;
  for (std::int64_t b = 0; b < config.num_layers; ++b) {
    for (AdaptedModule& m : adapted_modules(config, b, targets)) {
      const double module_rank = rank_pattern.value_for(m.module.path, rank);
      const double module_alpha = alpha_pattern.value_for(m.module.path, alpha);
      if (module_rank < 1 || module_rank > 1024) fail(where, ": the rank of ", m.module.path, " is ", module_rank, ", not in [1, 1024]");
      if (!(module_alpha > 0) || module_alpha > 1e30) {
        fail(where, ": the alpha of ", m.module.path, " is ", module_alpha, ", not a positive number up to 1e30");
      }
      modules.push_back({b, std::move(m), module_rank, module_alpha});
    }
  }
  rank_pattern.check_all_used();
  alpha_pattern.check_all_used();
  std::vector<ReadAdapter> read;
  for (const auto& [b, m, module_rank, module_alpha] : modules) {
    const auto r = static_cast<std::int64_t>(module_rank);
    const std::int64_t cols = projection_shape(config, m.parts.front(), b, m.copy).second;
    const auto a = read_factor(factor_name(m.module.path, "A"), r, cols);
    const auto bm = read_factor(factor_name(m.module.path, "B"), m.module.rows, r);
    for (const Projection p : m.parts) {
      ReadAdapter ra{b, p, m.copy, a, bm, r, projection_module(config, b, p, m.copy), module_alpha / module_rank, {}};
      // A column of B that is zero in p's rows adds nothing to p: dropping it keeps the update
      // exact and gives each part of a fused module the rank it has (sepal's own exports).
      const std::int64_t rows = projection_shape(config, p, b, m.copy).first;
      for (std::int64_t col = 0; col < r; ++col) {
        for (std::int64_t i = 0; i < rows; ++i) {
          if ((*bm)[static_cast<std::size_t>(ra.module.module_row(i) * r + col)] != 0.0f) {
            ra.kept.push_back(col);
            break;
          }
        }
      }
      read.push_back(std::move(ra));
    }
  }
  for (const auto& [name, t] : by_name) {
    if (!used.count(name)) fail(where, ": adapter_model.safetensors holds ", name, ", which sepal does not apply");
  }

  // sepal's adapters have one rank and one scale: the largest rank kept, the others padded with
  // zeros; one scale when every module has the same (exact), else each B scaled by its own.
  std::int64_t kept_rank = 0;
  std::set<Projection> with_update;
  std::set<double> scalings;
  for (const ReadAdapter& ra : read) {
    kept_rank = std::max<std::int64_t>(kept_rank, static_cast<std::int64_t>(ra.kept.size()));
    if (!ra.kept.empty()) {
      with_update.insert(ra.projection);
      scalings.insert(ra.scaling);
    }
  }
  AdapterShape shape{AdapterMethod::kLora, kept_rank, 0, {}};
  if (kept_rank == 0) {  // every B is zero: an adapter that changes nothing, kept as it was
    shape.rank = static_cast<std::int64_t>(rank);
    shape.alpha = alpha;
    shape.targets = targets;
  } else {
    shape.alpha = scalings.size() == 1 ? *scalings.begin() * static_cast<double>(kept_rank) : static_cast<double>(kept_rank);
    shape.targets.assign(with_update.begin(), with_update.end());
  }
  try {
    validate(shape, config);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  PromptParameters params = initial_adapter_parameters(shape, config, 0);
  std::fill(params.adapter.begin(), params.adapter.end(), 0.0f);
  for (const ReadAdapter& ra : read) {
    if (!shape.targets_projection(ra.projection)) continue;
    const auto [rows, cols] = projection_shape(config, ra.projection, ra.layer, ra.copy);
    float* pa = params.adapter.data() + ra.layer * shape.values_per_block(config) +
                shape.offset_in_block(config, ra.projection, ra.layer, ra.copy);
    float* pb = pa + shape.rank * cols;
    const float scale = scalings.size() == 1 ? 1.0f : static_cast<float>(ra.scaling);
    for (std::size_t j = 0; j < ra.kept.size(); ++j) {
      const std::int64_t col = ra.kept[j];
      std::copy_n(ra.a->data() + col * cols, cols, pa + static_cast<std::int64_t>(j) * cols);
      for (std::int64_t i = 0; i < rows; ++i) {
        float& b = pb[i * shape.rank + static_cast<std::int64_t>(j)];
        b = scale * (*ra.b)[static_cast<std::size_t>(ra.module.module_row(i) * ra.module_rank + col)];
        if (!std::isfinite(b)) {
          fail(where, ": ", factor_name(ra.module.path, "B"), " times its module's alpha / r (", ra.scaling, ") is not finite");
        }
      }
    }
  }
  return params;
}

}  // namespace sepal

#include "tools/prompt_list.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/utf8.h"
#include "tools/commands.h"

namespace sepal::tools {
namespace {

constexpr std::size_t kMaxPrompts = 4096;
constexpr std::size_t kMaxLineBytes = std::size_t{1} << 20;

template <typename T>
T field(const nlohmann::json& object, const char* name, T fallback, const std::string& where) {
  auto it = object.find(name);
  if (it == object.end()) return fallback;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) throw UsageError{where + ": \"" + name + "\" must be a string"};
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) throw UsageError{where + ": \"" + name + "\" must be a number"};
  } else {
    if (!it->is_number_integer()) throw UsageError{where + ": \"" + name + "\" must be an integer"};
    if (std::is_unsigned_v<T> && it->is_number_unsigned() == false && it->get<std::int64_t>() < 0) {
      throw UsageError{where + ": \"" + name + "\" must be at least 0"};
    }
  }
  return it->get<T>();
}

}  // namespace

void check_prompt_spec(const PromptSpec& s, const std::string& where) {
  // The command line's values are named as flags; a prompts file's as its JSON fields.
  const bool flags = where.empty();
  auto name = [&](const char* flag, const char* field) { return flags ? std::string(flag) : where + ": " + field; };
  if (s.max_new_tokens < 0 || s.max_new_tokens > (std::int64_t{1} << 31)) {
    throw UsageError{name("--max-new-tokens", "max_new_tokens") + " must be at least 0"};
  }
  if (!std::isfinite(s.temperature) || s.temperature < 0) throw UsageError{name("--temperature", "temperature") + " must be a number >= 0"};
  if (s.top_k < 0 || s.top_k > (1 << 30)) throw UsageError{name("--top-k", "top_k") + " must be at least 0"};
  if (!std::isfinite(s.top_p) || s.top_p <= 0 || s.top_p > 1) throw UsageError{name("--top-p", "top_p") + " must be in (0, 1]"};
  if (first_invalid_utf8(s.text)) throw UsageError{name("--prompt", "prompt") + " is not valid UTF-8"};
}

std::vector<PromptSpec> read_prompts_file(const std::string& path, const PromptSpec& defaults) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError{"cannot read the prompts file " + path};
  std::vector<PromptSpec> prompts;
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number);
    if (line.size() > kMaxLineBytes) throw UsageError{where + ": the line is longer than 1 MiB"};
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (prompts.size() == kMaxPrompts) throw UsageError{path + " holds more than " + std::to_string(kMaxPrompts) + " prompts"};
    PromptSpec spec = defaults;
    if (line.front() != '{') {
      spec.text = line;
    } else {
      nlohmann::json object;
      try {
        object = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw UsageError{where + ": not a JSON object: " + e.what()};
      }
      if (!object.is_object()) throw UsageError{where + ": not a JSON object"};
      for (const auto& [key, value] : object.items()) {
        if (key != "prompt" && key != "max_new_tokens" && key != "temperature" && key != "top_k" && key != "top_p" &&
            key != "seed") {
          throw UsageError{where + ": unknown field \"" + key + "\" (prompt, max_new_tokens, temperature, top_k, top_p, seed)"};
        }
      }
      if (!object.contains("prompt")) throw UsageError{where + ": no \"prompt\""};
      try {
        spec.text = field<std::string>(object, "prompt", "", where);
        spec.max_new_tokens = field<std::int64_t>(object, "max_new_tokens", defaults.max_new_tokens, where);
        spec.temperature = field<double>(object, "temperature", defaults.temperature, where);
        spec.top_k = field<std::int64_t>(object, "top_k", defaults.top_k, where);
        spec.top_p = field<double>(object, "top_p", defaults.top_p, where);
        spec.seed = field<std::uint64_t>(object, "seed", defaults.seed, where);
      } catch (const nlohmann::json::exception& e) {
        throw UsageError{where + ": " + e.what()};
      }
    }
    check_prompt_spec(spec, where);
    prompts.push_back(std::move(spec));
  }
  if (prompts.empty()) throw UsageError{"the prompts file " + path + " holds no prompt"};
  return prompts;
}

}  // namespace sepal::tools

#include "tools/prompt_list.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <set>
#include <stdexcept>
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
    throw UsageError{name("--max-new-tokens", "max_new_tokens") + " must be between 0 and 2147483648"};
  }
  if (!std::isfinite(s.temperature) || s.temperature < 0) throw UsageError{name("--temperature", "temperature") + " must be a number >= 0"};
  if (s.top_k < 0 || s.top_k > (1 << 30)) throw UsageError{name("--top-k", "top_k") + " must be between 0 and 1073741824"};
  if (!std::isfinite(s.top_p) || s.top_p <= 0 || s.top_p > 1) throw UsageError{name("--top-p", "top_p") + " must be in (0, 1]"};
  if (first_invalid_utf8(s.text)) throw UsageError{name("--prompt", "prompt") + " is not valid UTF-8"};
  if (!std::isfinite(s.presence_penalty) || std::abs(s.presence_penalty) > 2) {
    throw UsageError{name("--presence-penalty", "presence_penalty") + " must be in [-2, 2]"};
  }
  if (!std::isfinite(s.frequency_penalty) || std::abs(s.frequency_penalty) > 2) {
    throw UsageError{name("--frequency-penalty", "frequency_penalty") + " must be in [-2, 2]"};
  }
  std::set<std::int32_t> ids;
  for (const auto& [id, bias] : s.logit_bias) {
    if (id < 0) throw UsageError{name("--logit-bias", "logit_bias") + ": token ids are non-negative"};
    if (!std::isfinite(bias) || std::abs(bias) > 100) throw UsageError{name("--logit-bias", "logit_bias") + ": biases are in [-100, 100]"};
    if (!ids.insert(id).second) throw UsageError{name("--logit-bias", "logit_bias") + ": token " + std::to_string(id) + " is given twice"};
  }
}

std::pair<std::int32_t, float> parse_logit_bias(const std::string& text) {
  const std::size_t eq = text.find('=');
  try {
    if (eq == std::string::npos || eq == 0) throw std::invalid_argument("no '='");
    std::size_t used = 0;
    const long long id = std::stoll(text.substr(0, eq), &used);
    if (used != eq || id < 0 || id > INT32_MAX) throw std::invalid_argument("id");
    const std::string bias_text = text.substr(eq + 1);
    const float bias = std::stof(bias_text, &used);
    if (used != bias_text.size()) throw std::invalid_argument("bias");
    return {static_cast<std::int32_t>(id), bias};
  } catch (const std::exception&) {
    throw UsageError{"--logit-bias takes TOKEN_ID=BIAS (e.g. 13=-100), not '" + text + "'"};
  }
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
            key != "seed" && key != "presence_penalty" && key != "frequency_penalty" && key != "logit_bias") {
          throw UsageError{where + ": unknown field \"" + key +
                           "\" (prompt, max_new_tokens, temperature, top_k, top_p, seed, presence_penalty, "
                           "frequency_penalty, logit_bias)"};
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
        spec.presence_penalty = field<double>(object, "presence_penalty", defaults.presence_penalty, where);
        spec.frequency_penalty = field<double>(object, "frequency_penalty", defaults.frequency_penalty, where);
        if (object.contains("logit_bias")) {
          const nlohmann::json& b = object["logit_bias"];
          if (!b.is_object()) throw UsageError{where + ": logit_bias must be an object of token ids (as strings) and biases"};
          spec.logit_bias.clear();
          for (const auto& [key, value] : b.items()) {
            if (!value.is_number()) throw UsageError{where + ": logit_bias values must be numbers"};
            try {
              spec.logit_bias.push_back(parse_logit_bias(key + "=" + value.dump()));
            } catch (const UsageError&) {
              throw UsageError{where + ": logit_bias keys must be token ids, not '" + key + "'"};
            }
          }
        }
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

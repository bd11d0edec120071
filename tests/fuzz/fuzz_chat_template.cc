// Fuzz target: a chat template's source (a model file's chat_template is outside input). Parsing
// and rendering a chat with it must give a text or a TemplateError, within the engine's limits;
// any other exception, a crash or a sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "actors/api/jinja_template.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const nlohmann::ordered_json context = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi é 中"},
                 {"role": "assistant", "content": "<think>x</think>Hello"}, {"role": "user", "content": "More"}],
    "add_generation_prompt": true, "tools": null, "documents": null, "bos_token": "<s>", "eos_token": "</s>"})");
  auto parsed = sepal::api::jinja::Template::parse(std::string(reinterpret_cast<const char*>(data), size));
  if (auto* t = std::get_if<sepal::api::jinja::Template>(&parsed)) {
    const auto rendered = t->render(context);
    if (const auto* text = std::get_if<std::string>(&rendered); text && text->size() > (std::size_t{10} << 20)) __builtin_trap();
  }
  return 0;
}

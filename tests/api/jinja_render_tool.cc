// Renders a Jinja template file with a JSON context, as the chat templates' engine does
// (actors/api/jinja_template.h): the text on stdout and exit 0, or "parse error: ..." (exit 2)
// or "render error: ..." (exit 3). tests/api/run_jinja_oracle_test.sh compares it with Jinja2.
//   jinja_render_tool TEMPLATE CONTEXT.json
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/api/jinja_template.h"

namespace {

bool read(const char* path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string source, context_text;
  if (argc != 3 || !read(argv[1], source) || !read(argv[2], context_text)) {
    std::fprintf(stderr, "usage: jinja_render_tool TEMPLATE CONTEXT.json (both readable)\n");
    return 1;
  }
  const auto context = nlohmann::ordered_json::parse(context_text, nullptr, false);
  if (context.is_discarded() || !context.is_object()) {
    std::fprintf(stderr, "jinja_render_tool: the context is not a JSON object\n");
    return 1;
  }
  auto parsed = sepal::api::jinja::Template::parse(source);
  if (auto* e = std::get_if<sepal::api::jinja::TemplateError>(&parsed)) {
    std::printf("parse error: %s\n", e->message.c_str());
    return 2;
  }
  const auto rendered = std::get<sepal::api::jinja::Template>(parsed).render(context);
  if (auto* e = std::get_if<sepal::api::jinja::TemplateError>(&rendered)) {
    std::printf("render error: %s\n", e->message.c_str());
    return 3;
  }
  const std::string& text = std::get<std::string>(rendered);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

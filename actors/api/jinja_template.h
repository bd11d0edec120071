#pragma once
// A Jinja engine for chat templates: the language as transformers runs a tokenizer's
// chat_template (Jinja2's sandbox with trim_blocks and lstrip_blocks, the loopcontrols extension,
// tojson as Python's json.dumps, raise_exception and strftime_now), so that a model's own
// template writes its chats exactly as Hugging Face's apply_chat_template does.
//
// What it takes: text, {{ }}, {% %} and {# #} with - and + whitespace control; if / elif / else,
// for (tuple targets, an if filter, else, loop.index/index0/revindex/revindex0/first/last/
// length/previtem/nextitem/cycle), set (names, tuples, namespace attributes, blocks), macro and
// calls with keyword arguments and defaults, break and continue, generation (as plain text);
// expressions with Python's precedence, literals (strings with escapes, numbers, lists, tuples,
// dicts, true/false/none), attribute and item lookup, slices, conditional expressions; the
// filters and tests chat templates use (trim, tojson, length, join, selectattr, map, default,
// ..., defined, none, string, mapping, ...), string and dict methods (strip, split, startswith,
// items, get, ...) and the globals range, namespace, dict, raise_exception and strftime_now.
// A template using anything else fails to parse, with the reason: the caller can fall back.
//
// Limits (a template is outside input): 10 MiB of output and of any string, 10 million
// statements, loop iterations and calls, lists of at most 2^20 items, values and statements
// nesting at most 128 deep, no namespace inside a namespace (no cycles); going past one is a parse
// or render error, never a crash or hang.
//
// Thread-safety: a parsed template is immutable; render may run on several threads at once.

#include <memory>
#include <string>
#include <utility>
#include <variant>

#include <nlohmann/json.hpp>

#include "actors/api/jinja_value.h"

namespace sepal::api::jinja {

class Template {
 public:
  /// The template, or why it cannot be run ("line 3: unknown filter 'foo'").
  static std::variant<Template, TemplateError> parse(const std::string& source);

  /// The text, with `context`'s keys as variables (a JSON object; objects keep their key order),
  /// or the error that stopped it (raise_exception's message, a type error, a limit).
  std::variant<std::string, TemplateError> render(const nlohmann::ordered_json& context) const;

 private:
  struct Parsed;
  explicit Template(std::shared_ptr<const Parsed> parsed) : parsed_(std::move(parsed)) {}
  std::shared_ptr<const Parsed> parsed_;
};

}  // namespace sepal::api::jinja

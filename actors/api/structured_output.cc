#include "actors/api/structured_output.h"

#include <algorithm>

#include "actors/api/json_schema.h"

namespace sepal::api {

namespace {

using ojson = nlohmann::ordered_json;
using Symbols = std::vector<Grammar::Symbol>;

// The arguments of calls to `function`: what its `parameters` validate (any object without them).
Grammar::Rule arguments(JsonSchemaGrammar& json, const ojson& function, const std::string& at) {
  if (!function.contains("parameters")) return json.any_object();
  const ojson& parameters = function["parameters"];
  if (parameters.contains("type") && parameters["type"] != "object") {
    throw SchemaError{"at " + at + ": a function's parameters must be an object schema"};
  }
  if (parameters.empty() || (parameters.size() == 1 && parameters.contains("type"))) return json.any_object();
  try {
    return json.compile(parameters);
  } catch (const SchemaError& e) {
    throw SchemaError{at + ": " + e.message};
  }
}

}  // namespace

std::shared_ptr<const StructuredOutput> json_object_output() {
  static const std::shared_ptr<const StructuredOutput> output = [] {
    auto out = std::make_shared<StructuredOutput>();
    JsonSchemaGrammar json(out->grammar);
    out->start = out->grammar.new_rule();
    out->grammar.add(out->start, call(json.whitespace()) + call(json.any_object()));
    return out;
  }();
  return output;
}

std::variant<std::shared_ptr<const StructuredOutput>, std::string> json_schema_output(const ojson& schema) {
  auto out = std::make_shared<StructuredOutput>();
  try {
    JsonSchemaGrammar json(out->grammar);
    out->start = json.compile(schema);
  } catch (const SchemaError& e) {
    return e.message;
  }
  return std::shared_ptr<const StructuredOutput>(std::move(out));
}

std::variant<std::shared_ptr<const StructuredOutput>, std::string> forced_calls_output(
    ToolCallFormat format, const ojson& tools, const std::string& only, bool parallel, const CallMarkers& markers) {
  auto out = std::make_shared<StructuredOutput>();
  Grammar& g = out->grammar;
  // A Mistral special token: a marker where it decodes to nothing (written into the text by the
  // choice runner), else its text.
  const auto special = [&](const char* text, std::int32_t id) -> Symbols {
    if (id < 0) return g.literal(text);
    auto at = std::find(out->markers.begin(), out->markers.end(), id);
    if (at == out->markers.end()) at = out->markers.insert(at, id);
    const unsigned char byte = marker_byte(static_cast<std::size_t>(at - out->markers.begin()));
    return {g.bytes(ByteSet::range(byte, byte))};
  };
  try {
    JsonSchemaGrammar json(g);
    const bool v11 = format == ToolCallFormat::kMistral && markers.v11;
    const char* arguments_key = format == ToolCallFormat::kLlama3Json ? "parameters" : "arguments";
    const Symbols open_calls = calls_marker(format) ? special(calls_marker(format), markers.calls) : Symbols{};
    // One call of any function offered (or of the named one); the names as one trie, so that a
    // reader holds a way per next byte of a name, not one per function. v11 writes the name, an
    // optional [CALL_ID] and its id (where the vocabulary has the token), [ARGS] and the object.
    Symbols call_id;
    if (v11 && markers.call_id >= 0) {
      const Grammar::Rule alnum = g.new_rule();
      g.add(alnum, {g.bytes(ByteSet::range('a', 'z').add('A', 'Z').add('0', '9'))});
      const Grammar::Rule id = g.new_rule();
      g.add(id, {});
      g.add(id, special(kMistralCallId, markers.call_id) + call(g.repeat(alnum, 9, 9)));
      call_id = call(id);
    }
    std::vector<std::pair<std::string, Symbols>> named;
    const bool harmony = format == ToolCallFormat::kHarmony;
    if (harmony) parallel = false;  // a call ends the turn (<|call|>)
    for (std::size_t i = 0; i < tools.size(); ++i) {
      const ojson& function = tools[i]["function"];
      const std::string name = function["name"].get<std::string>();
      if (!only.empty() && name != only) continue;
      const Grammar::Rule args = arguments(json, function, "tools[" + std::to_string(i) + "].function.parameters");
      if (harmony) {  // the name, then the rest of the header and the arguments as the body
        named.emplace_back(name, g.literal(" ") + special("<|constrain|>", markers.constrain) + g.literal("json") +
                                     special("<|message|>", markers.message) + call(args));
      } else if (v11) {
        named.emplace_back(name, call_id + special(kMistralArgs, markers.args) + call(args));
      } else {
        named.emplace_back("{\"name\": " + ojson(name).dump() + ", \"" + arguments_key + "\": ", call(args) + g.literal("}"));
      }
    }
    if (named.empty()) return "no function named '" + only + "' is offered in 'tools'";
    const Grammar::Rule call_object = g.choice(named);
    Symbols one, separator;
    switch (format) {
      case ToolCallFormat::kHermes:
        one = g.literal("<tool_call>\n") + call(call_object) + g.literal("\n</tool_call>");
        separator = g.literal("\n");
        break;
      case ToolCallFormat::kLlama3Json:
        one = call(call_object);
        separator = g.literal("; ");
        break;
      case ToolCallFormat::kMistral:
        one = v11 ? open_calls + call(call_object) : call(call_object);
        separator = v11 ? Symbols{} : g.literal(", ");
        break;
      case ToolCallFormat::kGranite:
        one = call(call_object);
        separator = g.literal(", ");
        break;
      case ToolCallFormat::kHarmony:  // <|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}
        one = special("<|channel|>", markers.channel) + g.literal("commentary to=functions.") + call(call_object);
        break;
      case ToolCallFormat::kNone:
        return "this model's chat template teaches no call format";
    }
    const Grammar::Rule single = g.new_rule();
    g.add(single, one);
    Grammar::Rule calls = single;
    if (parallel) {  // one call, then any number more
      const Grammar::Rule more = g.new_rule();
      g.add(more, {});
      g.add(more, separator + call(single) + call(more));
      calls = g.new_rule();
      g.add(calls, call(single) + call(more));
    }
    out->start = g.new_rule();
    if ((format == ToolCallFormat::kMistral && !v11) || format == ToolCallFormat::kGranite) {  // the marker and a JSON array
      const Grammar::Rule space = g.new_rule();
      g.add(space, {});
      g.add(space, g.literal(" "));
      g.add(out->start, open_calls + call(space) + g.literal("[") + call(calls) + g.literal("]"));
    } else {
      g.add(out->start, call(calls));
    }
  } catch (const SchemaError& e) {
    return e.message;
  }
  return std::shared_ptr<const StructuredOutput>(std::move(out));
}

}  // namespace sepal::api

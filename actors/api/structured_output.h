#pragma once
// The grammars of the API's structured outputs (actors/api/grammar_constraint.h's
// StructuredOutput):
//   - `response_format: {"type": "json_object"}` (JSON mode): the reply is a JSON object, after
//     white space held as between its tokens;
//   - `response_format: {"type": "json_schema", ...}`: the reply is one JSON value the schema
//     validates (actors/api/json_schema.h says which schemas, and how);
//   - `tool_choice: "required"` or naming a function: the reply is calls, in the format the
//     model's template teaches (actors/api/tool_calls.h), of the offered functions (or the named
//     one), their arguments following each function's `parameters`; one call, or several where
//     parallel calls are allowed (harmony: one, a call ending the turn).
//
// Thread-safety: plain functions.

#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "actors/api/grammar_constraint.h"
#include "actors/api/tool_calls.h"

namespace sepal::api {

/// JSON mode's output (one, shared).
std::shared_ptr<const StructuredOutput> json_object_output();

/// The output for `schema`, or why it cannot be followed (actors/api/json_schema.h's SchemaError
/// message).
std::variant<std::shared_ptr<const StructuredOutput>, std::string> json_schema_output(const nlohmann::ordered_json& schema);

/// Mistral's special tokens for forced calls: the ids of [TOOL_CALLS], [ARGS] and [CALL_ID] where
/// they decode to nothing (the reply then writes the token: a marker of the output), or -1 (its
/// text is written, or the vocabulary has no [CALL_ID]).
struct CallMarkers {
  std::int32_t calls = -1, args = -1, call_id = -1;  ///< calls: [TOOL_CALLS] or Granite's <|tool_call|>
  /// The template writes calls as tokenizer v11 does (`[TOOL_CALLS]name[ARGS]{...}`, each call
  /// with its own [TOOL_CALLS]); else as a JSON array after one [TOOL_CALLS].
  bool v11 = false;
  std::int32_t channel = -1, constrain = -1, message = -1;  ///< harmony's <|channel|>, <|constrain|>, <|message|>
};

/// The output of forced calls in `format` to `tools` (the request's list, checked) or only to the
/// one named `only` (empty: any of them), several when `parallel`; Mistral's with `markers`.
std::variant<std::shared_ptr<const StructuredOutput>, std::string> forced_calls_output(
    ToolCallFormat format, const nlohmann::ordered_json& tools, const std::string& only, bool parallel,
    const CallMarkers& markers = {});

}  // namespace sepal::api

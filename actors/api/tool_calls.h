#pragma once
// Tool calls in a model's reply, in the format its chat template teaches it:
//   - Hermes (Qwen2.5, Qwen3, Hermes 2 and 3, and every template that writes <tool_call>): each
//     call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, with text around them;
//   - Llama 3 JSON (Llama 3.1 to 3.3 templates that ask for `{"name": function name,
//     "parameters": ...}`): the whole reply is one call, or several joined by ';', after an
//     optional <|python_tag|>;
//   - Mistral (templates that write [TOOL_CALLS]): text, then either
//     `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (Mistral 7B v0.3 and Nemo) or, from
//     Mistral's tokenizer v11 on (Mistral Small 3.1 and later, Devstral, Magistral), a call each
//     `[TOOL_CALLS]name[ARGS]{...}`, with `[CALL_ID]id` before [ARGS] in some. Both are read
//     whatever the template shows (models write the form they were trained on). [TOOL_CALLS],
//     [ARGS] and [CALL_ID] are special tokens, which decoded text leaves out: the choice runner
//     writes them into the reply's text when the model generates them for a request with tools
//     (without [ARGS], a v11 call's arguments start at its first '{'). Its templates take call
//     ids of 9 letters and digits, so these calls get such ids;
//   - Granite (IBM Granite 3 templates, which write <|tool_call|>): text, then
//     `<|tool_call|>[{"name": ..., "arguments": {...}}, ...]` (or one call) to the end.
//     <|tool_call|> is a special token, written into the text as Mistral's are;
//   - harmony (GPT-OSS): a message `<|channel|>commentary to=functions.NAME ...<|message|>{...}`
//     (actors/api/harmony.h).
// A reply whose calls do not parse, or name a function the request did not offer, is left as
// text: nothing the model wrote is dropped (vLLM's hermes and llama3_json parsers read the same
// formats).
//
// Thread-safety: plain functions and values; a ToolCallStream belongs to one generation.

#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sepal::api {

enum class ToolCallFormat { kNone, kHermes, kLlama3Json, kMistral, kGranite, kHarmony };

/// The text that opens Mistral's calls (a special token of its vocabulary).
inline constexpr const char* kMistralToolCalls = "[TOOL_CALLS]";
/// The special tokens between a v11 call's name and its arguments.
inline constexpr const char* kMistralArgs = "[ARGS]";
inline constexpr const char* kMistralCallId = "[CALL_ID]";
/// The special token that opens Granite's calls.
inline constexpr const char* kGraniteToolCall = "<|tool_call|>";
/// The special token that opens a format's list of calls ([TOOL_CALLS], <|tool_call|>), or null
/// for formats whose calls a special token does not open.
const char* calls_marker(ToolCallFormat format);

/// "hermes", "llama3_json", "mistral", "granite", "harmony", "none".
const char* tool_call_format_name(ToolCallFormat format);

/// The format a chat template's text teaches (kNone: it renders no tools, or in a format sepal
/// does not read).
ToolCallFormat tool_call_format_of(const std::string& template_text);

struct ToolCall {
  std::string id;         ///< "call_" and 24 letters and digits; Mistral: 9 letters and digits
  std::string name;
  std::string arguments;  ///< a JSON object's text, keys in the model's order
};

/// A reply split into its text and its calls.
struct ParsedReply {
  std::optional<std::string> content;  ///< none when only calls (and white space) remain
  std::vector<ToolCall> calls;
};

/// The calls in `text`, or none when it holds no call that parses with a name in `names`.
std::optional<ParsedReply> parse_tool_calls(ToolCallFormat format, const std::string& text,
                                            const std::set<std::string>& names);

/// A new call id in `format`'s form.
std::string new_tool_call_id(ToolCallFormat format = ToolCallFormat::kHermes);

/// A reply's calls as OpenAI's API lists them ({"id", "type": "function", "function": {"name",
/// "arguments"}}, with "index" when streamed); only the first when `parallel` is false.
nlohmann::json tool_calls_json(const std::vector<ToolCall>& calls, bool parallel, bool streamed);

/// The assistant message of a whole reply ({"role", "content", "refusal"}, and "tool_calls" with
/// "content" the text around them, or null, when it holds calls); `finish_reason` becomes
/// "tool_calls" then.
nlohmann::json assistant_message(ToolCallFormat format, const std::string& text, const std::set<std::string>& names,
                                 bool parallel, std::string& finish_reason);

/// The last delta of a streamed reply, from the text a ToolCallStream held: {"tool_calls", and
/// "content" when text remains around them} (`finish_reason` becoming "tool_calls"), or
/// {"content": held} when it holds no call.
nlohmann::json held_delta(ToolCallFormat format, const std::string& held, const std::set<std::string>& names,
                          bool parallel, std::string& finish_reason);

/// Streamed text split into what may be shown as content now and what may belong to calls,
/// held until the reply ends: for Hermes and Mistral, everything from the first <tool_call> or
/// [TOOL_CALLS] (and an end that could still become one); for Llama 3 JSON, the whole reply when its first character
/// other than white space is '{' or it starts with <|python_tag|>.
class ToolCallStream {
 public:
  explicit ToolCallStream(ToolCallFormat format) : format_(format) {}
  /// The next piece of the reply; returns the content that may be shown now.
  std::string push(const std::string& text);
  /// The text held back, for parse_tool_calls at the end of the reply.
  const std::string& held() const { return held_; }

 private:
  ToolCallFormat format_;
  std::string held_;
  bool in_calls_ = false;
};

}  // namespace sepal::api

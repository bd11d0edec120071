#pragma once
// The requests of the OpenAI-compatible API (`sepal serve-api`) as checked values, and its error
// shape. Parsing takes a request body as it came over HTTP and either gives a request every field
// of which is in range, or the error OpenAI's API would answer (HTTP status, type, message, the
// offending parameter).
//
// Thread-safety: plain functions and values.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/api/grammar_constraint.h"

namespace sepal::api {

/// An error as OpenAI's API answers it: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  ///< the request field at fault, or empty
  std::string code;   ///< e.g. "model_not_found", "invalid_api_key", or empty
};
/// The JSON body of an error reply.
nlohmann::json error_body(const ApiError& e);
/// A 400 invalid_request_error about `param`.
ApiError invalid(std::string message, std::string param = {});

struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(std::string r, std::string c) : role(std::move(r)), content(std::move(c)) {}

  std::string role;  ///< system, user, assistant, tool (developer counts as system)
  /// The text; empty for an assistant message sent with null content (one that only calls tools),
  /// as vLLM hands it to templates (Qwen3's fails on a null content).
  std::string content;
  std::string name;           ///< the participant's name, or empty
  /// An assistant's calls as the template sees them: [{"id", "type": "function", "function":
  /// {"name", "arguments": {...}}}], the arguments parsed from their JSON text (transformers'
  /// templates take them as a mapping); null when the message has none.
  nlohmann::ordered_json tool_calls;
  /// An assistant's reasoning as a reply gave it (reasoning_content, sent back as the chat goes
  /// on, or `thinking`, GPT-OSS's name); templates that write past thinking (Qwen3's) read it, and
  /// a harmony template as `thinking`. None when the message has none.
  std::optional<std::string> reasoning_content;
  std::string tool_call_id;  ///< tool: the call this message answers
};

/// What a completion or chat request asks for, checked.
struct CompletionRequest {
  bool chat = false;
  std::string model;
  /// Completions: the prompts (one per string; an array of token ids is one prompt).
  std::vector<std::string> prompts;
  std::vector<std::vector<std::int32_t>> prompt_ids;  ///< prompts given as token ids (then `prompts` is empty)
  std::vector<ChatMessage> messages;                  ///< chat
  std::optional<std::int64_t> max_tokens;             ///< none: completions 16, chat up to the context
  double temperature = 1.0;
  double top_p = 1.0;
  std::optional<std::uint64_t> seed;
  std::vector<std::string> stop;
  std::int64_t n = 1;
  bool stream = false;
  bool include_usage = false;  ///< stream_options.include_usage
  /// Log probabilities: none, or of the chosen token with this many alternatives (completions'
  /// `logprobs: k`; chat's `logprobs: true` with `top_logprobs: k`).
  std::optional<std::int64_t> logprobs;
  /// Logit changes before every choice (model/generation.h's LogitAdjustments): token id and
  /// added logit, each id once; penalties on the tokens generated so far.
  std::vector<std::pair<std::int32_t, float>> logit_bias;
  double presence_penalty = 0.0;
  double frequency_penalty = 0.0;
  /// Chat: the functions the model may call, as sent ([{"type": "function", "function": {"name",
  /// "description", "parameters"}}], keys in the request's order); null when none, or when
  /// tool_choice is "none" (the prompt then shows no tools and the reply is text).
  nlohmann::ordered_json tools;
  /// With tools: whether a reply may hold several calls (false: only its first is returned).
  bool parallel_tool_calls = true;
  /// With tools: tool_choice "required" (the reply is calls), or the name of the one function
  /// the reply must call (tool_choice {"type": "function", "function": {"name"}}); both empty
  /// and false for "auto".
  bool tool_required = false;
  std::string tool_forced;
  /// Chat: response_format {"type": "json_object"}: the reply is a JSON object (`structure` is
  /// then JSON mode's grammar).
  bool json_object = false;
  /// What the reply must follow: response_format json_object's or json_schema's grammar (set by
  /// parsing), or forced calls' (set by the server, which knows the model's call format)
  /// (actors/api/structured_output.h); null for none.
  std::shared_ptr<const StructuredOutput> structure;
  /// Chat: chat_template_kwargs (vLLM's and SGLang's extension): more variables for the chat
  /// template, such as Qwen3's enable_thinking; an object, none naming a variable the server sets.
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();
};

/// Bounds the server puts on a request.
struct RequestLimits {
  std::int64_t max_n = 8;
  std::int64_t max_stop = 4;             ///< stop strings (OpenAI's limit)
  std::int64_t max_prompts = 16;         ///< prompts in one completions request
  std::int64_t max_top_logprobs_completions = 5;
  std::int64_t max_top_logprobs_chat = 20;
  std::int64_t max_tools = 128;  ///< OpenAI's limit
  std::int64_t max_logit_bias = 1024;  ///< tokens in logit_bias
};

/// Parses a /v1/completions (chat false) or /v1/chat/completions (chat true) body.
std::variant<CompletionRequest, ApiError> parse_completion_request(const std::string& body, bool chat,
                                                                   const RequestLimits& limits);

}  // namespace sepal::api

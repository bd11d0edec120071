#include "actors/api/tool_calls.h"

#include "actors/api/harmony.h"

#include <algorithm>
#include <cstring>
#include <random>

namespace sepal::api {

namespace {

using ojson = nlohmann::ordered_json;

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";

bool blank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

std::string_view trim(std::string_view s) {
  const std::size_t first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

// One call from its JSON text: an object with a `name` the request offered and its arguments as
// an object under one of `argument_keys` (or that object's JSON text as a string).
std::optional<ToolCall> call_of(const ojson& j, const std::set<std::string>& names,
                                std::initializer_list<const char*> argument_keys, ToolCallFormat format) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return std::nullopt;
  ToolCall call{new_tool_call_id(format), j["name"].get<std::string>(), "{}"};
  if (!names.count(call.name)) return std::nullopt;
  for (const char* key : argument_keys) {
    if (!j.contains(key)) continue;
    ojson args = j[key];
    if (args.is_string()) args = ojson::parse(args.get<std::string>(), nullptr, false);
    if (!args.is_object()) return std::nullopt;
    call.arguments = args.dump(-1, ' ', false, ojson::error_handler_t::replace);
  }
  return call;
}

std::optional<ToolCall> call_of(std::string_view text, const std::set<std::string>& names,
                                std::initializer_list<const char*> argument_keys, ToolCallFormat format) {
  return call_of(ojson::parse(text, nullptr, /*allow_exceptions=*/false), names, argument_keys, format);
}

std::optional<ParsedReply> parse_hermes(const std::string& text, const std::set<std::string>& names) {
  ParsedReply reply;
  std::string content;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t open = text.find(kOpen, at);
    if (open == std::string::npos) break;
    content.append(text, at, open - at);
    const std::size_t body = open + kOpen.size();
    const std::size_t close = text.find(kClose, body);  // an unclosed call runs to the end (EOS came first)
    auto call = call_of(std::string_view(text).substr(body, (close == std::string::npos ? text.size() : close) - body),
                        names, {"arguments"}, ToolCallFormat::kHermes);
    if (!call) return std::nullopt;
    reply.calls.push_back(std::move(*call));
    at = close == std::string::npos ? text.size() : close + kClose.size();
  }
  if (reply.calls.empty()) return std::nullopt;
  if (at < text.size()) content.append(text, at);
  if (!blank(content)) reply.content = std::string(trim(content));
  return reply;
}

// Walks JSON text a character at a time: the bracket depth outside strings.
class JsonDepth {
 public:
  // Takes `c`; whether it stands outside a string (a quote that opens or closes one does not).
  bool step(char c) {
    if (in_string_) {
      if (escaped_) escaped_ = false;
      else if (c == '\\') escaped_ = true;
      else if (c == '"') in_string_ = false;
      return false;
    }
    if (c == '"') {
      in_string_ = true;
      return false;
    }
    if (c == '{' || c == '[') ++depth_;
    if (c == '}' || c == ']') --depth_;
    return true;
  }
  int depth() const { return depth_; }

 private:
  int depth_ = 0;
  bool in_string_ = false, escaped_ = false;
};

// Top-level pieces of `text` separated by ';' (outside JSON strings and brackets).
std::vector<std::string_view> split_calls(std::string_view text) {
  std::vector<std::string_view> pieces;
  JsonDepth json;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (json.step(text[i]) && text[i] == ';' && json.depth() == 0) {
      pieces.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  pieces.push_back(text.substr(start));
  return pieces;
}

std::optional<ParsedReply> parse_llama3(const std::string& text, const std::set<std::string>& names) {
  std::string_view rest = trim(text);
  if (rest.substr(0, kPythonTag.size()) == kPythonTag) rest = trim(rest.substr(kPythonTag.size()));
  if (rest.empty() || rest.front() != '{') return std::nullopt;
  ParsedReply reply;
  for (const std::string_view piece : split_calls(rest)) {
    if (blank(piece) && !reply.calls.empty()) continue;  // a trailing ';'
    auto call = call_of(trim(piece), names, {"parameters", "arguments"}, ToolCallFormat::kLlama3Json);
    if (!call) return std::nullopt;
    reply.calls.push_back(std::move(*call));
  }
  return reply;
}

// The length of the JSON object or array that `text` starts with (brackets outside strings
// balanced), or npos when it does not close.
std::size_t json_extent(std::string_view text) {
  JsonDepth json;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (json.step(text[i]) && (text[i] == '}' || text[i] == ']') && json.depth() == 0) return i + 1;
  }
  return std::string_view::npos;
}

// Mistral v11 calls: `name[CALL_ID]id[ARGS]{...}` after each [TOOL_CALLS] ([CALL_ID]id optional;
// [ARGS] too, the arguments then starting at the first '{'), nothing but white space after the
// last.
std::optional<ParsedReply> parse_mistral_v11(std::string_view calls, const std::set<std::string>& names) {
  const std::string_view marker = kMistralToolCalls, args = kMistralArgs, call_id = kMistralCallId;
  ParsedReply reply;
  while (!blank(calls)) {
    calls = trim(calls);
    if (calls.substr(0, marker.size()) == marker) calls.remove_prefix(marker.size());  // the next call's
    std::size_t name_end = std::min({calls.find(args), calls.find(call_id), calls.find('{')});
    if (name_end == std::string_view::npos) return std::nullopt;
    const std::string name(trim(calls.substr(0, name_end)));
    calls.remove_prefix(name_end);
    if (calls.substr(0, call_id.size()) == call_id) {
      const std::size_t id_end = std::min(calls.find(args), calls.find('{'));
      if (id_end == std::string_view::npos) return std::nullopt;
      calls.remove_prefix(id_end);
    }
    if (calls.substr(0, args.size()) == args) calls = trim(calls.substr(args.size()));
    const std::size_t extent = calls.empty() || calls.front() != '{' ? std::string_view::npos : json_extent(calls);
    if (extent == std::string_view::npos) return std::nullopt;
    const ojson arguments = ojson::parse(calls.substr(0, extent), nullptr, /*allow_exceptions=*/false);
    auto call = call_of(ojson{{"name", name}, {"arguments", arguments}}, names, {"arguments"}, ToolCallFormat::kMistral);
    if (!call) return std::nullopt;
    reply.calls.push_back(std::move(*call));
    calls.remove_prefix(extent);
  }
  if (reply.calls.empty()) return std::nullopt;
  return reply;
}

// Text, then the format's marker ([TOOL_CALLS], <|tool_call|>) and a JSON array of calls (or one
// call) to the end, or (Mistral) v11's calls.
std::optional<ParsedReply> parse_marked_list(ToolCallFormat format, const std::string& text, const std::set<std::string>& names) {
  const char* marker = calls_marker(format);
  const std::size_t open = text.find(marker);
  if (open == std::string::npos) return std::nullopt;
  const std::string_view calls = trim(std::string_view(text).substr(open + std::strlen(marker)));
  ParsedReply reply;
  if (!calls.empty() && (calls.front() == '[' || calls.front() == '{')) {
    const ojson j = ojson::parse(calls, nullptr, /*allow_exceptions=*/false);
    for (const ojson& one : j.is_array() ? j : ojson::array({j})) {
      auto call = call_of(one, names, {"arguments"}, format);
      if (!call) return std::nullopt;
      reply.calls.push_back(std::move(*call));
    }
  } else if (auto v11 = format == ToolCallFormat::kMistral ? parse_mistral_v11(calls, names) : std::nullopt) {
    reply = std::move(*v11);
  }
  if (reply.calls.empty()) return std::nullopt;
  if (!blank(std::string_view(text).substr(0, open))) reply.content = std::string(trim(std::string_view(text).substr(0, open)));
  return reply;
}

}  // namespace

const char* tool_call_format_name(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::kHermes:
      return "hermes";
    case ToolCallFormat::kLlama3Json:
      return "llama3_json";
    case ToolCallFormat::kMistral:
      return "mistral";
    case ToolCallFormat::kGranite:
      return "granite";
    case ToolCallFormat::kHarmony:
      return "harmony";
    case ToolCallFormat::kNone:
      break;
  }
  return "none";
}

const char* calls_marker(ToolCallFormat format) {
  return format == ToolCallFormat::kMistral ? kMistralToolCalls : format == ToolCallFormat::kGranite ? kGraniteToolCall : nullptr;
}

ToolCallFormat tool_call_format_of(const std::string& template_text) {
  if (template_text.find("tools") == std::string::npos) return ToolCallFormat::kNone;
  if (template_writes_harmony(template_text) && template_text.find("<|channel|>commentary") != std::string::npos &&
      template_text.find("functions") != std::string::npos) {
    return ToolCallFormat::kHarmony;
  }
  if (template_text.find(kOpen) != std::string::npos) return ToolCallFormat::kHermes;
  if (template_text.find(kMistralToolCalls) != std::string::npos) return ToolCallFormat::kMistral;
  if (template_text.find(kGraniteToolCall) != std::string::npos) return ToolCallFormat::kGranite;
  if (template_text.find("<|start_header_id|>") != std::string::npos &&
      template_text.find("\"parameters\"") != std::string::npos) {
    return ToolCallFormat::kLlama3Json;
  }
  return ToolCallFormat::kNone;
}

std::optional<ParsedReply> parse_tool_calls(ToolCallFormat format, const std::string& text,
                                            const std::set<std::string>& names) {
  switch (format) {
    case ToolCallFormat::kHermes:
      return parse_hermes(text, names);
    case ToolCallFormat::kLlama3Json:
      return parse_llama3(text, names);
    case ToolCallFormat::kMistral:
    case ToolCallFormat::kGranite:
      return parse_marked_list(format, text, names);
    case ToolCallFormat::kHarmony: {
      HarmonyReply reply = read_harmony(text, names);
      if (reply.calls.empty()) return std::nullopt;
      return ParsedReply{reply.content.empty() ? std::nullopt : std::optional<std::string>(reply.content), std::move(reply.calls)};
    }
    case ToolCallFormat::kNone:
      break;
  }
  return std::nullopt;
}

std::string new_tool_call_id(ToolCallFormat format) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 random{std::random_device{}()};
  const bool mistral = format == ToolCallFormat::kMistral;
  std::string id = mistral ? "" : "call_";
  for (int i = 0; i < (mistral ? 9 : 24); ++i) id += kAlphabet[random() % (sizeof(kAlphabet) - 1)];
  return id;
}

nlohmann::json tool_calls_json(const std::vector<ToolCall>& calls, bool parallel, bool streamed) {
  nlohmann::json out = nlohmann::json::array();
  for (std::size_t i = 0; i < calls.size() && (parallel || i == 0); ++i) {
    nlohmann::json call{{"id", calls[i].id}, {"type", "function"},
                        {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (streamed) call["index"] = i;
    out.push_back(std::move(call));
  }
  return out;
}

nlohmann::json assistant_message(ToolCallFormat format, const std::string& text, const std::set<std::string>& names,
                                 bool parallel, std::string& finish_reason) {
  nlohmann::json message{{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
  if (auto reply = parse_tool_calls(format, text, names)) {
    message["content"] = reply->content ? nlohmann::json(*reply->content) : nlohmann::json(nullptr);
    message["tool_calls"] = tool_calls_json(reply->calls, parallel, false);
    finish_reason = "tool_calls";
  }
  return message;
}

nlohmann::json held_delta(ToolCallFormat format, const std::string& held, const std::set<std::string>& names,
                          bool parallel, std::string& finish_reason) {
  auto reply = parse_tool_calls(format, held, names);
  if (!reply) return nlohmann::json{{"content", held}};
  nlohmann::json delta{{"tool_calls", tool_calls_json(reply->calls, parallel, true)}};
  if (reply->content) delta["content"] = *reply->content;
  finish_reason = "tool_calls";
  return delta;
}

std::string ToolCallStream::push(const std::string& text) {
  if (in_calls_) {
    held_ += text;
    return {};
  }
  held_ += text;
  if (format_ == ToolCallFormat::kLlama3Json) {
    const std::size_t first = held_.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) return {};  // white space so far: the reply may still be a call
    const std::string_view start = std::string_view(held_).substr(first);
    if (start.front() == '{' || start.substr(0, kPythonTag.size()) == kPythonTag) {
      in_calls_ = true;
      return {};
    }
    if (kPythonTag.substr(0, start.size()) == start) return {};  // a tag begun
    format_ = ToolCallFormat::kNone;  // plain text: shown as it comes from now on
  }
  if (format_ == ToolCallFormat::kHermes || calls_marker(format_)) {
    const std::string_view marker = format_ == ToolCallFormat::kHermes ? kOpen : std::string_view(calls_marker(format_));
    const std::size_t open = held_.find(marker);
    if (open != std::string::npos) {
      in_calls_ = true;
      std::string shown = held_.substr(0, open);
      held_.erase(0, open);
      return shown;
    }
    // Hold back an end that could still become the marker.
    std::size_t keep = 0;
    for (std::size_t n = std::min(held_.size(), marker.size() - 1); n > 0; --n) {
      if (std::string_view(held_).substr(held_.size() - n) == marker.substr(0, n)) {
        keep = n;
        break;
      }
    }
    std::string shown = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return shown;
  }
  std::string shown = std::move(held_);
  held_.clear();
  return shown;
}

}  // namespace sepal::api

#include "actors/api/harmony.h"

#include <algorithm>
#include <string_view>

#include <nlohmann/json.hpp>

namespace sepal::api {

namespace {

using ojson = nlohmann::ordered_json;

constexpr std::string_view kStart = "<|start|>", kChannel = "<|channel|>", kMessage = "<|message|>", kEnd = "<|end|>",
                           kCall = "<|call|>", kReturn = "<|return|>", kConstrain = "<|constrain|>";
// What a message's body ends at: its end, the turn's (<|call|>, <|return|>: EOS tokens, in the
// text where a model's EOS ids lack them), or a new message begun without an end.
constexpr std::string_view kBodyEnds[] = {kEnd, kCall, kReturn, kStart};
// What a header may begin with: the next message's start, its channel, or its recipient.
constexpr std::string_view kHeaderStarts[] = {kStart, kChannel, " to=", "to="};
// A header longer than this without <|message|> is not one.
constexpr std::size_t kMaxHeader = 512;

// The length of the longest end of `text` that begins `token` without being all of it.
std::size_t partial(std::string_view text, std::string_view token) {
  for (std::size_t n = std::min(text.size(), token.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == token.substr(0, n)) return n;
  }
  return 0;
}

// The word after `key` in a header (up to a space or a special token), or empty.
std::string word_after(std::string_view header, std::string_view key) {
  const std::size_t at = header.find(key);
  if (at == std::string_view::npos) return {};
  std::string_view rest = header.substr(at + key.size());
  const std::size_t end = std::min(rest.find(' '), rest.find("<|"));
  return std::string(rest.substr(0, end));
}

std::string_view trim(std::string_view s) {
  const std::size_t first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

}  // namespace

bool template_writes_harmony(const std::string& template_text) {
  return template_text.find(kChannel) != std::string::npos && template_text.find(kMessage) != std::string::npos &&
         template_text.find(kStart) != std::string::npos;
}

std::int32_t harmony_token_id(const Tokenizer& tokenizer, const char* text) {
  const std::int32_t id = tokenizer.token_id(text);
  return id >= 0 && tokenizer.token_bytes(id).empty() ? id : -1;
}

std::vector<std::pair<std::int32_t, const char*>> harmony_markers(const Tokenizer& tokenizer,
                                                                  std::span<const std::int32_t> eos_ids) {
  std::vector<std::pair<std::int32_t, const char*>> markers;
  for (const char* text : kHarmonyTokens) {
    const std::int32_t id = harmony_token_id(tokenizer, text);
    if (id >= 0 && std::find(eos_ids.begin(), eos_ids.end(), id) == eos_ids.end()) markers.emplace_back(id, text);
  }
  return markers;
}

void HarmonyStream::open_message(const std::string& header, Piece& out) {
  raw_header_ = header;
  const std::string channel = word_after(header, kChannel);
  const std::string recipient = word_after(header, "to=");
  call_body_.clear();
  if (!recipient.empty()) {
    const std::string_view prefix = "functions.";
    const bool offered = recipient.starts_with(prefix) && functions_.count(recipient.substr(prefix.size()));
    kind_ = offered ? Kind::kCall : Kind::kRaw;
    call_name_ = offered ? recipient.substr(prefix.size()) : std::string();
    if (kind_ == Kind::kRaw) out.content += header + std::string(kMessage);  // shown as written
    return;
  }
  if (channel == "analysis") {
    kind_ = Kind::kReasoning;
    thought_ = true;
  } else {
    kind_ = Kind::kContent;  // final, and commentary to no one (a preamble)
  }
}

void HarmonyStream::body(std::string_view text, Piece& out) {
  switch (kind_) {
    case Kind::kReasoning: out.reasoning += text; break;
    case Kind::kContent:
    case Kind::kRaw: out.content += text; break;
    case Kind::kCall: call_body_ += text; break;
  }
}

void HarmonyStream::close_message(Piece& out) {
  if (kind_ != Kind::kCall) return;
  const ojson args = ojson::parse(trim(call_body_), nullptr, /*allow_exceptions=*/false);
  if (args.is_object()) {
    calls_.push_back(ToolCall{new_tool_call_id(), call_name_, args.dump(-1, ' ', false, ojson::error_handler_t::replace)});
  } else {  // arguments that do not parse: the message as written
    out.content += raw_header_ + std::string(kMessage) + call_body_;
  }
  call_body_.clear();
}

HarmonyStream::Piece HarmonyStream::push(const std::string& text) {
  Piece out;
  held_ += text;
  while (!held_.empty()) {
    if (state_ == State::kPlain) {
      out.content += held_;
      held_.clear();
      break;
    }
    if (state_ == State::kHeader) {
      // A header begins one of the ways headers begin; until the text shows whether it does, it waits.
      const auto begins = [&](bool whole) {
        return std::any_of(std::begin(kHeaderStarts), std::end(kHeaderStarts),
                           [&](std::string_view s) { return whole ? held_.starts_with(s) : s.starts_with(held_); });
      };
      if (!begins(true)) {
        if (begins(false)) break;
        state_ = State::kPlain;  // not harmony: the rest is content
        continue;
      }
      const std::size_t message = held_.find(kMessage);
      if (message == std::string::npos) {
        if (held_.size() <= kMaxHeader) break;
        state_ = State::kPlain;  // no header is this long
        continue;
      }
      std::string header = held_.substr(0, message);
      held_.erase(0, message + kMessage.size());
      open_message(header, out);
      state_ = State::kBody;
      continue;
    }
    // A body: up to the first of its ends, holding back an end of text that may begin one.
    std::size_t end = std::string::npos;
    std::string_view which;
    for (std::string_view e : kBodyEnds) {
      const std::size_t at = held_.find(e);
      if (at < end) end = at, which = e;
    }
    if (end == std::string::npos) {
      std::size_t keep = 0;
      for (std::string_view e : kBodyEnds) keep = std::max(keep, partial(held_, e));
      body(std::string_view(held_).substr(0, held_.size() - keep), out);
      held_.erase(0, held_.size() - keep);
      break;
    }
    body(std::string_view(held_).substr(0, end), out);
    close_message(out);
    held_.erase(0, which == kStart ? end : end + which.size());  // a start opens the next header
    state_ = State::kHeader;
  }
  return out;
}

HarmonyStream::Piece HarmonyStream::finish() {
  Piece out;
  if (state_ == State::kBody) {
    body(held_, out);
    close_message(out);
  } else if (std::none_of(std::begin(kHeaderStarts), std::end(kHeaderStarts), [&](std::string_view s) { return held_.starts_with(s); })) {
    out.content += held_;  // text cut before it showed whether it begins a header
  }  // else a header cut before its body: structure, with nothing to show
  held_.clear();
  state_ = State::kHeader;
  return out;
}

HarmonyReply read_harmony(const std::string& text, const std::set<std::string>& functions) {
  HarmonyStream stream(functions);
  HarmonyStream::Piece a = stream.push(text);
  const HarmonyStream::Piece b = stream.finish();
  HarmonyReply out;
  if (stream.thought()) out.reasoning = a.reasoning + b.reasoning;
  out.content = a.content + b.content;
  out.calls = stream.calls();
  return out;
}

nlohmann::json harmony_message(const HarmonyReply& reply, bool parallel, std::string& finish_reason) {
  nlohmann::json message{{"role", "assistant"}, {"content", reply.content}, {"refusal", nullptr}};
  if (reply.reasoning) message["reasoning_content"] = *reply.reasoning;
  if (!reply.calls.empty()) {
    message["tool_calls"] = tool_calls_json(reply.calls, parallel, false);
    finish_reason = "tool_calls";
  }
  if (reply.content.empty() && (reply.reasoning || !reply.calls.empty())) message["content"] = nullptr;
  return message;
}

}  // namespace sepal::api

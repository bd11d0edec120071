#pragma once
// GPT-OSS's replies, in OpenAI's harmony format. A chat's prompt ends with `<|start|>assistant`;
// the reply is messages, each a header and a body:
//
//   <|channel|>analysis<|message|>{reasoning}<|end|>
//   <|start|>assistant<|channel|>final<|message|>{answer}            (then <|return|>, an EOS)
//   <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{args}
//                                                                      (then <|call|>, an EOS)
//
// (the recipient ` to=...` may also follow the role, before <|channel|>). serve-api returns the
// analysis messages as `reasoning_content`, the final messages (and commentary addressed to no
// one, the preambles a model writes before its calls) as `content`, and each message to
// `functions.NAME` of a function the request offered, with a JSON object as its body, as a tool
// call. A message to anything else (built-in tools the API does not offer), or a call whose
// arguments do not parse, stays in the content as the model wrote it; a reply that does not open
// with a header (JSON forced by a grammar) is all content. The special tokens are written into
// the reply's text by the choice runner (they decode to nothing).
//
// Thread-safety: plain functions and values; a HarmonyStream belongs to one generation.

#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/api/tool_calls.h"
#include "model/tokenizer.h"

namespace sepal::api {

/// Harmony's special tokens that a reply's text holds (written in by the choice runner).
inline constexpr const char* kHarmonyTokens[] = {"<|start|>", "<|channel|>", "<|message|>", "<|end|>",
                                                  "<|constrain|>", "<|call|>", "<|return|>"};

/// Whether a chat template writes harmony (its messages have channels).
bool template_writes_harmony(const std::string& template_text);

/// The id of harmony's special token `text` in `tokenizer` where it decodes to nothing (so that a
/// reply's text needs it written in), or -1.
std::int32_t harmony_token_id(const Tokenizer& tokenizer, const char* text);
/// Harmony's tokens to write into a reply's text, with their ids: those of kHarmonyTokens that
/// decode to nothing and are not among `eos_ids` (a turn's end that is the model's EOS ends the
/// reply rather than stands in it).
std::vector<std::pair<std::int32_t, const char*>> harmony_markers(const Tokenizer& tokenizer,
                                                                  std::span<const std::int32_t> eos_ids);

/// A harmony reply read as messages, in pieces as it comes: each push gives the reasoning and the
/// content that may be shown now, holding back a header until its <|message|>, a call until its
/// end, and an end of text that could still become a special token; finish() gives what was
/// held. The pieces of a reply join to the whole reply's parts.
class HarmonyStream {
 public:
  struct Piece {
    std::string reasoning, content;
  };
  /// `functions`: the names of the functions the request offered (none: no call is read).
  explicit HarmonyStream(std::set<std::string> functions) : functions_(std::move(functions)) {}
  Piece push(const std::string& text);
  Piece finish();
  /// The calls read so far (complete messages; all of them after finish()).
  const std::vector<ToolCall>& calls() const { return calls_; }
  /// Whether the reply has an analysis message (its reasoning, even empty, exists).
  bool thought() const { return thought_; }

 private:
  enum class State { kHeader, kBody, kPlain };
  enum class Kind { kReasoning, kContent, kCall, kRaw };
  void open_message(const std::string& header, Piece& out);
  void close_message(Piece& out);
  void body(std::string_view text, Piece& out);

  std::set<std::string> functions_;
  State state_ = State::kHeader;
  Kind kind_ = Kind::kContent;
  std::string held_;         // text not yet read: a header, or an end that may begin a token
  std::string raw_header_;   // the current message's header as written (for a message left as text)
  std::string call_name_, call_body_;
  std::vector<ToolCall> calls_;
  bool thought_ = false;
};

/// A whole reply read as HarmonyStream reads it.
struct HarmonyReply {
  std::optional<std::string> reasoning;  ///< none when the reply has no analysis message
  std::string content;
  std::vector<ToolCall> calls;
};
HarmonyReply read_harmony(const std::string& text, const std::set<std::string>& functions);

/// A whole reply's assistant message ({"role", "content", "refusal"}, "reasoning_content" when it
/// thought, "tool_calls" when it called; content null when only those came); `finish_reason`
/// becomes "tool_calls" when it called.
nlohmann::json harmony_message(const HarmonyReply& reply, bool parallel, std::string& finish_reason);

}  // namespace sepal::api

#pragma once
// Reasoning in a chat reply, as the templates of Qwen3, QwQ and DeepSeek-R1 teach it: the reply
// opens with `<think>` (or the prompt's generation prompt opened it already), thinks, and
// closes it with `</think>`; what follows is the answer. serve-api returns the thinking as the
// message's `reasoning_content` (the field vLLM, SGLang and DeepSeek's API use) and the answer as
// its `content`, from which tool calls are read; streamed, as `reasoning_content` deltas, then
// `content` ones. A reply cut off while thinking is all reasoning, with null content.
//
// Thread-safety: plain functions; a ReasoningStream belongs to one generation.

#include <optional>
#include <string>

namespace sepal::api {

/// Whether a chat template teaches thinking (it writes both `<think>` and `</think>`).
bool template_thinks(const std::string& template_text);

/// Whether a rendered prompt leaves the reply inside thinking: its last `<think>` comes after its
/// last `</think>` (DeepSeek-R1's generation prompt ends with `<think>\n`).
bool prompt_opens_thinking(const std::string& prompt);

/// A reply split into its reasoning (none when it does not think) and its answer (without the
/// white space that follows `</think>`).
struct ReasoningSplit {
  std::optional<std::string> reasoning;
  std::string content;
};

/// `text` split; `open`: the prompt opened thinking (prompt_opens_thinking). Otherwise the reply
/// thinks when its first characters other than white space are `<think>`.
ReasoningSplit split_reasoning(const std::string& text, bool open);

/// The same split over a reply that comes in pieces: each push gives the reasoning and the
/// content that may be shown now, holding back what could still become a tag; finish() gives what
/// was held. The pieces of a reply join to split_reasoning's parts.
class ReasoningStream {
 public:
  struct Piece {
    std::string reasoning, content;
  };
  explicit ReasoningStream(bool open) : state_(open ? State::kThinking : State::kStart) {}
  Piece push(const std::string& text);
  Piece finish();
  /// Whether the reply has thought (its reasoning, even empty, exists).
  bool thought() const { return state_ == State::kThinking || thought_; }

 private:
  enum class State { kStart, kThinking, kAnswer };
  State state_;
  std::string held_;
  bool thought_ = false;
  bool answer_started_ = false;  // white space after </think> is dropped until the answer starts
};

}  // namespace sepal::api

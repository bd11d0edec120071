#include "actors/api/reasoning.h"

#include <algorithm>
#include <string_view>

namespace sepal::api {

namespace {

constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";
constexpr std::string_view kSpace = " \t\r\n";

// The length of the longest end of `text` that begins `tag` (a tag that may be arriving).
std::size_t partial_tag(std::string_view text, std::string_view tag) {
  for (std::size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}

}  // namespace

bool template_thinks(const std::string& template_text) {
  return template_text.find(kOpen) != std::string::npos && template_text.find(kClose) != std::string::npos;
}

bool prompt_opens_thinking(const std::string& prompt) {
  const std::size_t open = prompt.rfind(kOpen);
  if (open == std::string::npos) return false;
  const std::size_t close = prompt.rfind(kClose);
  return close == std::string::npos || close < open;
}

ReasoningSplit split_reasoning(const std::string& text, bool open) {
  ReasoningStream stream(open);
  ReasoningStream::Piece a = stream.push(text);
  const ReasoningStream::Piece b = stream.finish();
  ReasoningSplit out;
  if (stream.thought()) out.reasoning = a.reasoning + b.reasoning;
  out.content = a.content + b.content;
  return out;
}

ReasoningStream::Piece ReasoningStream::push(const std::string& text) {
  Piece out;
  held_ += text;
  if (state_ == State::kStart) {
    const std::size_t first = held_.find_first_not_of(kSpace);
    if (first == std::string::npos) return out;  // white space so far: thinking may still open
    const std::string_view rest = std::string_view(held_).substr(first);
    if (rest.size() < kOpen.size() && kOpen.substr(0, rest.size()) == rest) return out;
    if (rest.substr(0, kOpen.size()) == kOpen) {
      state_ = State::kThinking;
      held_.erase(0, first + kOpen.size());
    } else {
      state_ = State::kAnswer;
      answer_started_ = true;  // a reply that does not think keeps its text as it is
    }
  }
  if (state_ == State::kThinking) {
    const std::size_t close = held_.find(kClose);
    if (close == std::string::npos) {
      const std::size_t keep = partial_tag(held_, kClose);
      out.reasoning = held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return out;
    }
    out.reasoning = held_.substr(0, close);
    held_.erase(0, close + kClose.size());
    state_ = State::kAnswer;
    thought_ = true;
  }
  if (!answer_started_) {
    const std::size_t first = held_.find_first_not_of(kSpace);
    if (first == std::string::npos) {
      held_.clear();
      return out;
    }
    held_.erase(0, first);
    answer_started_ = true;
  }
  out.content += held_;
  held_.clear();
  return out;
}

ReasoningStream::Piece ReasoningStream::finish() {
  Piece out;
  if (state_ == State::kThinking) out.reasoning = held_;
  else if (state_ == State::kStart) out.content = held_;  // white space only, or a partial "<think>"
  held_.clear();
  return out;
}

}  // namespace sepal::api

#include "actors/api/json_mode.h"

#include <algorithm>
#include <string>
#include <string_view>

namespace sepal::api {

char missing_json_token(const Tokenizer& tokenizer) {
  std::string found;
  for (std::int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
    std::string_view bytes = tokenizer.token_bytes(static_cast<std::int32_t>(id));
    if (bytes.size() == 2 && bytes[0] == ' ') bytes.remove_prefix(1);
    if (bytes.size() == 1) found += bytes[0];
  }
  for (const char c : {'{', '}', '"', ':', ','}) {
    if (found.find(c) == std::string::npos) return c;
  }
  return 0;
}

JsonObjectConstraint::JsonObjectConstraint(const Tokenizer& tokenizer, std::vector<std::int32_t> eos_ids, std::int64_t vocab)
    : tokenizer_(tokenizer), eos_ids_(std::move(eos_ids)), vocab_(std::min(vocab, tokenizer.vocab_size())) {}

void JsonObjectConstraint::allowed(std::vector<char>& allowed) const {
  if (text_.complete()) {
    for (const std::int32_t id : eos_ids_) {
      if (id >= 0 && static_cast<std::size_t>(id) < allowed.size()) allowed[static_cast<std::size_t>(id)] = 1;
    }
    return;
  }
  const auto n = std::min<std::int64_t>(vocab_, static_cast<std::int64_t>(allowed.size()));
  for (std::int64_t id = 0; id < n; ++id) {
    const std::string& bytes = tokenizer_.token_bytes(static_cast<std::int32_t>(id));
    if (bytes.empty()) continue;
    JsonPrefix next = text_;
    allowed[static_cast<std::size_t>(id)] = next.feed(bytes) ? 1 : 0;
  }
}

void JsonObjectConstraint::take(std::int32_t id) {
  if (id >= 0 && id < vocab_) (void)text_.feed(tokenizer_.token_bytes(id));
}

}  // namespace sepal::api

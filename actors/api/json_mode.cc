#include "actors/api/json_mode.h"

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

}  // namespace sepal::api

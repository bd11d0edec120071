#pragma once
// OpenAI's JSON mode (`response_format: {"type": "json_object"}`) as a grammar on the choices:
// a token may come next only when the reply's text with its bytes can still become a JSON object
// (actors/api/json_prefix.h); tokens that decode to nothing are refused until the object has
// closed, and then only an EOS may come. A reply cut short by max_tokens is an unclosed object.
//
// Thread-safety: one per generation.

#include <cstdint>
#include <vector>

#include "actors/api/json_prefix.h"
#include "model/generation.h"
#include "model/tokenizer.h"

namespace sepal::api {

/// The first of '{', '}', '"', ':' and ',' that no token of `tokenizer` writes alone (after at
/// most one space), or 0 when each has one: without them no JSON object can be written.
char missing_json_token(const Tokenizer& tokenizer);

class JsonObjectConstraint final : public TokenConstraint {
 public:
  /// For a model of `vocab` ids (ids past the tokenizer's are refused) that ends with `eos_ids`.
  JsonObjectConstraint(const Tokenizer& tokenizer, std::vector<std::int32_t> eos_ids, std::int64_t vocab);
  void allowed(std::vector<char>& allowed) const override;
  void take(std::int32_t id) override;

 private:
  const Tokenizer& tokenizer_;
  std::vector<std::int32_t> eos_ids_;
  std::int64_t vocab_;
  JsonPrefix text_;
};

}  // namespace sepal::api

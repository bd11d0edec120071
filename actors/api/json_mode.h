#pragma once
// What JSON mode (`response_format: {"type": "json_object"}`, actors/api/structured_output.h)
// needs of a vocabulary: tokens that write the bytes every object is made of.
//
// Thread-safety: a plain function.

#include "model/tokenizer.h"

namespace sepal::api {

/// The first of '{', '}', '"', ':' and ',' that no token of `tokenizer` writes alone (after at
/// most one space), or 0 when each has one: without them no JSON object can be written.
char missing_json_token(const Tokenizer& tokenizer);

}  // namespace sepal::api

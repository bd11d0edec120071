#pragma once
// Examples for prompt tuning and for scoring completions, read from a data file:
//   - JSON lines, each {"text": "..."} (every token scored) or {"prompt": "...", "completion":
//     "..."} (only the completion's tokens scored);
//   - or plain text, documents separated by blank lines (every token scored).
// A file is JSON lines when its first non-blank character is '{'.
//
// Thread-safety: plain functions over values.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/tokenizer.h"

namespace sepal {

/// One example: token ids (BOS first when the model has one) and which of them are scored (each
/// a target predicted from the ones before it; the first id never is).
struct Example {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> scored;
  /// Number of scored ids.
  std::int64_t scored_count() const;
};

/// Reads and tokenizes `file`, keeping at most `max_length` ids per example (the beginning).
/// A prompt and completion are encoded together, and the ids past as many as the prompt alone
/// encodes to are the completion's (a token across the boundary counts as the prompt's). Throws sepal::Error with the file and line for an unreadable file, a line that is
/// not such a JSON object, an example with nothing to score, or a file with no examples.
std::vector<Example> read_examples(const std::filesystem::path& file, const Tokenizer& tokenizer,
                                   const ModelConfig& config, std::int64_t max_length);

/// A 64-bit FNV-1a hash of the examples' ids and scored flags, as hex: a checkpoint keeps it to
/// refuse a resume on other data.
std::string examples_hash(const std::vector<Example>& examples);

}  // namespace sepal

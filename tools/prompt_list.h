#pragma once
// The prompts of `sepal generate`: the one given with --prompt, or many read from --prompts-file.
// A prompts file has one prompt per line: either plain text, or a JSON object
//   {"prompt": "...", "max_new_tokens": 64, "temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 7,
//    "presence_penalty": 0.5, "frequency_penalty": 0.5, "logit_bias": {"13": -100}}
// whose fields other than "prompt" are optional and default to the command line's values. Blank
// lines are skipped; a line that starts with '{' is JSON.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sepal::tools {

/// What to generate for one prompt.
struct PromptSpec {
  std::string text;
  std::int64_t max_new_tokens = 128;
  double temperature = 0.0;
  std::int64_t top_k = 0;
  double top_p = 1.0;
  std::uint64_t seed = 0;
  double presence_penalty = 0.0;   ///< model/generation.h's LogitAdjustments, in OpenAI's ranges
  double frequency_penalty = 0.0;
  std::vector<std::pair<std::int32_t, float>> logit_bias;
};

/// A logit bias given as "ID=BIAS" (--logit-bias); throws UsageError naming it when malformed.
std::pair<std::int32_t, float> parse_logit_bias(const std::string& text);

/// Throws UsageError naming the bad value: as a flag when `where` is empty, else as the JSON field
/// at `where` (file:line).
void check_prompt_spec(const PromptSpec& spec, const std::string& where);

/// The prompts of `path`, each starting from `defaults`. Throws UsageError naming the file and
/// line of a malformed one (bad JSON, an unknown field, a value out of range), or for a file that
/// cannot be read or holds no prompt.
std::vector<PromptSpec> read_prompts_file(const std::string& path, const PromptSpec& defaults);

}  // namespace sepal::tools

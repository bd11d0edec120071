#pragma once
// One choice of a completion: the prompt's ids through a session of the served model, sampled as
// the request says, with its text shown as it comes (stop strings held back and cut), and the
// log probabilities of the chosen tokens when asked.
//
// Thread-safety: run_choice runs on the calling thread (an HTTP worker's); the served model's
// parts are shared read-only, each choice opens its own session.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/api/chat_template.h"
#include "actors/api/grammar_constraint.h"
#include "actors/api/openai_request.h"
#include "actors/api/structured_output.h"
#include "model/generation.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/tokenizer.h"

namespace sepal::api {

/// A tuned prompt or adapters (`sepal tune`) served under a model id of their own.
struct ServedAdapter {
  std::string name;
  std::vector<float> soft_prompt;   ///< ptune's rows [N, hidden_size], or empty
  std::int64_t soft_prompt_at = 0;  ///< inserted before this prompt id (at most the prompt's length)
  /// A session of `capacity` positions with the adapter's deep prompts or block adapters.
  std::function<std::unique_ptr<BlockPipeline>(std::int64_t capacity)> open_session;
};

/// What the API serves: the client's side of a model, and sessions through its blocks.
struct ServedModel {
  std::string name;  ///< the id clients name in `model`
  const ModelConfig* config = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const ModelEnds* ends = nullptr;
  /// A session of `capacity` positions through every block, in this process or through a swarm;
  /// throws sepal::Error with the reason when none opens.
  std::function<std::unique_ptr<BlockPipeline>(std::int64_t capacity)> open_session;
  /// Generations take turns (blocks in this process use every core for one).
  bool one_at_a_time = false;
  ChatTemplate chat_template;
  /// The swarm's block map and recent changes (actors/api/status_page.h's "swarm"); empty for
  /// blocks in this process.
  std::function<nlohmann::json()> swarm_status;
  /// Tuned variants, each its own model id; sessions of different ones share the hosts.
  std::vector<ServedAdapter> adapters;
  /// The vocabulary as a trie, for structured outputs; null: built for each choice that needs it.
  std::shared_ptr<const VocabTrie> vocab_trie;
};

/// A chosen token's log probability (natural log, of the model's distribution before temperature
/// and filters) and the likeliest alternatives, likeliest first.
struct TokenLogprob {
  std::int32_t id = 0;
  double logprob = 0;
  std::vector<std::pair<std::int32_t, double>> top;
};

/// Text that may be shown now, and the tokens chosen since the last piece.
struct ChoiceDelta {
  std::string text;
  std::vector<TokenLogprob> tokens;
};

struct ChoiceResult {
  std::string text;
  std::vector<TokenLogprob> tokens;     ///< with logprobs: every chosen token but an EOS
  std::string finish_reason;            ///< "stop" (EOS or a stop string) or "length"
  std::int64_t completion_tokens = 0;   ///< ids generated, an EOS included
};

/// Thrown out of run_choice when `on_delta` returns false (the client is gone).
struct ClientGone {};

/// Mistral's special tokens, which the choice writes into the text for a request with tools (-1:
/// no tools, another format, a vocabulary without it or where it decodes as itself), and whether
/// the model's template writes v11's calls: what forced calls are written with.
CallMarkers call_markers(const ServedModel& model, const CompletionRequest& request);

/// The prompt ids of a request's prompt text (BOS first when the model has one).
std::vector<std::int32_t> prompt_ids_of(const ServedModel& model, const std::string& text);

/// Generates one choice for `prompt_ids` with up to `max_new_tokens` tokens and sampling seed
/// `seed`, through `adapter` (null: the base model); `on_delta` (may be empty) gets the text as it
/// may be shown and returns false to stop. The request's `structure` constrains the
/// tokens chosen (the vocabulary's trie, when the model has none, is built here). For a request with tools and a Mistral template, the
/// special tokens [TOOL_CALLS], [ARGS] and [CALL_ID] are written into the text (actors/api/tool_calls.h). Throws sepal::Error when no session opens or the swarm
/// fails, ClientGone as above.
ChoiceResult run_choice(const ServedModel& model, const ServedAdapter* adapter, const std::vector<std::int32_t>& prompt_ids,
                        const CompletionRequest& request, std::int64_t max_new_tokens, std::uint64_t seed,
                        const std::function<bool(const ChoiceDelta&)>& on_delta);

/// The positions a session of this prompt needs besides the prompt and the completion: the
/// adapter's soft prompt rows.
std::int64_t extra_positions(const ServedAdapter* adapter, const ModelConfig& config);

/// The most tokens a reply to a prompt taking `prompt_positions` positions (extra ones included)
/// may have when the request names no max_tokens: up to the end of the context; for a LongRoPE
/// model, up to the end of its original context while the prompt is within it, so that a short
/// conversation keeps the short factors, as Hugging Face's would (ModelConfig::long_rope_for).
std::int64_t default_max_tokens(const ModelConfig& config, std::int64_t prompt_positions);

/// The log probability of `id` under `logits` [vocab], with the `top` likeliest alternatives.
TokenLogprob token_logprob(const float* logits, std::int64_t vocab, std::int32_t id, std::int64_t top);

}  // namespace sepal::api

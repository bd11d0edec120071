#include "actors/api/choice_runner.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "actors/api/harmony.h"
#include "actors/api/stop_strings.h"
#include "kernels/error.h"
#include "kernels/softmax.h"

namespace sepal::api {

namespace {
// Unwinds generate() once a stop string matched.
struct Stopped {};
}  // namespace

std::vector<std::int32_t> prompt_ids_of(const ServedModel& model, const std::string& text) {
  std::vector<std::int32_t> ids;
  if (model.config->bos_token_id >= 0) ids.push_back(model.config->bos_token_id);
  for (const std::int32_t id : encode_for_model(*model.tokenizer, text, model.config->vocab_size)) ids.push_back(id);
  return ids;
}

TokenLogprob token_logprob(const float* logits, std::int64_t vocab, std::int32_t id, std::int64_t top) {
  const double log_sum = log_sum_exp(logits, vocab);
  TokenLogprob t;
  t.id = id;
  t.logprob = static_cast<double>(logits[id]) - log_sum;
  if (top > 0) {
    std::vector<std::int32_t> order(static_cast<std::size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    const auto k = static_cast<std::ptrdiff_t>(std::min(top, vocab));
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](std::int32_t a, std::int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (std::ptrdiff_t i = 0; i < k; ++i) t.top.emplace_back(order[i], static_cast<double>(logits[order[i]]) - log_sum);
  }
  return t;
}

std::int64_t extra_positions(const ServedAdapter* adapter, const ModelConfig& config) {
  return adapter ? static_cast<std::int64_t>(adapter->soft_prompt.size()) / config.hidden_size : 0;
}

namespace {

// The id of special token `text` when a request with tools for a Mistral or Granite template
// needs it written into the reply's text (it decodes to nothing), or -1.
std::int32_t special_marker(const ServedModel& model, const CompletionRequest& request, const char* text) {
  if (request.tools.is_null() || !text || !calls_marker(model.chat_template.tool_format)) return -1;
  const std::int32_t id = model.tokenizer->token_id(text);
  if (id >= 0 && !model.tokenizer->token_bytes(id).empty()) return -1;  // it decodes as itself
  return id;
}

}  // namespace

std::int64_t default_max_tokens(const ModelConfig& config, std::int64_t prompt_positions) {
  std::int64_t end = config.max_position_embeddings;
  if (config.long_rope_for(end)) {
    const auto original = static_cast<std::int64_t>(config.rope_scaling.original_max_position_embeddings);
    if (prompt_positions < original) end = original;
  }
  return end - prompt_positions;
}

CallMarkers call_markers(const ServedModel& model, const CompletionRequest& request) {
  const bool mistral = model.chat_template.tool_format == ToolCallFormat::kMistral;
  CallMarkers m{special_marker(model, request, calls_marker(model.chat_template.tool_format)),
                mistral ? special_marker(model, request, kMistralArgs) : -1,
                mistral ? special_marker(model, request, kMistralCallId) : -1, model.chat_template.mistral_v11};
  if (model.chat_template.harmony) {
    m.channel = harmony_token_id(*model.tokenizer, "<|channel|>");
    m.constrain = harmony_token_id(*model.tokenizer, "<|constrain|>");
    m.message = harmony_token_id(*model.tokenizer, "<|message|>");
  }
  return m;
}

ChoiceResult run_choice(const ServedModel& model, const ServedAdapter* adapter, const std::vector<std::int32_t>& prompt_ids,
                        const CompletionRequest& request, std::int64_t max_new_tokens, std::uint64_t seed,
                        const std::function<bool(const ChoiceDelta&)>& on_delta) {
  const ModelConfig& config = *model.config;
  GenerationRequest g;
  g.prompt_ids = prompt_ids;
  g.max_new_tokens = max_new_tokens;
  g.sampling = SamplingParams{static_cast<float>(request.temperature), 0, static_cast<float>(request.top_p)};
  g.adjustments = LogitAdjustments{request.logit_bias, static_cast<float>(request.presence_penalty),
                                   static_cast<float>(request.frequency_penalty)};
  g.seed = seed;
  if (adapter) {  // as `sepal generate --adapter` puts it
    g.soft_prompt = adapter->soft_prompt;
    g.soft_prompt_at = std::min<std::int64_t>(adapter->soft_prompt_at, static_cast<std::int64_t>(prompt_ids.size()));
  }
  std::shared_ptr<const VocabTrie> trie;
  std::optional<GrammarConstraint> structure;
  if (request.structure) {
    trie = model.vocab_trie ? model.vocab_trie : std::make_shared<const VocabTrie>(*model.tokenizer, config.vocab_size);
    structure.emplace(*request.structure, *trie, config.eos_token_ids);
    g.constraint = &*structure;
  }
  const std::int64_t capacity = session_capacity(config, g);
  std::unique_ptr<BlockPipeline> session = adapter ? adapter->open_session(capacity) : model.open_session(capacity);

  // The text continues the prompt's: the stream first takes the prompt's ids (a leading space of
  // the reply is kept, as in the text `sepal generate` prints).
  TextStream stream(*model.tokenizer);
  for (const std::int32_t id : prompt_ids) (void)stream.push(id);
  StopStrings stops(request.stop);
  ChoiceResult result;
  ChoiceDelta pending;
  const auto show = [&](const std::string& text) {
    const std::string shown = stops.push(text);
    result.text += shown;
    pending.text += shown;
    if (on_delta && (!pending.text.empty() || stops.stopped())) {
      if (!on_delta(pending)) throw ClientGone{};
      pending = {};
    }
    if (stops.stopped()) throw Stopped{};
  };
  const auto is_eos = [&](std::int32_t id) {
    return std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) != config.eos_token_ids.end();
  };
  ChoiceObserver observe;
  if (request.logprobs) {
    observe = [&](std::int32_t id, const float* logits) {
      if (is_eos(id)) return;
      TokenLogprob t = token_logprob(logits, config.vocab_size, id, *request.logprobs);
      result.tokens.push_back(t);
      pending.tokens.push_back(std::move(t));
    };
  }
  // Mistral's and Granite's calls are marked with special tokens, which decode to nothing: with
  // tools, they are written into the text, where the reply's calls are read from.
  std::vector<std::pair<std::int32_t, const char*>> markers;
  const bool mistral = model.chat_template.tool_format == ToolCallFormat::kMistral;
  for (const char* text : {calls_marker(model.chat_template.tool_format), mistral ? kMistralArgs : nullptr,
                           mistral ? kMistralCallId : nullptr}) {
    if (const std::int32_t id = special_marker(model, request, text); id >= 0) markers.emplace_back(id, text);
  }
  // Harmony's messages are headed by special tokens, written into every chat reply's text (the
  // turn's ends, <|call|> and <|return|>, where they are not the model's EOS ids).
  if (model.chat_template.harmony && request.chat) {
    for (const auto& marker : harmony_markers(*model.tokenizer, config.eos_token_ids)) markers.push_back(marker);
  }
  bool stopped = false;
  GenerationResult generated;
  std::int64_t count = 0;
  try {
    generated = generate(*model.ends, *session, g, [&](std::int32_t id) {
      ++count;
      const auto marker = std::find_if(markers.begin(), markers.end(), [id](const auto& m) { return m.first == id; });
      if (marker != markers.end()) show(marker->second);
      else if (id < model.tokenizer->vocab_size()) show(stream.push(id));
    }, nullptr, observe);
    show(stream.finish());
    const std::string rest = stops.finish();
    result.text += rest;
    pending.text += rest;
  } catch (const Stopped&) {
    stopped = true;
  }
  result.completion_tokens = stopped ? count : static_cast<std::int64_t>(generated.generated_ids.size());
  result.finish_reason = stopped || generated.stop == StopReason::kEos ? "stop" : "length";
  if (on_delta && (!pending.text.empty() || !pending.tokens.empty())) {
    if (!on_delta(pending)) throw ClientGone{};
  }
  return result;
}

}  // namespace sepal::api

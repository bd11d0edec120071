#include "model/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "kernels/error.h"

namespace sepal {
namespace {

// Long prompts go through the blocks in chunks so that scratch memory stays bounded.
constexpr std::int64_t kPromptChunk = 512;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

LocalPipeline::LocalPipeline(const BlockStack& blocks, std::int64_t capacity, const DeepPrompts* prompts,
                             const BlockAdapters* adapters)
    : blocks_(blocks), cache_(blocks.new_cache(capacity)), adapters_(adapters) {
  SEPAL_CHECK(blocks.first() == 0 && blocks.last() == blocks.config().num_layers,
              "a local pipeline needs every block of the model");
  if (prompts && prompts->count > 0) {
    prompt_values_.assign(prompts->values, prompts->values + blocks.last() * prompts->count * blocks.config().hidden_size);
    prompts_ = DeepPrompts{prompt_values_.data(), prompts->count, prompts->offset};
  }
}

void LocalPipeline::forward(float* hidden, std::int64_t n) {
  blocks_.forward(hidden, n, cache_, 0, prompts_ ? &*prompts_ : nullptr, adapters_);
}

void BlockPipeline::forward_tree(float*, std::int64_t, std::span<const std::int32_t>) {
  fail("this pipeline does not run token trees (speculative decoding)");
}

void BlockPipeline::keep_path(std::span<const std::int32_t>) {
  fail("this pipeline does not run token trees (speculative decoding)");
}

void LocalPipeline::forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents) {
  if (prompts_ && cache_.length() < prompts_->offset + prompts_->count) {
    fail("a token tree cannot start inside the deep prompts' positions");
  }
  if (n != static_cast<std::int64_t>(parents.size())) fail("a tree step of ", n, " rows has ", parents.size(), " parents");
  blocks_.forward_tree(hidden, n, parents, cache_, 0, adapters_);
}

void LocalPipeline::keep_path(std::span<const std::int32_t> path) { cache_.keep_path(path); }

// Rows of the soft prompt, if any.
std::int64_t soft_rows(const ModelConfig& config, const GenerationRequest& request) {
  const auto values = static_cast<std::int64_t>(request.soft_prompt.size());
  if (values % config.hidden_size != 0) fail("a soft prompt of ", values, " values is not whole rows of ", config.hidden_size);
  if (request.soft_prompt_at < 0 || request.soft_prompt_at > static_cast<std::int64_t>(request.prompt_ids.size())) {
    fail("the soft prompt's place ", request.soft_prompt_at, " is outside the prompt");
  }
  return values / config.hidden_size;
}

std::int64_t session_capacity(const ModelConfig& config, const GenerationRequest& request) {
  const auto prompt = static_cast<std::int64_t>(request.prompt_ids.size()) + soft_rows(config, request);
  if (prompt > config.max_position_embeddings) {
    fail("the prompt has ", prompt, " tokens, more than the model's max_position_embeddings (",
         config.max_position_embeddings, ")");
  }
  return std::min(config.max_position_embeddings, prompt + std::max<std::int64_t>(request.max_new_tokens, 1));
}

GenerationResult generate(const ModelEnds& ends, BlockPipeline& pipeline,
                          const GenerationRequest& request,
                          const std::function<void(std::int32_t)>& on_token,
                          const Speculation* speculation, const ChoiceObserver& on_choice) {
  const ModelConfig& config = ends.config();
  if (request.prompt_ids.empty()) fail("the prompt has no tokens");
  const std::int64_t capacity = session_capacity(config, request);
  const std::int64_t hidden_size = config.hidden_size;
  // The prompt's input rows: the ids' embeddings with the soft prompt's rows among them.
  const std::int64_t soft = soft_rows(config, request), at = request.soft_prompt_at;
  const auto prompt = static_cast<std::int64_t>(request.prompt_ids.size()) + soft;
  std::vector<float> prompt_rows(static_cast<std::size_t>(prompt * hidden_size));
  ends.embed(request.prompt_ids.data(), at, prompt_rows.data());
  std::copy(request.soft_prompt.begin(), request.soft_prompt.end(), prompt_rows.begin() + at * hidden_size);
  ends.embed(request.prompt_ids.data() + at, static_cast<std::int64_t>(request.prompt_ids.size()) - at,
             prompt_rows.data() + (at + soft) * hidden_size);

  for (const auto& [id, bias] : request.adjustments.bias) {
    if (id < 0 || id >= config.vocab_size) fail("a logit bias names token ", id, ", outside the vocabulary of ", config.vocab_size);
    if (!std::isfinite(bias)) fail("the logit bias of token ", id, " is not a finite number");
  }
  GenerationResult result;
  if (request.max_new_tokens <= 0) return result;
  Rng rng(request.seed);
  // The logits a choice is made from: the model's, or a copy with the request's adjustments.
  std::unordered_map<std::int32_t, std::int64_t> generated_counts;
  std::vector<float> adjusted;
  std::vector<char> allowed;
  const auto choice_logits = [&](const float* model_logits) -> const float* {
    const LogitAdjustments& a = request.adjustments;
    if (a.empty() && !request.constraint) return model_logits;
    adjusted.assign(model_logits, model_logits + config.vocab_size);
    for (const auto& [id, bias] : a.bias) adjusted[static_cast<std::size_t>(id)] += bias;
    for (const auto& [id, count] : generated_counts) {
      adjusted[static_cast<std::size_t>(id)] -= a.presence_penalty + a.frequency_penalty * static_cast<float>(count);
    }
    if (request.constraint) {
      allowed.assign(static_cast<std::size_t>(config.vocab_size), 0);
      request.constraint->allowed(allowed);
      bool any = false;
      for (std::size_t id = 0; id < allowed.size(); ++id) {
        if (allowed[id]) any = true;
        else adjusted[id] = -std::numeric_limits<float>::infinity();
      }
      if (!any) fail("the reply's grammar allows no token here");
    }
    return adjusted.data();
  };
  std::vector<float> logits(static_cast<std::size_t>(config.vocab_size));
  std::vector<float> hidden;

  auto start = std::chrono::steady_clock::now();
  for (std::int64_t offset = 0; offset < prompt; offset += kPromptChunk) {
    const std::int64_t n = std::min(kPromptChunk, prompt - offset);
    hidden.assign(prompt_rows.begin() + offset * hidden_size, prompt_rows.begin() + (offset + n) * hidden_size);
    pipeline.forward(hidden.data(), n);
    if (offset + n == prompt) ends.logits_of_row(hidden.data() + (n - 1) * hidden_size, logits.data());
  }

  auto is_eos = [&](std::int32_t id) {
    return std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) !=
           config.eos_token_ids.end();
  };
  // Takes a chosen token; whether generation goes on, given the positions the session would hold
  // once that token's predecessor is in it.
  auto take = [&](std::int32_t token, std::int64_t length, const float* chosen_from) {
    result.generated_ids.push_back(token);
    if (!request.adjustments.empty()) ++generated_counts[token];
    if (request.constraint) request.constraint->take(token);
    if (result.generated_ids.size() == 1) {
      result.prompt_seconds = seconds_since(start);
      start = std::chrono::steady_clock::now();
    }
    if (on_choice) on_choice(token, chosen_from);
    on_token(token);
    if (is_eos(token)) {
      result.stop = StopReason::kEos;
      return false;
    }
    if (static_cast<std::int64_t>(result.generated_ids.size()) >= request.max_new_tokens) {
      result.stop = StopReason::kMaxNewTokens;
      return false;
    }
    if (length >= capacity) {
      result.stop = StopReason::kMaxPositions;
      return false;
    }
    return true;
  };
  std::int32_t token = sample_token(choice_logits(logits.data()), config.vocab_size, request.sampling, rng);
  if (speculation) {
    if (!speculation->draft) fail("speculative decoding needs a draft");
    if (speculation->tree_size < 1) fail("the tree size must be at least 1");
    if (!pipeline.runs_trees()) fail("this pipeline does not run token trees (speculative decoding)");
    speculation->draft->start(request.prompt_ids);
    std::vector<std::int32_t> path;
    std::vector<float> tree_logits;
    bool going = take(token, pipeline.length(), logits.data());
    while (going) {
      const std::int64_t length = pipeline.length();
      const auto draft_start = std::chrono::steady_clock::now();
      const TokenTree tree = speculation->draft->propose(token, std::min(speculation->tree_size, capacity - length));
      result.draft_seconds += seconds_since(draft_start);
      const std::int64_t n = tree.size();
      if (n < 1 || tree.tokens[0] != token || static_cast<std::int64_t>(tree.parents.size()) != n) fail("the draft proposed a malformed tree");
      hidden.resize(static_cast<std::size_t>(n * hidden_size));
      ends.embed(tree.tokens.data(), n, hidden.data());
      const auto hint_start = std::chrono::steady_clock::now();
      speculation->draft->verifying(tree);
      result.draft_seconds += seconds_since(hint_start);
      pipeline.forward_tree(hidden.data(), n, tree.parents);
      tree_logits.resize(static_cast<std::size_t>(n * config.vocab_size));
      ends.logits_each_alone(hidden.data(), n, tree_logits.data());
      const std::vector<std::int64_t> depth = tree.depths();
      std::int32_t node = 0;
      while (true) {
        const float* at = tree_logits.data() + node * config.vocab_size;
        const float* from = choice_logits(at);
        token = speculation->choose ? speculation->choose(from, config.vocab_size, tree, node, request.sampling, rng)
                                    : sample_token(from, config.vocab_size, request.sampling, rng);
        going = take(token, length + depth[static_cast<std::size_t>(node)] + 1, at);
        const std::int32_t next = going ? tree.child(node, token) : -1;
        if (next < 0) break;
        node = next;
      }
      const auto yielded = static_cast<std::size_t>(depth[static_cast<std::size_t>(node)] + 1);
      if (result.tokens_per_step.size() <= yielded) result.tokens_per_step.resize(yielded + 1, 0);
      ++result.tokens_per_step[yielded];
      if (!going) break;
      path.assign(yielded, 0);
      for (std::int32_t i = node, k = static_cast<std::int32_t>(yielded) - 1; i >= 0; i = tree.parents[static_cast<std::size_t>(i)], --k) {
        path[static_cast<std::size_t>(k)] = i;
      }
      pipeline.keep_path(path);
      const auto keep_start = std::chrono::steady_clock::now();
      speculation->draft->keep(path);
      result.draft_seconds += seconds_since(keep_start);
    }
  } else {
    hidden.resize(static_cast<std::size_t>(hidden_size));
    // Batched with other generations' rows, in step with them.
    const auto member = ends.join_head_batches();
    while (take(token, pipeline.length(), logits.data())) {
      ends.embed(&token, 1, hidden.data());
      pipeline.forward(hidden.data(), 1);
      ends.logits_of_row(hidden.data(), logits.data(), member.get());
      token = sample_token(choice_logits(logits.data()), config.vocab_size, request.sampling, rng);
    }
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace sepal

#pragma once
// The generation loop: prompt ids in, sampled ids out, with the blocks behind an interface so
// that the same loop drives one process or a pipeline of hosts.
//
// Thread-safety: generate() runs on the calling thread; a pipeline belongs to one generation.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "kernels/sampling.h"
#include "model/block_stack.h"
#include "model/draft_source.h"
#include "model/model_ends.h"
#include "model/token_tree.h"

namespace sepal {

/// All blocks of a model, for one inference session: hidden states in, hidden states out.
class BlockPipeline {
 public:
  virtual ~BlockPipeline() = default;
  /// Runs hidden[n, hidden_size] through every block, in place, as the session's next n positions.
  virtual void forward(float* hidden, std::int64_t n) = 0;
  /// Positions the session holds so far.
  virtual std::int64_t length() const = 0;

  // ---- token trees (speculative decoding) ----
  /// Whether forward_tree and keep_path work.
  virtual bool runs_trees() const { return false; }
  /// Runs hidden[n, hidden_size], the nodes of a token tree (`parents` as in
  /// BlockStack::forward_tree; n == parents.size()), through every block in place, after the
  /// session's sequence; the length does not change. Throws sepal::Error where trees do not run.
  virtual void forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents);
  /// Keeps `path` of the last tree (node indices from the root, each the parent of the next) as
  /// the session's next positions and forgets the rest.
  virtual void keep_path(std::span<const std::int32_t> path);
};

/// A pipeline over blocks held in this process.
class LocalPipeline final : public BlockPipeline {
 public:
  /// A session of up to `capacity` positions over `blocks`, which must cover the whole model,
  /// with deep prompts for every block (copied; none when null) and adapters (not copied: they
  /// must outlive the pipeline; none when null).
  LocalPipeline(const BlockStack& blocks, std::int64_t capacity, const DeepPrompts* prompts = nullptr,
                const BlockAdapters* adapters = nullptr);
  void forward(float* hidden, std::int64_t n) override;
  std::int64_t length() const override { return cache_.length(); }
  bool runs_trees() const override { return true; }
  void forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents) override;
  void keep_path(std::span<const std::int32_t> path) override;

 private:
  const BlockStack& blocks_;
  KvCache cache_;
  std::vector<float> prompt_values_;
  std::optional<DeepPrompts> prompts_;
  const BlockAdapters* adapters_ = nullptr;
};

/// Changes to the logits before each choice, as OpenAI's API defines them: `bias[id]` added to
/// that token's logit, and for every token already generated in this request (the prompt does
/// not count), `presence_penalty` subtracted once and `frequency_penalty` once per time it was
/// generated. Log probabilities reported to a ChoiceObserver stay the model's own.
struct LogitAdjustments {
  std::vector<std::pair<std::int32_t, float>> bias;  ///< (token id, added logit)
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  bool empty() const { return bias.empty() && presence_penalty == 0.0f && frequency_penalty == 0.0f; }
};

/// A grammar the reply must follow (JSON mode): which ids may come next, and each id chosen.
class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  /// Sets allowed[id] (sized to the vocabulary, all 0 on the way in) for every id that may come
  /// next.
  virtual void allowed(std::vector<char>& allowed) const = 0;
  /// Follows a chosen id.
  virtual void take(std::int32_t id) = 0;
};

/// What to generate.
struct GenerationRequest {
  std::vector<std::int32_t> prompt_ids;  ///< non-empty; BOS first when the model has one
  /// A trained soft prompt: rows [N, hidden_size] inserted before prompt_ids[soft_prompt_at]
  /// (model/prompt_tuning.h); empty for none. The session then holds N more positions.
  std::vector<float> soft_prompt;
  std::int64_t soft_prompt_at = 0;
  std::int64_t max_new_tokens = 0;
  SamplingParams sampling;
  LogitAdjustments adjustments;  ///< applied to every choice, greedy ones included
  std::uint64_t seed = 0;
  /// Every choice is among the ids it allows (after the adjustments; the others' logits become
  /// -inf); none: any id. Not owned. A constraint that allows no id ends generation with an error.
  TokenConstraint* constraint = nullptr;
};

/// The token a verified tree's node chooses, given the target's logits there: by default
/// sample_token (greedy or sampled as the request says, one draw of the generator), which keeps
/// the text exactly that of decoding without a draft. Tests put wrong choosers here.
using TreeTokenChooser = std::function<std::int32_t(const float* logits, std::int64_t vocab, const TokenTree& tree,
                                                    std::int32_t node, const SamplingParams& sampling, Rng& rng)>;

/// Speculative decoding (staged tree verification): after each token chosen, `draft` proposes a
/// tree of up to tree_size nodes rooted at it, the pipeline runs the whole tree in one step, and
/// the walk from the root chooses each next token from the target's logits at the node reached,
/// going on while the choice is a child in the tree: one step yields one token or more.
struct Speculation {
  DraftSource* draft = nullptr;  ///< not owned
  std::int64_t tree_size = 16;
  TreeTokenChooser choose;       ///< empty: sample_token
};

/// Why generation stopped.
enum class StopReason { kEos, kMaxNewTokens, kMaxPositions };

/// What was generated, with timings.
struct GenerationResult {
  std::vector<std::int32_t> generated_ids;  ///< includes the EOS when one was produced
  StopReason stop = StopReason::kMaxNewTokens;
  double prompt_seconds = 0.0;  ///< prompt forward pass and the first token
  double decode_seconds = 0.0;  ///< every later token
  // With speculation:
  std::vector<std::int64_t> tokens_per_step;  ///< [k]: tree steps that yielded k tokens
  double draft_seconds = 0.0;                  ///< time the draft took (part of decode_seconds)
};

/// Positions a session needs for a request: the prompt plus the tokens fed back, capped at the
/// model's max_position_embeddings. Throws sepal::Error when the prompt alone does not fit.
std::int64_t session_capacity(const ModelConfig& config, const GenerationRequest& request);

/// Called with each chosen id and the logits it was chosen from ([vocab_size], the model's own,
/// before temperature or filters), just before on_token.
using ChoiceObserver = std::function<void(std::int32_t id, const float* logits)>;

/// Runs the prompt through `pipeline`, then samples up to max_new_tokens, calling `on_token` with
/// each new id as soon as it is chosen (and `on_choice`, when set, just before). Stops at an EOS id of the config, after max_new_tokens, or
/// when the next position would pass max_position_embeddings.
/// With `speculation` (its draft set), decodes by tree steps instead: the ids are the same as
/// without (greedy or sampled, for every seed) as long as the pipeline's rows do not depend on the
/// batch they run in. Throws sepal::Error when the pipeline cannot run trees.
GenerationResult generate(const ModelEnds& ends, BlockPipeline& pipeline,
                          const GenerationRequest& request,
                          const std::function<void(std::int32_t)>& on_token,
                          const Speculation* speculation = nullptr, const ChoiceObserver& on_choice = {});

}  // namespace sepal

#pragma once
// The generation loop: prompt ids in, sampled ids out, with the blocks behind an interface so
// that the same loop drives one process or a pipeline of hosts.
//
// Thread-safety: generate() runs on the calling thread; a pipeline belongs to one generation.

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "kernels/sampling.h"
#include "model/block_stack.h"
#include "model/model_ends.h"

namespace sepal {

/// All blocks of a model, for one inference session: hidden states in, hidden states out.
class BlockPipeline {
 public:
  virtual ~BlockPipeline() = default;
  /// Runs hidden[n, hidden_size] through every block, in place, as the session's next n positions.
  virtual void forward(float* hidden, std::int64_t n) = 0;
  /// Positions the session holds so far.
  virtual std::int64_t length() const = 0;
};

/// A pipeline over blocks held in this process.
class LocalPipeline final : public BlockPipeline {
 public:
  /// A session of up to `capacity` positions over `blocks`, which must cover the whole model,
  /// with deep prompts for every block (copied; none when null).
  LocalPipeline(const BlockStack& blocks, std::int64_t capacity, const DeepPrompts* prompts = nullptr);
  void forward(float* hidden, std::int64_t n) override;
  std::int64_t length() const override { return cache_.length(); }

 private:
  const BlockStack& blocks_;
  KvCache cache_;
  std::vector<float> prompt_values_;
  std::optional<DeepPrompts> prompts_;
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
  std::uint64_t seed = 0;
};

/// Why generation stopped.
enum class StopReason { kEos, kMaxNewTokens, kMaxPositions };

/// What was generated, with timings.
struct GenerationResult {
  std::vector<std::int32_t> generated_ids;  ///< includes the EOS when one was produced
  StopReason stop = StopReason::kMaxNewTokens;
  double prompt_seconds = 0.0;  ///< prompt forward pass and the first token
  double decode_seconds = 0.0;  ///< every later token
};

/// Positions a session needs for a request: the prompt plus the tokens fed back, capped at the
/// model's max_position_embeddings. Throws sepal::Error when the prompt alone does not fit.
std::int64_t session_capacity(const ModelConfig& config, const GenerationRequest& request);

/// Runs the prompt through `pipeline`, then samples up to max_new_tokens, calling `on_token` with
/// each new id as soon as it is chosen. Stops at an EOS id of the config, after max_new_tokens, or
/// when the next position would pass max_position_embeddings.
GenerationResult generate(const ModelEnds& ends, BlockPipeline& pipeline,
                          const GenerationRequest& request,
                          const std::function<void(std::int32_t)>& on_token);

}  // namespace sepal

#pragma once
// The parts of a model outside its blocks: token embeddings and the LM head (final norm and
// output projection). The client side of a pipeline runs these locally.
//
// Thread-safety: immutable after load; methods may run concurrently.

#include <cstdint>
#include <memory>
#include <vector>

#include "model/model_config.h"
#include "model/row_batcher.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace sepal {

/// Embeddings and LM head of a Llama-family model.
class ModelEnds {
 public:
  /// Loads the embedding table, final norm and head as `loading` says.
  static ModelEnds load(const Checkpoint& checkpoint, const ModelConfig& config,
                        const WeightLoading& loading);

  /// out[n, hidden] = embeddings of tokens[0..n), times the config's embedding_scale (BLOOM's:
  /// LayerNorm-ed). Throws sepal::Error on an id outside the vocabulary.
  void embed(const std::int32_t* tokens, std::int64_t n, float* out) const;
  /// logits[n, vocab] = head(norm(hidden[n, hidden])), soft-capped where the config says (Gemma 2).
  void logits(const float* hidden, std::int64_t n, float* out) const;
  /// out[n, hidden] = the final norm of hidden[n, hidden] (RMSNorm; BLOOM's LayerNorm).
  void final_norm(const float* hidden, std::int64_t n, float* out) const;
  /// The same, each row's logits the bits logits() gives that row alone (a token tree's rows
  /// then choose what decoding would), in as few products as that allows.
  void logits_each_alone(const float* hidden, std::int64_t n, float* out) const;
  /// logits[vocab] of one row, the bits logits() gives it, computed together with the rows other
  /// threads ask for at the same time (model/row_batcher.h): concurrent generations share the
  /// head's weight reads. Copies of this object share the batching.
  /// `member` (may be null): the caller's membership of the batching, from join_head_batches().
  void logits_of_row(const float* hidden, float* out, RowBatcher::Membership* member = nullptr) const;
  /// Joins the head's batching as a generation that asks one row a token (model/row_batcher.h:
  /// batches then wait for every member's row, a bounded time); null when there is no batching.
  std::unique_ptr<RowBatcher::Membership> join_head_batches() const {
    return head_batcher_ ? head_batcher_->join() : nullptr;
  }
  /// Head batches run through logits_of_row so far, and the rows they held.
  std::pair<std::int64_t, std::int64_t> head_batches() const {
    return head_batcher_ ? head_batcher_->batches() : std::pair<std::int64_t, std::int64_t>{0, 0};
  }
  /// Next-token cross-entropy over the rows of hidden[n, hidden]: the sum, over rows t with
  /// targets[t] >= 0, of -log softmax(logits(hidden[t]))[targets[t]], in double. With `grad`
  /// non-null, also writes grad[n, hidden] = weight · d(sum) / d hidden (zero on rows without a
  /// target); the norm and head are frozen. Rows are processed in chunks, so the logits of only a
  /// few rows are held at once. Throws sepal::Error for a target outside the vocabulary.
  double cross_entropy(const float* hidden, std::int64_t n, const std::int32_t* targets, float weight,
                       float* grad) const;

  /// Bytes of weights held (a tied head is counted once).
  std::int64_t weight_bytes() const;
  const ModelConfig& config() const { return config_; }

 private:
  ModelConfig config_;
  EmbeddingWeights embedding_;
  HeadWeights head_;
  std::shared_ptr<RowBatcher> head_batcher_;
};

}  // namespace sepal

#pragma once
// Where speculative decoding's candidate trees come from. A draft follows the session's sequence
// (start, keep) and proposes a tree after each token the target chose (propose). Two kinds:
//   - NgramDraft: continuations seen earlier in the prompt and the text so far;
//   - ModelDraft: a smaller model with the target's tokenizer, or the target's own first K blocks
//     and head (an early exit), with a KV cache of its own.
// A draft only shapes the tree: what is generated is decided by the target alone
// (model/speculative.h), so any draft gives the text of decoding without one.
//
// Thread-safety: a draft belongs to one session and one thread at a time.

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "model/block_stack.h"
#include "model/model_ends.h"
#include "model/token_tree.h"

namespace sepal {

class DraftSource {
 public:
  virtual ~DraftSource() = default;
  /// Begins a sequence with these ids (the prompt, BOS first).
  virtual void start(std::span<const std::int32_t> prompt) = 0;
  /// A tree of at most `size` nodes rooted at `root`, the token just chosen (not yet in the
  /// sequence). The tree is that draft's to keep until keep().
  virtual TokenTree propose(std::int32_t root, std::int64_t size) = 0;
  /// The target kept `path` (node indices from the root, each the parent of the next) of the last
  /// proposed tree: those tokens join the sequence.
  virtual void keep(std::span<const std::int32_t> path) = 0;

  /// The pipeline starts verifying `tree` (the last proposed): a draft may prepare its next tree
  /// meanwhile (actors/draft_decoder.h guesses the outcome). Default: nothing.
  virtual void verifying(const TokenTree& tree) { (void)tree; }
  /// Tokens in the sequence (the prompt and every kept path).
  virtual std::int64_t length() const = 0;
  /// Forgets the sequence from `length` on, and the tree, then appends `tokens`: how a draft that
  /// kept a guessed path comes back to the one the target kept. Throws sepal::Error when `length`
  /// is past the sequence.
  virtual void rewind(std::int64_t length, std::span<const std::int32_t> tokens) = 0;
};

/// Proposes what followed the same last tokens before: for the longest context of up to
/// order - 1 tokens that occurred earlier in the sequence, the tokens that came next, weighted
/// by how often. Proposes only the root where nothing matches.
class NgramDraft final : public DraftSource {
 public:
  /// order >= 2. Throws sepal::Error otherwise.
  explicit NgramDraft(std::int64_t order);
  void start(std::span<const std::int32_t> prompt) override;
  TokenTree propose(std::int32_t root, std::int64_t size) override;
  void keep(std::span<const std::int32_t> path) override;
  std::int64_t length() const override { return static_cast<std::int64_t>(sequence_.size()); }
  void rewind(std::int64_t length, std::span<const std::int32_t> tokens) override;

 private:
  void append(std::int32_t token);
  void pop();
  DraftCandidates continuations(std::span<const std::int32_t> context) const;

  std::int64_t order_;
  std::vector<std::int32_t> sequence_;
  std::map<std::vector<std::int32_t>, std::map<std::int32_t, std::int64_t>> next_;  // context -> next token counts
  TokenTree tree_;
};

/// A model as a draft: blocks [0, num_blocks) of `blocks` (all of a small model's, or the
/// target's first K: an early exit) and the head of `ends`, which must share the target's
/// vocabulary. Each proposed node costs one one-token step of those blocks (a tree step: the
/// draft's cache keeps the tree like the target's). Children per node: up to `width`.
class ModelDraft final : public DraftSource {
 public:
  /// `blocks` must start at block 0 and hold num_blocks; `capacity` as the target session's.
  /// Both referenced objects must outlive the draft. Throws sepal::Error otherwise.
  ModelDraft(const BlockStack& blocks, std::int64_t num_blocks, const ModelEnds& ends, std::int64_t capacity,
             std::int64_t width = 4);
  void start(std::span<const std::int32_t> prompt) override;
  TokenTree propose(std::int32_t root, std::int64_t size) override;
  void keep(std::span<const std::int32_t> path) override;
  std::int64_t length() const override { return cache_.length(); }
  void rewind(std::int64_t length, std::span<const std::int32_t> tokens) override;

 private:
  const BlockStack& blocks_;
  const ModelEnds& ends_;
  KvCache cache_;
  std::int64_t width_;
  std::vector<float> hidden_, logits_;
  TokenTree tree_;
  std::int64_t stored_ = 0;  ///< nodes of tree_ already in the cache (the first ones)
};

}  // namespace sepal

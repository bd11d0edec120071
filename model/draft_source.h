#pragma once
// Where speculative decoding's candidate trees come from. A draft follows the session's sequence
// (start, keep) and proposes a tree after each token the target chose (propose). Two kinds:
//   - NgramDraft: continuations seen earlier in the prompt and the text so far;
//   - ModelDraft: a smaller model with the target's tokenizer, or the target's own first K blocks
//     and head (an early exit), with a KV cache of its own; optionally staged: an n-gram draft
//     speculates the model draft's own decoding (Spector and Re's second stage).
// A draft only shapes the tree: what is generated is decided by the target alone
// (model/speculative.h), so any draft gives the text of decoding without one.
//
// Thread-safety: a draft belongs to one session and one thread at a time.

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "model/block_stack.h"
#include "model/guess_policy.h"
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

  /// The likeliest continuation, at most `max` tokens, after the sequence followed by `path`:
  /// each token the most frequent one after the longest matching context (first seen on ties);
  /// it stops where nothing matches.
  std::vector<std::int32_t> chain(std::span<const std::int32_t> path, std::int64_t max) const;

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
/// vocabulary. Children per node: up to `width`. The draft's cache keeps the tree like the
/// target's.
///
/// Growing a tree is the draft's own decoding, one node at a time; a step of the draft's blocks
/// may cost about the same for one row as for a few (where it reads more weights than it
/// computes), so a step also runs guessed rows: wide (at most `guesses`), the candidates the tree
/// takes next unless the new node's are heavier; deep, with a second stage (`stage_two_order` >=
/// 2, Spector and Re's staged speculation), at most kStageTwoDepth tokens an n-gram draft over the
/// same sequence expects below the new node. Which guesses run, the draft learns from its own
/// steps' times and from which guesses its trees took (model/guess_policy.h). A guessed row the tree
/// then takes costs no step; those it does not take stay in the cache unseen (a row attends only
/// to its ancestors) until keep(). Each row's candidates are the bits it gets alone, so the tree
/// is the one a draft that guesses nothing grows: only the number of steps changes.
class ModelDraft final : public DraftSource {
 public:
  static constexpr std::int64_t kWidth = 4;
  static constexpr std::int64_t kGuesses = 8;         ///< wide guesses a step, at most
  static constexpr std::int64_t kStageTwoDepth = 4;   ///< the second stage's guesses a step, at most
  /// `blocks` must start at block 0 and hold num_blocks; `capacity` as the target session's.
  /// Both referenced objects must outlive the draft. Throws sepal::Error otherwise.
  /// `learning` false: every guess runs, whatever it costs (GuessPolicy).
  ModelDraft(const BlockStack& blocks, std::int64_t num_blocks, const ModelEnds& ends, std::int64_t capacity,
             std::int64_t width = kWidth, std::int64_t guesses = kGuesses, std::int64_t stage_two_order = 0,
             bool learning = true);
  void start(std::span<const std::int32_t> prompt) override;
  TokenTree propose(std::int32_t root, std::int64_t size) override;
  void keep(std::span<const std::int32_t> path) override;
  std::int64_t length() const override { return cache_.length(); }
  void rewind(std::int64_t length, std::span<const std::int32_t> tokens) override;

  /// Steps the draft's blocks ran for trees (not for the prompt or rewinds) since construction.
  std::int64_t steps() const { return steps_; }

 private:
  void forget_tree();
  /// A row after the sequence (a slot) for `token` as a child of slot `parent` (-1: the root), to run.
  /// `kind`: the guess's (GuessPolicy), or -1 for a node's own row.
  std::int32_t add_slot(std::int32_t parent, std::int32_t token, std::int32_t kind);
  /// Runs slots [first, end) in one tree step; with `candidates`, keeps each row's.
  void run_slots(std::int64_t first, bool candidates);
  /// The slot holding `token` below slot `parent` (-1: the root), or -1.
  std::int32_t find_slot(std::int32_t parent, std::int32_t token) const;
  /// Tokens from the root to `node` (none for -1), the root first.
  static std::vector<std::int32_t> path_tokens(const TokenTree& tree, std::int32_t node);

  const BlockStack& blocks_;
  const ModelEnds& ends_;
  KvCache cache_;
  std::int64_t width_, guesses_;
  std::optional<NgramDraft> stage_two_;
  TokenTree tree_;
  std::vector<std::int32_t> node_slot_;    ///< per node of tree_: its slot, or -1
  std::vector<std::int32_t> slot_parent_;  ///< per slot: its parent slot (-1: the root's)
  std::vector<std::int32_t> slot_token_;
  std::vector<DraftCandidates> slot_candidates_;  ///< per slot run by propose()
  std::vector<std::int32_t> slot_kind_;           ///< per slot: the kind of guess, or -1
  GuessPolicy policy_;  ///< kinds: wide ranks [0, guesses), then the second stage's depths
  std::int64_t steps_ = 0;
};

}  // namespace sepal

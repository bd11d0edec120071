#pragma once
// A tree of candidate tokens for speculative decoding: node 0 is the root (the last token chosen,
// not yet in the session), every other node continues its parent. Nodes are in creation order,
// so a parent always comes before its children.
//
// Thread-safety: a plain value.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace sepal {

struct TokenTree {
  std::vector<std::int32_t> tokens;   ///< token of each node
  std::vector<std::int32_t> parents;  ///< parent of each node; -1 for the root
  std::vector<double> mass;           ///< the draft's probability of the path to each node (root: 1)
  /// Per node, the draft's likeliest next token that is not one of its children (-1: the node was
  /// not expanded, or every candidate is a child); empty when the draft did not say.
  std::vector<std::int32_t> next_guess;

  std::int64_t size() const { return static_cast<std::int64_t>(tokens.size()); }
  /// The child of `node` with `token`, or -1.
  std::int32_t child(std::int32_t node, std::int32_t token) const;
  /// Depth of each node (root 0).
  std::vector<std::int64_t> depths() const;
};

/// A draft's candidates for the token after a node: (token, probability), best first.
using DraftCandidates = std::vector<std::pair<std::int32_t, double>>;

/// A candidate the tree may take next: (parent node, token).
using TreeCandidate = std::pair<std::int32_t, std::int32_t>;

/// Grows a tree from `root` to at most `size` nodes, best first: the next node is always the
/// candidate whose path has the most probability mass (so the tree is wide where the draft is
/// unsure and deep where it is sure; on equal mass, the one offered first). `expand(tree, node,
/// upcoming)` gives the candidates after a node just added (it is called for every node but the
/// last ones); `upcoming` lists the heaviest candidates already offered and not taken, best
/// first, at most as many as the tree may still add: the nodes the tree adds next unless the new
/// node's own candidates are heavier. Candidates below `min_mass` of path mass are never added.
TokenTree grow_tree(std::int32_t root, std::int64_t size,
                    const std::function<DraftCandidates(const TokenTree&, std::int32_t, std::span<const TreeCandidate>)>& expand,
                    double min_mass = 1e-4);
/// The same, for a draft that does not look ahead.
TokenTree grow_tree(std::int32_t root, std::int64_t size,
                    const std::function<DraftCandidates(const TokenTree&, std::int32_t)>& expand, double min_mass = 1e-4);

/// What verifying a tree yields: the path kept (node indices from the root) and the token the
/// target chooses after it (the next tree's root).
struct TreeOutcome {
  std::vector<std::int32_t> path;
  std::int32_t next = -1;
};

/// The outcome the draft itself finds likeliest: the walk stops at the node X with the most mass
/// that none of its children takes (mass(X) minus its children's), X's next_guess coming next;
/// only nodes with a next_guess count. None when no node has one.
std::optional<TreeOutcome> likely_outcome(const TokenTree& tree);

/// The `width` likeliest tokens of softmax(logits) (probabilities at temperature 1), best first.
DraftCandidates top_candidates(const float* logits, std::int64_t vocab, std::int64_t width);

}  // namespace sepal

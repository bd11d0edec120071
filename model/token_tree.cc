#include "model/token_tree.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <tuple>

#include "kernels/error.h"
#include "kernels/softmax.h"

namespace sepal {

std::int32_t TokenTree::child(std::int32_t node, std::int32_t token) const {
  for (std::size_t i = static_cast<std::size_t>(node) + 1; i < tokens.size(); ++i) {
    if (parents[i] == node && tokens[i] == token) return static_cast<std::int32_t>(i);
  }
  return -1;
}

std::vector<std::int64_t> TokenTree::depths() const {
  std::vector<std::int64_t> depth(tokens.size(), 0);
  for (std::size_t i = 1; i < tokens.size(); ++i) depth[i] = depth[static_cast<std::size_t>(parents[i])] + 1;
  return depth;
}

TokenTree grow_tree(std::int32_t root, std::int64_t size,
                    const std::function<DraftCandidates(const TokenTree&, std::int32_t, std::span<const TreeCandidate>)>& expand,
                    double min_mass) {
  TokenTree tree;
  tree.tokens.push_back(root);
  tree.parents.push_back(-1);
  tree.mass.push_back(1.0);
  // (path mass, -order, parent, token): the heaviest first; among equals, the one offered first.
  using Candidate = std::tuple<double, std::int64_t, std::int32_t, std::int32_t>;
  std::set<Candidate, std::greater<>> frontier;
  std::int64_t order = 0;
  std::vector<DraftCandidates> offered;  // per node expanded
  std::vector<TreeCandidate> upcoming;
  auto offer = [&](std::int32_t node) {
    if (tree.size() >= size) return;
    upcoming.clear();
    for (auto it = frontier.begin(); it != frontier.end() && static_cast<std::int64_t>(upcoming.size()) < size - tree.size(); ++it) {
      upcoming.emplace_back(std::get<2>(*it), std::get<3>(*it));
    }
    offered.resize(static_cast<std::size_t>(node) + 1);
    offered[static_cast<std::size_t>(node)] = expand(tree, node, upcoming);
    for (const auto& [token, p] : offered[static_cast<std::size_t>(node)]) {
      const double mass = tree.mass[static_cast<std::size_t>(node)] * p;
      if (mass >= min_mass) frontier.emplace(mass, -order++, node, token);
    }
  };
  offer(0);
  while (tree.size() < size && !frontier.empty()) {
    const auto [mass, unused, parent, token] = *frontier.begin();
    frontier.erase(frontier.begin());
    tree.tokens.push_back(token);
    tree.parents.push_back(parent);
    tree.mass.push_back(mass);
    offer(static_cast<std::int32_t>(tree.size() - 1));
  }
  tree.next_guess.assign(tree.tokens.size(), -1);
  for (std::size_t node = 0; node < offered.size() && node < tree.tokens.size(); ++node) {
    for (const auto& [token, p] : offered[node]) {
      if (tree.child(static_cast<std::int32_t>(node), token) < 0) {
        tree.next_guess[node] = token;
        break;
      }
    }
  }
  return tree;
}

TokenTree grow_tree(std::int32_t root, std::int64_t size,
                    const std::function<DraftCandidates(const TokenTree&, std::int32_t)>& expand, double min_mass) {
  return grow_tree(
      root, size, [&](const TokenTree& tree, std::int32_t node, std::span<const TreeCandidate>) { return expand(tree, node); },
      min_mass);
}

std::optional<TreeOutcome> likely_outcome(const TokenTree& tree) {
  if (tree.next_guess.size() != tree.tokens.size()) return std::nullopt;
  std::vector<double> stop(tree.mass);  // mass(X) minus its children's
  for (std::size_t i = 1; i < tree.tokens.size(); ++i) stop[static_cast<std::size_t>(tree.parents[i])] -= tree.mass[i];
  std::int32_t best = -1;
  for (std::size_t i = 0; i < tree.tokens.size(); ++i) {
    if (tree.next_guess[i] < 0) continue;
    if (best < 0 || stop[i] > stop[static_cast<std::size_t>(best)]) best = static_cast<std::int32_t>(i);
  }
  if (best < 0) return std::nullopt;
  TreeOutcome outcome;
  for (std::int32_t i = best; i >= 0; i = tree.parents[static_cast<std::size_t>(i)]) outcome.path.push_back(i);
  std::reverse(outcome.path.begin(), outcome.path.end());
  outcome.next = tree.next_guess[static_cast<std::size_t>(best)];
  return outcome;
}

DraftCandidates top_candidates(const float* logits, std::int64_t vocab, std::int64_t width) {
  SEPAL_CHECK(vocab > 0 && width > 0);
  const double lse = log_sum_exp(logits, vocab);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(vocab));
  for (std::int64_t i = 0; i < vocab; ++i) ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i);
  const std::int64_t k = std::min(width, vocab);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                    [&](std::int32_t a, std::int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  DraftCandidates out;
  for (std::int64_t i = 0; i < k; ++i) {
    const std::int32_t id = ids[static_cast<std::size_t>(i)];
    out.emplace_back(id, std::exp(static_cast<double>(logits[id]) - lse));
  }
  return out;
}

}  // namespace sepal

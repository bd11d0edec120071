#include "model/draft_source.h"

#include <algorithm>
#include <chrono>

#include "kernels/error.h"

namespace sepal {

NgramDraft::NgramDraft(std::int64_t order) : order_(order) {
  if (order < 2) fail("an n-gram draft needs an order of at least 2, got ", order);
}

void NgramDraft::append(std::int32_t token) {
  const auto n = static_cast<std::int64_t>(sequence_.size());
  for (std::int64_t k = 1; k < order_ && k <= n; ++k) {
    ++next_[std::vector<std::int32_t>(sequence_.end() - k, sequence_.end())][token];
  }
  sequence_.push_back(token);
}

void NgramDraft::pop() {
  const std::int32_t token = sequence_.back();
  sequence_.pop_back();
  const auto n = static_cast<std::int64_t>(sequence_.size());
  for (std::int64_t k = 1; k < order_ && k <= n; ++k) {
    auto context = next_.find(std::vector<std::int32_t>(sequence_.end() - k, sequence_.end()));
    auto count = context->second.find(token);
    if (--count->second == 0) context->second.erase(count);
    if (context->second.empty()) next_.erase(context);
  }
}

void NgramDraft::rewind(std::int64_t length, std::span<const std::int32_t> tokens) {
  if (length < 0 || length > this->length()) fail("cannot rewind a draft of ", this->length(), " tokens to ", length);
  while (this->length() > length) pop();
  for (const std::int32_t t : tokens) append(t);
  tree_ = {};
}

void NgramDraft::start(std::span<const std::int32_t> prompt) {
  sequence_.clear();
  next_.clear();
  for (const std::int32_t t : prompt) append(t);
}

DraftCandidates NgramDraft::continuations(std::span<const std::int32_t> context) const {
  const auto n = static_cast<std::int64_t>(context.size());
  for (std::int64_t k = std::min(order_ - 1, n); k >= 1; --k) {
    const auto it = next_.find(std::vector<std::int32_t>(context.end() - k, context.end()));
    if (it == next_.end()) continue;
    std::int64_t total = 0;
    for (const auto& [token, count] : it->second) total += count;
    DraftCandidates out;
    for (const auto& [token, count] : it->second) out.emplace_back(token, static_cast<double>(count) / total);
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    return out;
  }
  return {};
}

TokenTree NgramDraft::propose(std::int32_t root, std::int64_t size) {
  tree_ = grow_tree(root, size, [&](const TokenTree& tree, std::int32_t node) {
    std::vector<std::int32_t> path;
    for (std::int32_t i = node; i >= 0; i = tree.parents[static_cast<std::size_t>(i)]) path.push_back(tree.tokens[static_cast<std::size_t>(i)]);
    std::vector<std::int32_t> context(sequence_.end() - std::min<std::int64_t>(order_, static_cast<std::int64_t>(sequence_.size())),
                                      sequence_.end());
    context.insert(context.end(), path.rbegin(), path.rend());
    return continuations(context);
  });
  return tree_;
}

std::vector<std::int32_t> NgramDraft::chain(std::span<const std::int32_t> path, std::int64_t max) const {
  std::vector<std::int32_t> context(sequence_.end() - std::min<std::int64_t>(order_, static_cast<std::int64_t>(sequence_.size())),
                                    sequence_.end());
  context.insert(context.end(), path.begin(), path.end());
  std::vector<std::int32_t> out;
  while (static_cast<std::int64_t>(out.size()) < max) {
    const DraftCandidates next = continuations(context);
    if (next.empty()) break;
    out.push_back(next.front().first);
    context.push_back(next.front().first);
  }
  return out;
}

void NgramDraft::keep(std::span<const std::int32_t> path) {
  for (const std::int32_t node : path) append(tree_.tokens.at(static_cast<std::size_t>(node)));
}

ModelDraft::ModelDraft(const BlockStack& blocks, std::int64_t num_blocks, const ModelEnds& ends, std::int64_t capacity,
                       std::int64_t width, std::int64_t guesses, std::int64_t stage_two_order, bool learning)
    : blocks_(blocks),
      ends_(ends),
      cache_(blocks.new_cache(capacity, 0, num_blocks, KvKeep::kAll)),  // rewind() goes back past guesses
      width_(width),
      guesses_(guesses),
      policy_(guesses + kStageTwoDepth, learning) {
  if (blocks.first() != 0) fail("a draft model's blocks must start at block 0");
  if (width <= 0) fail("a draft needs at least one child per node");
  if (guesses < 0) fail("a draft cannot guess ", guesses, " rows a step");
  if (stage_two_order != 0) stage_two_.emplace(stage_two_order);
}

void ModelDraft::forget_tree() {
  tree_ = {};
  node_slot_.clear();
  slot_parent_.clear();
  slot_token_.clear();
  slot_candidates_.clear();
  slot_kind_.clear();
}

void ModelDraft::start(std::span<const std::int32_t> prompt) {
  cache_.truncate(0);
  forget_tree();
  std::vector<float> rows(prompt.size() * static_cast<std::size_t>(blocks_.config().hidden_size));
  ends_.embed(prompt.data(), static_cast<std::int64_t>(prompt.size()), rows.data());
  blocks_.forward(rows.data(), static_cast<std::int64_t>(prompt.size()), cache_, 0);
  if (stage_two_) stage_two_->start(prompt);
}

std::int32_t ModelDraft::add_slot(std::int32_t parent, std::int32_t token, std::int32_t kind) {
  slot_parent_.push_back(parent);
  slot_token_.push_back(token);
  slot_kind_.push_back(kind);
  return static_cast<std::int32_t>(slot_parent_.size()) - 1;
}

void ModelDraft::run_slots(std::int64_t first, bool candidates) {
  const std::int64_t n = static_cast<std::int64_t>(slot_parent_.size()) - first;
  std::vector<float> rows(static_cast<std::size_t>(n * blocks_.config().hidden_size));
  const auto started = std::chrono::steady_clock::now();
  ends_.embed(slot_token_.data() + first, n, rows.data());
  blocks_.forward_tree(rows.data(), n, slot_parent_, cache_, 0);
  ++steps_;
  slot_candidates_.resize(slot_parent_.size());
  if (!candidates) return;
  // Each row's logits are the bits it gets alone, so a node's candidates do not depend on the
  // rows run with it: the tree is the one a draft that guesses nothing grows.
  const std::int64_t vocab = ends_.config().vocab_size;
  std::vector<float> logits(static_cast<std::size_t>(n * vocab));
  ends_.logits_each_alone(rows.data(), n, logits.data());
  for (std::int64_t i = 0; i < n; ++i) {
    slot_candidates_[static_cast<std::size_t>(first + i)] = top_candidates(logits.data() + i * vocab, vocab, width_);
  }
  policy_.ran(n, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

std::vector<std::int32_t> ModelDraft::path_tokens(const TokenTree& tree, std::int32_t node) {
  std::vector<std::int32_t> path;
  for (std::int32_t i = node; i >= 0; i = tree.parents[static_cast<std::size_t>(i)]) path.push_back(tree.tokens[static_cast<std::size_t>(i)]);
  std::reverse(path.begin(), path.end());
  return path;
}

std::int32_t ModelDraft::find_slot(std::int32_t parent, std::int32_t token) const {
  for (std::size_t s = static_cast<std::size_t>(parent + 1); s < slot_parent_.size(); ++s) {
    if (slot_parent_[s] == parent && slot_token_[s] == token) return static_cast<std::int32_t>(s);
  }
  return -1;
}

TokenTree ModelDraft::propose(std::int32_t root, std::int64_t size) {
  // Every node the tree takes goes into the draft's cache; so do guessed rows, while the rest of
  // the tree still fits.
  const std::int64_t free = cache_.max_positions() - cache_.length();
  size = std::min(size, free);
  forget_tree();
  auto expand = [&](const TokenTree& tree, std::int32_t node, std::span<const TreeCandidate> upcoming) -> DraftCandidates {
    node_slot_.resize(tree.tokens.size(), -1);
    const std::int32_t parent = node == 0 ? -1 : node_slot_[static_cast<std::size_t>(tree.parents[static_cast<std::size_t>(node)])];
    std::int32_t slot = node == 0 ? -1 : find_slot(parent, tree.tokens[static_cast<std::size_t>(node)]);
    if (slot < 0) {  // not guessed: a step for the node and the next guesses
      const auto first = static_cast<std::int64_t>(slot_parent_.size());
      slot = add_slot(parent, tree.tokens[static_cast<std::size_t>(node)], -1);
      const std::int64_t remaining = size - tree.size();  // nodes the tree may still add
      const std::int64_t room = free - static_cast<std::int64_t>(slot_parent_.size()) - remaining;
      std::int64_t guesses = std::min(remaining, room);
      // Wide: the candidates the tree takes next unless the node's own are heavier, best first.
      // Deep (the second stage): what the n-gram expects below the node.
      std::int64_t rank = 0;
      for (const auto& [candidate_parent, token] : upcoming) {
        if (rank >= guesses_ || guesses <= 0 || !policy_.worth(rank)) break;
        const std::int32_t parent_slot = node_slot_[static_cast<std::size_t>(candidate_parent)];
        if (find_slot(parent_slot, token) >= 0) continue;
        add_slot(parent_slot, token, static_cast<std::int32_t>(rank++));
        --guesses;
      }
      if (stage_two_ && guesses > 0 && policy_.worth(guesses_)) {
        std::int32_t below = slot;
        std::int64_t depth = 0;
        for (const std::int32_t token : stage_two_->chain(path_tokens(tree, node), std::min(guesses, kStageTwoDepth))) {
          if (!policy_.worth(guesses_ + depth)) break;
          below = add_slot(below, token, static_cast<std::int32_t>(guesses_ + depth++));
        }
      }
      run_slots(first, true);
    }
    node_slot_[static_cast<std::size_t>(node)] = slot;
    return slot_candidates_[static_cast<std::size_t>(slot)];
  };
  tree_ = grow_tree(root, size, expand);
  // The last nodes were never expanded: some were guessed. Then what each guess came to.
  node_slot_.resize(tree_.tokens.size(), -1);
  std::vector<bool> taken(slot_parent_.size(), false);
  for (std::size_t node = 0; node < tree_.tokens.size(); ++node) {
    std::int32_t& slot = node_slot_[node];
    if (slot < 0 && node > 0) {
      const std::int32_t parent = node_slot_[static_cast<std::size_t>(tree_.parents[node])];
      if (parent >= 0) slot = find_slot(parent, tree_.tokens[node]);
    }
    if (slot >= 0) taken[static_cast<std::size_t>(slot)] = true;
  }
  for (std::size_t s = 0; s < slot_kind_.size(); ++s) {
    if (slot_kind_[s] >= 0) policy_.guessed(slot_kind_[s], taken[s]);
  }
  return tree_;
}

void ModelDraft::keep(std::span<const std::int32_t> path) {
  // The path's nodes with no row (the last nodes of a full tree, not guessed) run first, in one
  // step: below the first of them, no node has a row.
  std::vector<std::int32_t> slots;
  const auto first = static_cast<std::int64_t>(slot_parent_.size());
  for (const std::int32_t node : path) {
    if (node < 0 || node >= tree_.size()) fail("a draft's kept path names node ", node, " of a tree of ", tree_.size());
    std::int32_t slot = node_slot_[static_cast<std::size_t>(node)];
    if (slot < 0) slot = add_slot(slots.empty() ? -1 : slots.back(), tree_.tokens[static_cast<std::size_t>(node)], -1);
    slots.push_back(slot);
  }
  if (static_cast<std::int64_t>(slot_parent_.size()) > first) run_slots(first, false);
  cache_.keep_path(slots);
  if (stage_two_) stage_two_->rewind(stage_two_->length(), path_tokens(tree_, path.empty() ? -1 : path.back()));
  forget_tree();
}

}  // namespace sepal

namespace sepal {

void ModelDraft::rewind(std::int64_t length, std::span<const std::int32_t> tokens) {
  if (length < 0 || length > cache_.length()) fail("cannot rewind a draft of ", cache_.length(), " tokens to ", length);
  const auto n = static_cast<std::int64_t>(tokens.size());
  if (length + n > cache_.max_positions()) fail("a draft of ", cache_.max_positions(), " positions cannot hold ", length + n);
  cache_.truncate(length);
  forget_tree();
  if (stage_two_) stage_two_->rewind(length, tokens);
  if (n == 0) return;
  std::vector<float> rows(static_cast<std::size_t>(n * blocks_.config().hidden_size));
  ends_.embed(tokens.data(), n, rows.data());
  blocks_.forward(rows.data(), n, cache_, 0);
}

}  // namespace sepal

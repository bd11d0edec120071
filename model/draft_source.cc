#include "model/draft_source.h"

#include <algorithm>

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

void NgramDraft::keep(std::span<const std::int32_t> path) {
  for (const std::int32_t node : path) append(tree_.tokens.at(static_cast<std::size_t>(node)));
}

ModelDraft::ModelDraft(const BlockStack& blocks, std::int64_t num_blocks, const ModelEnds& ends, std::int64_t capacity,
                       std::int64_t width)
    : blocks_(blocks), ends_(ends), cache_(blocks.new_cache(capacity, 0, num_blocks)), width_(width) {
  if (blocks.first() != 0) fail("a draft model's blocks must start at block 0");
  if (width <= 0) fail("a draft needs at least one child per node");
  hidden_.resize(static_cast<std::size_t>(blocks.config().hidden_size));
  logits_.resize(static_cast<std::size_t>(ends.config().vocab_size));
}

void ModelDraft::start(std::span<const std::int32_t> prompt) {
  cache_.truncate(0);
  std::vector<float> rows(prompt.size() * static_cast<std::size_t>(blocks_.config().hidden_size));
  ends_.embed(prompt.data(), static_cast<std::int64_t>(prompt.size()), rows.data());
  blocks_.forward(rows.data(), static_cast<std::int64_t>(prompt.size()), cache_, 0);
}

TokenTree ModelDraft::propose(std::int32_t root, std::int64_t size) {
  // The tree's nodes go into the draft's cache as they are added; nothing past what fits.
  size = std::min(size, cache_.capacity() - cache_.length());
  stored_ = 0;
  tree_ = grow_tree(root, size, [&](const TokenTree& tree, std::int32_t node) -> DraftCandidates {
    ends_.embed(&tree.tokens[static_cast<std::size_t>(node)], 1, hidden_.data());
    blocks_.forward_tree(hidden_.data(), 1, std::span(tree.parents).first(static_cast<std::size_t>(node) + 1), cache_, 0);
    stored_ = node + 1;
    ends_.logits(hidden_.data(), 1, logits_.data());
    return top_candidates(logits_.data(), ends_.config().vocab_size, width_);
  });
  return tree_;
}

void ModelDraft::keep(std::span<const std::int32_t> path) {
  // The last nodes of a full tree were never expanded: store those the path needs first.
  const std::int64_t needed = path.empty() ? 0 : path.back() + 1;
  if (needed > stored_) {
    const std::int64_t n = needed - stored_;
    std::vector<float> rows(static_cast<std::size_t>(n * blocks_.config().hidden_size));
    ends_.embed(tree_.tokens.data() + stored_, n, rows.data());
    blocks_.forward_tree(rows.data(), n, std::span(tree_.parents).first(static_cast<std::size_t>(needed)), cache_, 0);
    stored_ = needed;
  }
  cache_.keep_path(path);
}

}  // namespace sepal

namespace sepal {

void ModelDraft::rewind(std::int64_t length, std::span<const std::int32_t> tokens) {
  if (length < 0 || length > cache_.length()) fail("cannot rewind a draft of ", cache_.length(), " tokens to ", length);
  const auto n = static_cast<std::int64_t>(tokens.size());
  if (length + n > cache_.capacity()) fail("a draft of ", cache_.capacity(), " positions cannot hold ", length + n);
  cache_.truncate(length);
  tree_ = {};
  stored_ = 0;
  if (n == 0) return;
  std::vector<float> rows(static_cast<std::size_t>(n * blocks_.config().hidden_size));
  ends_.embed(tokens.data(), n, rows.data());
  blocks_.forward(rows.data(), n, cache_, 0);
}

}  // namespace sepal

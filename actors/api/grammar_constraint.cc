#include "actors/api/grammar_constraint.h"

#include <algorithm>
#include <functional>

#include "kernels/error.h"

namespace sepal::api {

VocabTrie::VocabTrie(const Tokenizer& tokenizer, std::int64_t vocab)
    : tokenizer_(tokenizer), vocab_(std::min(vocab, tokenizer.vocab_size())) {
  std::vector<std::int32_t> ids;
  for (std::int32_t id = 0; id < vocab_; ++id) {
    const std::string& bytes = tokenizer.token_bytes(id);
    const bool text = std::none_of(bytes.begin(), bytes.end(), [](char c) { return static_cast<unsigned char>(c) >= marker_byte(0); });
    if (!bytes.empty() && text) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end(), [&](std::int32_t a, std::int32_t b) {
    return tokenizer.token_bytes(a) < tokenizer.token_bytes(b) || (tokenizer.token_bytes(a) == tokenizer.token_bytes(b) && a < b);
  });
  token_ids_ = ids;
  // The node for the sorted ids [lo, hi), which share their first `depth` bytes.
  const std::function<std::uint32_t(std::size_t, std::size_t, std::size_t)> build = [&](std::size_t lo, std::size_t hi,
                                                                                       std::size_t depth) {
    const auto index = static_cast<std::uint32_t>(nodes_.size());
    nodes_.emplace_back();
    std::size_t at = lo;
    while (at < hi && tokenizer.token_bytes(ids[at]).size() == depth) ++at;
    nodes_[index].first_token = static_cast<std::uint32_t>(lo);
    nodes_[index].tokens = static_cast<std::uint32_t>(at - lo);
    std::vector<Edge> children;
    while (at < hi) {
      const auto byte = static_cast<unsigned char>(tokenizer.token_bytes(ids[at])[depth]);
      std::size_t end = at;
      while (end < hi && static_cast<unsigned char>(tokenizer.token_bytes(ids[end])[depth]) == byte) ++end;
      children.push_back(Edge{byte, build(at, end, depth + 1)});
      at = end;
    }
    nodes_[index].first_child = static_cast<std::uint32_t>(edges_.size());
    nodes_[index].children = static_cast<std::uint32_t>(children.size());
    edges_.insert(edges_.end(), children.begin(), children.end());
    return index;
  };
  build(0, ids.size(), 0);
}

GrammarConstraint::GrammarConstraint(const StructuredOutput& output, const VocabTrie& trie, std::vector<std::int32_t> eos_ids)
    : output_(output), trie_(trie), eos_ids_(std::move(eos_ids)), reader_(output.grammar, output.start) {
  SEPAL_CHECK(output.markers.size() <= kMaxMarkers, "an output of ", output.markers.size(), " markers");
}

void GrammarConstraint::walk(std::uint32_t index, const GrammarReader::Heads& heads, std::size_t depth,
                             std::vector<char>& out) const {
  const VocabTrie::Node& node = trie_.node(index);
  for (std::uint32_t t = node.first_token; t < node.first_token + node.tokens; ++t) out[static_cast<std::size_t>(trie_.token(t))] = 1;
  if (scratch_.size() <= depth + 1) scratch_.resize(depth + 2);
  for (std::uint32_t e = node.first_child; e < node.first_child + node.children; ++e) {
    const VocabTrie::Edge& edge = trie_.edge(e);
    const std::size_t mark = reader_.mark();
    GrammarReader::Heads next = std::move(scratch_[depth + 1]);
    reader_.advance(heads, edge.byte, next);
    if (GrammarReader::open(next) || GrammarReader::ended(next)) walk(edge.node, next, depth + 1, out);
    scratch_[depth + 1] = std::move(next);
    reader_.release(mark);
  }
}

void GrammarConstraint::allowed(std::vector<char>& allowed) const {
  if (reader_.can_continue()) {
    const std::string key = reader_.key(reader_.heads());
    auto it = seen_.find(key);
    if (it == seen_.end()) {
      if (seen_.size() >= 32) seen_.clear();
      std::vector<char> tokens(static_cast<std::size_t>(trie_.vocab()), 0);
      walk(0, reader_.heads(), 0, tokens);
      for (std::size_t i = 0; i < output_.markers.size(); ++i) {  // the special tokens the grammar reads as bytes
        const auto id = static_cast<std::size_t>(output_.markers[i]);
        if (id >= tokens.size()) continue;
        const std::size_t mark = reader_.mark();
        GrammarReader::Heads next;
        reader_.advance(reader_.heads(), marker_byte(i), next);
        if (GrammarReader::open(next) || GrammarReader::ended(next)) tokens[id] = 1;
        reader_.release(mark);
      }
      it = seen_.emplace(key, std::move(tokens)).first;
    }
    const std::size_t n = std::min(allowed.size(), it->second.size());
    for (std::size_t id = 0; id < n; ++id) allowed[id] |= it->second[id];
  }
  if (reader_.complete()) {
    for (const std::int32_t id : eos_ids_) {
      if (id >= 0 && static_cast<std::size_t>(id) < allowed.size()) allowed[static_cast<std::size_t>(id)] = 1;
    }
  }
}

void GrammarConstraint::take(std::int32_t id) {
  const auto marker = std::find(output_.markers.begin(), output_.markers.end(), id);
  if (marker != output_.markers.end()) {
    (void)reader_.feed(marker_byte(static_cast<std::size_t>(marker - output_.markers.begin())));
  } else if (id >= 0 && id < trie_.vocab()) {
    (void)reader_.feed(trie_.bytes(id));
  }
}

}  // namespace sepal::api

#pragma once
// A grammar (actors/api/grammar.h) as a constraint on generation: a token may come next only when
// the reply's bytes with its bytes can still be read by the grammar; once the grammar's start
// rule can end, an EOS may come, and only an EOS once nothing else can. Tokens that decode to
// nothing are refused, but for the output's markers: special tokens (Mistral's [TOOL_CALLS] and
// [ARGS]) that its grammar reads as bytes no UTF-8 text holds, marker_byte(i).
//
// Trying a vocabulary token by token is slow for large ones; the tokens are walked as a trie of
// their bytes, so a refused prefix refuses every token that starts with it, and the tokens
// allowed in a state are kept: inside a long string the state repeats, and its answer is reused.
//
// Thread-safety: a VocabTrie is read-only once built (shared by every request); a
// GrammarConstraint belongs to one generation.

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/api/grammar.h"
#include "model/generation.h"
#include "model/tokenizer.h"

namespace sepal::api {

/// The tokens of a vocabulary as a trie of their bytes.
class VocabTrie {
 public:
  /// Tokens [0, min(vocab, tokenizer's)) with at least one byte, and none that no UTF-8 text holds
  /// (0xF8 to 0xFF: byte-fallback tokens), which stand for markers in a grammar.
  VocabTrie(const Tokenizer& tokenizer, std::int64_t vocab);

  struct Node {
    std::uint32_t first_child = 0, children = 0;  ///< into edges()
    std::uint32_t first_token = 0, tokens = 0;    ///< into token_ids(): the tokens whose bytes end here
  };
  struct Edge {
    unsigned char byte;
    std::uint32_t node;
  };
  const Node& root() const { return nodes_[0]; }
  const Node& node(std::uint32_t i) const { return nodes_[i]; }
  const Edge& edge(std::uint32_t i) const { return edges_[i]; }
  std::int32_t token(std::uint32_t i) const { return token_ids_[i]; }
  std::int64_t vocab() const { return vocab_; }
  const std::string& bytes(std::int32_t id) const { return tokenizer_.token_bytes(id); }

 private:
  const Tokenizer& tokenizer_;
  std::int64_t vocab_;
  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
  std::vector<std::int32_t> token_ids_;
};

/// The byte a grammar reads for the output's marker i: 0xF8 + i, which no UTF-8 text holds.
inline constexpr unsigned char marker_byte(std::size_t i) { return static_cast<unsigned char>(0xF8 + i); }
/// Markers an output may have.
inline constexpr std::size_t kMaxMarkers = 8;

/// What a reply must follow: a grammar's start rule.
struct StructuredOutput {
  Grammar grammar;
  Grammar::Rule start = 0;
  /// Special tokens that decode to nothing and that the reply writes where the grammar reads
  /// marker_byte(i) for token i (Mistral's [TOOL_CALLS], [ARGS], [CALL_ID]); at most kMaxMarkers.
  std::vector<std::int32_t> markers;
};

class GrammarConstraint final : public TokenConstraint {
 public:
  /// `output` and `trie` must outlive the constraint; the model ends with `eos_ids`.
  GrammarConstraint(const StructuredOutput& output, const VocabTrie& trie, std::vector<std::int32_t> eos_ids);
  void allowed(std::vector<char>& allowed) const override;
  void take(std::int32_t id) override;
  /// Whether the text read so far is a whole output.
  bool complete() const { return reader_.complete(); }

 private:
  void walk(std::uint32_t node, const GrammarReader::Heads& heads, std::size_t depth, std::vector<char>& out) const;

  const StructuredOutput& output_;
  const VocabTrie& trie_;
  std::vector<std::int32_t> eos_ids_;
  mutable GrammarReader reader_;  // allowed() adds and drops frames past its state
  mutable std::vector<GrammarReader::Heads> scratch_;  // heads at each depth of the walk
  mutable std::unordered_map<std::string, std::vector<char>> seen_;  // allowed tokens by state
};

}  // namespace sepal::api

#pragma once
// A context-free grammar over bytes, and a reader that follows it one byte at a time: what
// structured outputs (JSON schemas, forced tool calls) constrain a reply with.
//
// A grammar is a list of rules; a rule is a list of alternatives; an alternative is a sequence of
// symbols, each a set of bytes (one byte from it) or another rule. No rule may reach itself
// before reading a byte (left recursion; check() finds it): the reader expands rules eagerly.
// Right recursion (`list ::= item list | ""`) costs the reader no depth.
//
// The reader keeps every way the bytes read so far can continue (a set of stacks of positions,
// frames shared between stacks), so ambiguous grammars are fine. Stacks deeper than kMaxDepth
// are dropped: a recursive grammar can be followed to that nesting only; so are stacks past
// kMaxHeads at once, which bounds a step's work on very ambiguous grammars. Dropping ways to go
// on never lets a text through the grammar refuses; it may refuse one it allows.
//
// Thread-safety: a Grammar is a plain value (const: shared freely); a GrammarReader belongs to
// one thread.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sepal::api {

/// A set of byte values.
class ByteSet {
 public:
  ByteSet() = default;
  static ByteSet of(std::string_view chars);
  static ByteSet range(unsigned char first, unsigned char last);
  ByteSet& add(unsigned char first, unsigned char last);
  bool has(unsigned char c) const { return (bits_[c >> 6] >> (c & 63)) & 1u; }
  bool operator==(const ByteSet&) const = default;

 private:
  std::array<std::uint64_t, 4> bits_{};
};

class Grammar {
 public:
  using Rule = std::uint32_t;
  /// One symbol of an alternative: a byte of a set, or a rule.
  struct Symbol {
    bool rule = false;
    std::uint32_t index = 0;  ///< into the grammar's byte sets, or a rule
  };
  /// What an alternative's position holds (the reader's view).
  struct Element {
    enum class Kind : std::uint8_t { kBytes, kRule, kEnd } kind;
    std::uint32_t index;
  };

  /// A new rule with no alternative yet (add them before reading; a rule may refer to itself).
  Rule new_rule();
  /// Appends an alternative to `rule`; an empty one matches nothing (the empty string).
  void add(Rule rule, const std::vector<Symbol>& alternative);
  /// A symbol for one byte of `set`.
  Symbol bytes(const ByteSet& set);
  static Symbol call(Rule rule) { return Symbol{true, rule}; }
  /// The symbols that match exactly `text`.
  std::vector<Symbol> literal(std::string_view text);
  /// A new rule matching `item` from `min` to `max` times (no max: any number).
  Rule repeat(Rule item, std::int64_t min, std::optional<std::int64_t> max);
  /// A new rule matching any branch: its text, then its symbols. The texts are laid out as a
  /// trie (alternatives that share a beginning read it once), so that a reader holds one way per
  /// distinct next byte rather than one per branch: enums of many values and many tools stay
  /// within GrammarReader::kMaxHeads.
  Rule choice(const std::vector<std::pair<std::string, std::vector<Symbol>>>& branches);

  /// Whether `rule` can match the empty string (looking at the rules it reaches only).
  bool can_be_empty(Rule rule) const;
  /// The fewest and the most bytes a text of `rule` has; nullopt when `rule` reaches itself (so
  /// its texts may be of any length) or reaches a rule without alternatives.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> length_bounds(Rule rule) const;
  /// The first rule that can reach itself without reading a byte, or none.
  std::optional<Rule> left_recursive() const;

  std::size_t rules() const { return rules_.size(); }
  std::size_t elements() const { return elements_.size(); }  ///< symbols and alternatives' ends
  const std::vector<std::uint32_t>& alternatives(Rule rule) const { return rules_[rule]; }
  const Element& element(std::uint32_t at) const { return elements_[at]; }
  const ByteSet& set(std::uint32_t index) const { return sets_[index]; }

 private:
  // Per rule of `among` (every rule when empty): whether it can match the empty string.
  std::vector<char> nullable_rules(const std::vector<Rule>& among = {}) const;

  std::vector<std::vector<std::uint32_t>> rules_;  // each alternative's first element
  std::vector<Element> elements_;                  // alternatives one after another, each closed by kEnd
  std::vector<ByteSet> sets_;
};

/// Symbols one after the other.
inline std::vector<Grammar::Symbol> operator+(std::vector<Grammar::Symbol> a, const std::vector<Grammar::Symbol>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
/// A call of `rule` as a sequence, to join with `+`.
inline std::vector<Grammar::Symbol> call(Grammar::Rule rule) { return {Grammar::call(rule)}; }

/// Follows a grammar's `start` rule byte by byte.
class GrammarReader {
 public:
  static constexpr std::uint16_t kMaxDepth = 512;
  static constexpr std::size_t kMaxHeads = 64;
  /// A set of stacks, each given by its top frame; -1 is a stack whose start rule has ended.
  using Heads = std::vector<std::int32_t>;

  /// `grammar` must outlive the reader and have no left recursion.
  GrammarReader(const Grammar& grammar, Grammar::Rule start);

  /// Takes one byte; false (and nothing changed) when no way to go on reads it.
  bool feed(unsigned char c);
  /// Takes every byte of `text`; false at the first refused one (the reader then holds the bytes
  /// before it).
  bool feed(std::string_view text);
  /// Whether the start rule can end here.
  bool complete() const { return ended(heads_); }
  /// Whether some byte can come next.
  bool can_continue() const { return open(heads_); }

  // For trying many continuations from the current state (a vocabulary's tokens): advance() adds
  // frames past mark(), which release() drops again; the current state is never changed.
  const Heads& heads() const { return heads_; }
  /// The heads after reading `c` from `from` (empty: refused).
  void advance(const Heads& from, unsigned char c, Heads& to);
  std::size_t mark() const { return frames_.size(); }
  void release(std::size_t mark) { frames_.resize(mark); }
  static bool ended(const Heads& heads);
  static bool open(const Heads& heads);
  /// A key equal for two sets of heads exactly when they continue alike.
  std::string key(const Heads& heads) const;

 private:
  struct Frame {
    std::uint32_t at;      // the element to read next
    std::int32_t parent;   // the frame to go on with after this alternative ends, -1 none
    std::uint16_t depth;
  };
  std::int32_t push(std::uint32_t at, std::int32_t parent);
  bool same(std::int32_t a, std::int32_t b) const;
  void expand(std::int32_t frame, Heads& out, int budget);
  void insert(std::int32_t frame, Heads& out) const;
  void compact();

  const Grammar& grammar_;
  std::vector<Frame> frames_;
  Heads heads_;
};

}  // namespace sepal::api

#include "actors/api/grammar.h"

#include <algorithm>
#include <functional>
#include <limits>

#include "kernels/error.h"

namespace sepal::api {

ByteSet ByteSet::of(std::string_view chars) {
  ByteSet s;
  for (const char c : chars) s.add(static_cast<unsigned char>(c), static_cast<unsigned char>(c));
  return s;
}

ByteSet ByteSet::range(unsigned char first, unsigned char last) { return ByteSet().add(first, last); }

ByteSet& ByteSet::add(unsigned char first, unsigned char last) {
  for (unsigned c = first; c <= last; ++c) bits_[c >> 6] |= std::uint64_t{1} << (c & 63);
  return *this;
}

Grammar::Rule Grammar::new_rule() {
  rules_.emplace_back();
  return static_cast<Rule>(rules_.size() - 1);
}

void Grammar::add(Rule rule, const std::vector<Symbol>& alternative) {
  SEPAL_CHECK(rule < rules_.size());
  rules_[rule].push_back(static_cast<std::uint32_t>(elements_.size()));
  for (const Symbol& s : alternative) {
    SEPAL_CHECK(s.rule ? s.index < rules_.size() : s.index < sets_.size());
    elements_.push_back(Element{s.rule ? Element::Kind::kRule : Element::Kind::kBytes, s.index});
  }
  elements_.push_back(Element{Element::Kind::kEnd, 0});
}

Grammar::Symbol Grammar::bytes(const ByteSet& set) {
  sets_.push_back(set);
  return Symbol{false, static_cast<std::uint32_t>(sets_.size() - 1)};
}

std::vector<Grammar::Symbol> Grammar::literal(std::string_view text) {
  std::vector<Symbol> out;
  for (const char c : text) out.push_back(bytes(ByteSet::of(std::string_view(&c, 1))));
  return out;
}

Grammar::Rule Grammar::choice(const std::vector<std::pair<std::string, std::vector<Symbol>>>& branches) {
  std::vector<std::size_t> order(branches.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return branches[a].first < branches[b].first; });
  // node(from, to, depth): the branches order[from, to), which share their first `depth` bytes.
  const auto node = [&](const auto& self, std::size_t from, std::size_t to, std::size_t depth) -> Rule {
    const Rule rule = new_rule();
    std::size_t i = from;
    while (i < to) {
      const std::string& text = branches[order[i]].first;
      if (text.size() == depth) {  // this branch's text ends here: its symbols
        add(rule, branches[order[i]].second);
        ++i;
        continue;
      }
      std::size_t j = i + 1;
      while (j < to && branches[order[j]].first.size() > depth && branches[order[j]].first[depth] == text[depth]) ++j;
      // Bytes every branch of [i, j) shares from `depth` on, read as one run.
      std::size_t common = depth + 1;
      while (true) {
        bool all = true;
        for (std::size_t k = i; k < j && all; ++k) {
          const std::string& t = branches[order[k]].first;
          all = t.size() > common && t[common] == text[common];
        }
        if (!all) break;
        ++common;
      }
      std::vector<Symbol> run = literal(std::string_view(text).substr(depth, common - depth));
      run.push_back(call(self(self, i, j, common)));
      add(rule, run);
      i = j;
    }
    return rule;
  };
  return node(node, 0, branches.size(), 0);
}

Grammar::Rule Grammar::repeat(Rule item, std::int64_t min, std::optional<std::int64_t> max) {
  Rule tail = new_rule();
  add(tail, {});
  if (!max) {
    add(tail, {call(item), call(tail)});
  } else {
    for (std::int64_t k = min; k < *max; ++k) {
      const Rule longer = new_rule();
      add(longer, {});
      add(longer, {call(item), call(tail)});
      tail = longer;
    }
  }
  std::vector<Symbol> all(static_cast<std::size_t>(min), call(item));
  all.push_back(call(tail));
  const Rule out = new_rule();
  add(out, all);
  return out;
}

std::vector<char> Grammar::nullable_rules(const std::vector<Rule>& among) const {
  std::vector<char> nullable(rules_.size(), 0);
  std::vector<Rule> all;
  if (among.empty()) {
    for (Rule r = 0; r < rules_.size(); ++r) all.push_back(r);
  }
  const std::vector<Rule>& rules = among.empty() ? all : among;
  const auto alternative_nullable = [&](std::uint32_t at) {
    for (; elements_[at].kind != Element::Kind::kEnd; ++at) {
      if (elements_[at].kind == Element::Kind::kBytes || !nullable[elements_[at].index]) return false;
    }
    return true;
  };
  for (bool changed = true; changed;) {  // to a fixed point
    changed = false;
    for (const Rule r : rules) {
      if (nullable[r]) continue;
      for (const std::uint32_t at : rules_[r]) {
        if (alternative_nullable(at)) {
          nullable[r] = 1;
          changed = true;
          break;
        }
      }
    }
  }
  return nullable;
}

bool Grammar::can_be_empty(Rule rule) const {
  // The rules `rule` reaches, then the fixed point over them alone.
  std::vector<char> seen(rules_.size(), 0);
  std::vector<Rule> reached{rule}, todo{rule};
  seen[rule] = 1;
  while (!todo.empty()) {
    const Rule r = todo.back();
    todo.pop_back();
    for (std::uint32_t at : rules_[r]) {
      for (; elements_[at].kind != Element::Kind::kEnd; ++at) {
        const Element& e = elements_[at];
        if (e.kind == Element::Kind::kRule && !seen[e.index]) {
          seen[e.index] = 1;
          reached.push_back(e.index);
          todo.push_back(e.index);
        }
      }
    }
  }
  return nullable_rules(reached)[rule] != 0;
}

std::optional<std::pair<std::uint64_t, std::uint64_t>> Grammar::length_bounds(Rule rule) const {
  using Bounds = std::pair<std::uint64_t, std::uint64_t>;
  enum : char { kUnseen, kOnPath, kDone };
  std::vector<char> state(rules_.size(), kUnseen);
  std::vector<Bounds> bounds(rules_.size());
  // Depth first over the rules `rule` reaches; false on a cycle or a rule that matches nothing.
  const auto visit = [&](const auto& self, Rule r) -> bool {
    if (state[r] == kDone) return true;
    if (state[r] == kOnPath || rules_[r].empty()) return false;
    state[r] = kOnPath;
    Bounds b{std::numeric_limits<std::uint64_t>::max(), 0};
    for (std::uint32_t at : rules_[r]) {
      Bounds alt{0, 0};
      for (; elements_[at].kind != Element::Kind::kEnd; ++at) {
        const Element& e = elements_[at];
        if (e.kind == Element::Kind::kRule) {
          if (!self(self, e.index)) return false;
          alt.first += bounds[e.index].first;
          alt.second += bounds[e.index].second;
        } else {
          alt.first += 1;
          alt.second += 1;
        }
      }
      b.first = std::min(b.first, alt.first);
      b.second = std::max(b.second, alt.second);
    }
    bounds[r] = b;
    state[r] = kDone;
    return true;
  };
  if (!visit(visit, rule)) return std::nullopt;
  return bounds[rule];
}

std::optional<Grammar::Rule> Grammar::left_recursive() const {
  const std::vector<char> nullable = nullable_rules();
  // A cycle among "begins with" edges: A -> B when B can come first in an alternative of A.
  std::vector<char> color(rules_.size(), 0);  // 0 unseen, 1 on the path, 2 done
  std::optional<Rule> found;
  const std::function<void(Rule)> visit = [&](Rule r) {
    color[r] = 1;
    for (const std::uint32_t start : rules_[r]) {
      for (std::uint32_t at = start; !found && elements_[at].kind == Element::Kind::kRule; ++at) {
        const Rule next = elements_[at].index;
        if (color[next] == 1) found = next;
        else if (color[next] == 0) visit(next);
        if (!nullable[next]) break;
      }
    }
    color[r] = 2;
  };
  for (Rule r = 0; r < rules_.size() && !found; ++r) {
    if (color[r] == 0) visit(r);
  }
  return found;
}

GrammarReader::GrammarReader(const Grammar& grammar, Grammar::Rule start) : grammar_(grammar) {
  SEPAL_CHECK(start < grammar.rules());
  for (const std::uint32_t at : grammar.alternatives(start)) {
    const std::int32_t frame = push(at, -1);
    if (frame >= 0) expand(frame, heads_, 0);
  }
}

std::int32_t GrammarReader::push(std::uint32_t at, std::int32_t parent) {
  const std::uint16_t depth = parent < 0 ? 1 : static_cast<std::uint16_t>(frames_[static_cast<std::size_t>(parent)].depth + 1);
  if (depth > kMaxDepth) return -2;
  frames_.push_back(Frame{at, parent, depth});
  return static_cast<std::int32_t>(frames_.size() - 1);
}

bool GrammarReader::same(std::int32_t a, std::int32_t b) const {
  while (a != b) {
    if (a < 0 || b < 0) return false;
    const Frame& fa = frames_[static_cast<std::size_t>(a)];
    const Frame& fb = frames_[static_cast<std::size_t>(b)];
    if (fa.at != fb.at) return false;
    a = fa.parent;
    b = fb.parent;
  }
  return true;
}

void GrammarReader::insert(std::int32_t frame, Heads& out) const {
  for (const std::int32_t h : out) {
    if (same(h, frame)) return;
  }
  if (out.size() < kMaxHeads) out.push_back(frame);
}

// Follows `frame` through rule calls and alternatives' ends to the frames that read a byte next
// (or -1 where the start rule ends), adding them to `out`.
void GrammarReader::expand(std::int32_t frame, Heads& out, int budget) {
  // No left recursion means each call here reads nearer to a byte; the budget guards the stack.
  if (budget > 4 * kMaxDepth) return;
  if (frame < 0) {
    insert(-1, out);
    return;
  }
  const Frame f = frames_[static_cast<std::size_t>(frame)];
  const Grammar::Element& e = grammar_.element(f.at);
  switch (e.kind) {
    case Grammar::Element::Kind::kBytes:
      insert(frame, out);
      return;
    case Grammar::Element::Kind::kEnd:
      expand(f.parent, out, budget + 1);
      return;
    case Grammar::Element::Kind::kRule: {
      // Where to go on after the rule; a rule called last in its alternative returns straight
      // to the caller's caller, so right recursion keeps the stack flat.
      std::int32_t back = f.parent;
      if (grammar_.element(f.at + 1).kind != Grammar::Element::Kind::kEnd) {
        back = push(f.at + 1, f.parent);
        if (back == -2) return;
      }
      for (const std::uint32_t at : grammar_.alternatives(e.index)) {
        const std::int32_t child = push(at, back);
        if (child >= 0) expand(child, out, budget + 1);
      }
      return;
    }
  }
}

void GrammarReader::advance(const Heads& from, unsigned char c, Heads& to) {
  to.clear();
  for (const std::int32_t h : from) {
    if (h < 0) continue;
    const Frame f = frames_[static_cast<std::size_t>(h)];
    const Grammar::Element& e = grammar_.element(f.at);
    if (e.kind != Grammar::Element::Kind::kBytes || !grammar_.set(e.index).has(c)) continue;
    const std::int32_t next = push(f.at + 1, f.parent);
    if (next >= 0) expand(next, to, 0);
  }
}

bool GrammarReader::feed(unsigned char c) {
  const std::size_t before = mark();
  Heads next;
  advance(heads_, c, next);
  if (next.empty()) {
    release(before);
    return false;
  }
  heads_ = std::move(next);
  if (frames_.size() > 4096) compact();
  return true;
}

bool GrammarReader::feed(std::string_view text) {
  for (const char c : text) {
    if (!feed(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool GrammarReader::ended(const Heads& heads) {
  return std::find(heads.begin(), heads.end(), -1) != heads.end();
}

bool GrammarReader::open(const Heads& heads) {
  return std::any_of(heads.begin(), heads.end(), [](std::int32_t h) { return h >= 0; });
}

std::string GrammarReader::key(const Heads& heads) const {
  std::vector<std::string> stacks;
  for (std::int32_t h : heads) {
    std::string s;
    for (; h >= 0; h = frames_[static_cast<std::size_t>(h)].parent) {
      const std::uint32_t at = frames_[static_cast<std::size_t>(h)].at;
      s.append(reinterpret_cast<const char*>(&at), sizeof at);
    }
    stacks.push_back(std::move(s));
  }
  std::sort(stacks.begin(), stacks.end());
  std::string out;
  for (const std::string& s : stacks) {
    out += std::to_string(s.size());
    out += ':';
    out += s;
  }
  return out;
}

// Keeps only the frames the heads reach.
void GrammarReader::compact() {
  std::vector<Frame> kept;
  std::vector<std::int32_t> moved(frames_.size(), -1);
  const std::function<std::int32_t(std::int32_t)> copy = [&](std::int32_t h) -> std::int32_t {
    if (h < 0) return h;
    if (moved[static_cast<std::size_t>(h)] >= 0) return moved[static_cast<std::size_t>(h)];
    Frame f = frames_[static_cast<std::size_t>(h)];
    f.parent = copy(f.parent);
    kept.push_back(f);
    return moved[static_cast<std::size_t>(h)] = static_cast<std::int32_t>(kept.size() - 1);
  };
  for (std::int32_t& h : heads_) h = copy(h);
  frames_ = std::move(kept);
}

}  // namespace sepal::api

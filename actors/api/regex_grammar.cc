#include "actors/api/regex_grammar.h"

#include <algorithm>
#include <bitset>
#include <cctype>
#include <cstdint>
#include <optional>
#include <variant>

#include "actors/api/json_schema.h"
#include "model/utf8.h"

namespace sepal::api {

namespace {

using Symbols = std::vector<Grammar::Symbol>;
using Ascii = std::bitset<128>;

Ascii ascii_range(int first, int last) {
  Ascii a;
  for (int c = first; c <= last; ++c) a.set(static_cast<std::size_t>(c));
  return a;
}

const Ascii kPrintable = ascii_range(0x20, 0x7e);

Ascii digit_class() { return ascii_range('0', '9'); }
Ascii word_class() { return ascii_range('a', 'z') | ascii_range('A', 'Z') | digit_class() | ascii_range('_', '_'); }
Ascii space_class() {
  Ascii a;
  for (const char c : {' ', '\t', '\n', '\r', '\f', '\v'}) a.set(static_cast<std::size_t>(c));
  return a;
}

// How JSON writes a character of code point `c` inside a string: its UTF-8 bytes, or an escape.
std::string json_text(std::uint32_t c) {
  switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\t': return "\\t";
    case '\r': return "\\r";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default: break;
  }
  static const char kHex[] = "0123456789abcdef";
  if (c < 0x20) return std::string("\\u00") + kHex[c >> 4] + kHex[c & 15];
  std::string out;
  utf8_append(out, static_cast<char32_t>(c));
  return out;
}

class Parser {
 public:
  Parser(Grammar& g, const std::string& pattern, const std::string& at) : g_(g), p_(pattern), at_(at) {}

  Grammar::Rule whole() {
    std::size_t end = p_.size();
    if (p_.size() > 0 && p_[0] == '^') i_ = 1;
    // A trailing $ that is not escaped (an even number of backslashes before it).
    if (end > i_ && p_[end - 1] == '$') {
      std::size_t slashes = 0;
      while (end - 1 - slashes > i_ && p_[end - 2 - slashes] == '\\') ++slashes;
      if (slashes % 2 == 0) --end;
    }
    end_ = end;
    const Grammar::Rule r = alternation();
    if (i_ != end_) fail("an unmatched ')'");
    return r;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw SchemaError{"at " + at_ + ": 'pattern' " + why + " (at character " + std::to_string(i_) + ") is not supported"};
  }
  bool more() const { return i_ < end_; }
  char peek() const { return p_[i_]; }

  Grammar::Rule alternation() {
    const Grammar::Rule r = g_.new_rule();
    g_.add(r, concatenation());
    while (more() && peek() == '|') {
      ++i_;
      g_.add(r, concatenation());
    }
    return r;
  }

  Symbols concatenation() {
    Symbols out;
    while (more() && peek() != '|' && peek() != ')') {
      const Grammar::Rule item = atom();
      out.push_back(Grammar::call(quantified(item)));
    }
    return out;
  }

  std::optional<std::int64_t> number() {
    const std::size_t start = i_;
    std::int64_t n = 0;
    while (more() && peek() >= '0' && peek() <= '9' && i_ - start < 6) n = n * 10 + (p_[i_++] - '0');
    if (i_ == start) return std::nullopt;
    return n;
  }

  Grammar::Rule quantified(Grammar::Rule item) {
    if (!more()) return item;
    std::int64_t min = 0;
    std::optional<std::int64_t> max;
    const char c = peek();
    if (c == '?') {
      max = 1;
      ++i_;
    } else if (c == '*') {
      ++i_;
    } else if (c == '+') {
      min = 1;
      ++i_;
    } else if (c == '{') {
      const std::size_t start = i_++;
      const auto first = number();
      bool ok = first.has_value();
      if (ok) {
        min = *first;
        max = first;
        if (more() && peek() == ',') {
          ++i_;
          max = number();
        }
        ok = more() && peek() == '}';
      }
      if (!ok) {  // not a quantifier: '{' is a character, read next
        i_ = start;
        return item;
      }
      ++i_;
      constexpr std::int64_t kMaxRepeat = 1024;
      if (min > kMaxRepeat || (max && *max > kMaxRepeat)) fail("a repetition above 1024");
      if (max && *max < min) fail("a repetition {n,m} with m below n");
    } else {
      return item;
    }
    if (more() && peek() == '?') ++i_;  // lazy: the same strings
    // A group that can match nothing, repeated without bound, would loop without reading: it
    // is taken up to `min` times (or once), a part of the same strings.
    if (!max && g_.can_be_empty(item)) max = std::max<std::int64_t>(min, 1);
    return g_.repeat(item, min, max);
  }

  Grammar::Rule characters(const Ascii& set) {
    if (set.none()) fail("a class that matches no printable character");
    const Grammar::Rule r = g_.new_rule();
    ByteSet plain;
    bool any_plain = false;
    for (std::size_t c = 0; c < 128; ++c) {
      if (!set[c]) continue;
      if (c >= 0x20 && c != '"' && c != '\\') {
        plain.add(static_cast<unsigned char>(c), static_cast<unsigned char>(c));
        any_plain = true;
      } else {
        g_.add(r, g_.literal(json_text(static_cast<std::uint32_t>(c))));
      }
    }
    if (any_plain) g_.add(r, {g_.bytes(plain)});
    return r;
  }

  Grammar::Rule literal(std::uint32_t c) {
    const Grammar::Rule r = g_.new_rule();
    g_.add(r, g_.literal(json_text(c)));
    return r;
  }

  std::uint32_t hex4() {
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      if (!more() || !std::isxdigit(static_cast<unsigned char>(peek()))) fail("a \\u escape without 4 hex digits");
      const char h = p_[i_++];
      v = v * 16 + static_cast<std::uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    if (v >= 0xd800 && v <= 0xdfff) fail("a surrogate escape");
    return v;
  }

  // After '\': a class (d, w, s and negations), or one character.
  std::variant<Ascii, std::uint32_t> escape() {
    if (!more()) fail("a trailing backslash");
    const char c = p_[i_++];
    switch (c) {
      case 'd': return digit_class();
      case 'w': return word_class();
      case 's': return space_class();
      case 'D': return kPrintable & ~digit_class();
      case 'W': return kPrintable & ~word_class();
      case 'S': return kPrintable & ~space_class();
      case 'n': return std::uint32_t{'\n'};
      case 't': return std::uint32_t{'\t'};
      case 'r': return std::uint32_t{'\r'};
      case 'f': return std::uint32_t{'\f'};
      case 'v': return std::uint32_t{'\v'};
      case '0': return std::uint32_t{0};
      case 'u': return hex4();
      default: break;
    }
    if (std::isalnum(static_cast<unsigned char>(c))) {
      i_ -= 2;  // at the backslash
      fail(std::string("the escape \\") + c);
    }
    if (static_cast<unsigned char>(c) >= 0x80) fail("an escaped non-ASCII character");
    return static_cast<std::uint32_t>(static_cast<unsigned char>(c));
  }

  // One character of a class (ASCII only).
  std::variant<Ascii, std::uint32_t> class_item() {
    const char c = p_[i_++];
    if (c == '\\') {
      auto e = escape();
      if (auto* code = std::get_if<std::uint32_t>(&e); code && *code >= 0x80) fail("a non-ASCII character in a class");
      return e;
    }
    if (static_cast<unsigned char>(c) >= 0x80) fail("a non-ASCII character in a class");
    return static_cast<std::uint32_t>(static_cast<unsigned char>(c));
  }

  Grammar::Rule char_class() {
    bool negated = false;
    if (more() && peek() == '^') {
      negated = true;
      ++i_;
    }
    Ascii set;
    bool first = true;
    while (true) {
      if (!more()) fail("an unclosed class");
      if (peek() == ']' && !first) break;
      if (peek() == ']') fail("an empty class");
      first = false;
      auto item = class_item();
      if (auto* s = std::get_if<Ascii>(&item)) {
        set |= *s;
        continue;
      }
      const std::uint32_t lo = std::get<std::uint32_t>(item);
      if (i_ + 1 < end_ && peek() == '-' && p_[i_ + 1] != ']') {
        ++i_;
        auto upper = class_item();
        if (!std::holds_alternative<std::uint32_t>(upper)) fail("a range that ends in a class");
        const std::uint32_t hi = std::get<std::uint32_t>(upper);
        if (hi < lo) fail("a range out of order");
        set |= ascii_range(static_cast<int>(lo), static_cast<int>(hi));
      } else {
        set.set(lo);
      }
    }
    ++i_;  // ']'
    return characters(negated ? kPrintable & ~set : set);
  }

  Grammar::Rule atom() {
    const char c = p_[i_];
    if (c == '(') {
      ++i_;
      if (i_ + 1 < end_ && peek() == '?') {
        const char kind = p_[i_ + 1];
        if (kind != ':') fail("a look-around, named group or group flag");
        i_ += 2;
      }
      const Grammar::Rule inner = alternation();
      if (!more() || peek() != ')') fail("an unclosed group");
      ++i_;
      return inner;
    }
    if (c == '[') {
      ++i_;
      return char_class();
    }
    if (c == '.') {
      ++i_;
      return characters(kPrintable);
    }
    if (c == '\\') {
      ++i_;
      auto e = escape();
      if (auto* s = std::get_if<Ascii>(&e)) return characters(*s);
      return literal(std::get<std::uint32_t>(e));
    }
    if (c == '^' || c == '$') fail("an anchor inside the expression");
    if (c == '*' || c == '+' || c == '?') fail("a quantifier with nothing to repeat");
    // A character as written (its UTF-8 bytes).
    const auto lead = static_cast<unsigned char>(c);
    const std::size_t length = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
    if (i_ + length > end_) fail("a cut UTF-8 character");
    const std::string bytes = p_.substr(i_, length);
    i_ += length;
    if (length == 1) return literal(lead);
    const Grammar::Rule r = g_.new_rule();
    g_.add(r, g_.literal(bytes));
    return r;
  }

  Grammar& g_;
  const std::string& p_;
  std::string at_;
  std::size_t i_ = 0, end_ = 0;
};

}  // namespace

Grammar::Rule pattern_rule(Grammar& grammar, const std::string& pattern, const std::string& at) {
  return Parser(grammar, pattern, at).whole();
}

}  // namespace sepal::api

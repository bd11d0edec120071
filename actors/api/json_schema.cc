#include "actors/api/json_schema.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "actors/api/regex_grammar.h"

namespace sepal::api {

namespace {

using ojson = nlohmann::ordered_json;
using Symbols = std::vector<Grammar::Symbol>;

const std::set<std::string> kAnnotations = {"title",      "description", "default",  "examples",
                                            "$schema",    "$id",         "$comment", "deprecated",
                                            "readOnly",   "writeOnly",   "$defs",    "definitions",
                                            "discriminator"};  // OpenAPI's, which validators ignore
const std::set<std::string> kConstraints = {"type",     "properties", "required",  "additionalProperties",
                                            "items",    "minItems",   "maxItems",  "minLength",
                                            "maxLength", "enum",      "const",     "anyOf",     "oneOf",
                                            "allOf",    "$ref",       "minimum",   "maximum",
                                            "exclusiveMinimum", "exclusiveMaximum", "format", "pattern",
                                            "prefixItems", "additionalItems", "multipleOf", "uniqueItems",
                                            "minProperties", "maxProperties"};
const std::set<std::string> kTypes = {"object", "array", "string", "number", "integer", "boolean", "null"};

bool matches_type(const ojson& v, const std::string& type) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "number") return v.is_number();
  if (type == "integer") return v.is_number_integer() || (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<std::int64_t>(v.get<double>())));
  if (type == "boolean") return v.is_boolean();
  return v.is_null();
}

}  // namespace

void JsonSchemaGrammar::fail(const std::string& at, const std::string& why) const { throw SchemaError{"at " + at + ": " + why}; }

void JsonSchemaGrammar::check_size(const std::string& at) const {
  if (g_.elements() > kMaxElements) fail(at, "the schema needs too large a grammar (lower its length and item bounds)");
}

Grammar::Rule JsonSchemaGrammar::rule_of(std::initializer_list<Symbols> alternatives) {
  const Grammar::Rule r = g_.new_rule();
  for (const Symbols& a : alternatives) g_.add(r, a);
  return r;
}

Grammar::Rule JsonSchemaGrammar::whitespace() {
  if (ws_) return *ws_;
  Grammar::Rule indent = rule_of({{}});
  for (int i = 0; i < 20; ++i) indent = rule_of({{}, {g_.bytes(ByteSet::of(" \t")), Grammar::call(indent)}});
  ws_ = rule_of({{}, g_.literal(" "), g_.literal("\n") + call(indent)});
  return *ws_;
}

// One character of a string's text: UTF-8 (no surrogates, nothing overlong), no control
// characters, escapes with proper surrogate pairs.
Grammar::Rule JsonSchemaGrammar::string_char() {
  if (char_) return *char_;
  const auto set = [&](ByteSet s) { return g_.bytes(s); };
  const auto cont = [&] { return set(ByteSet::range(0x80, 0xbf)); };
  const ByteSet hex = ByteSet::range('0', '9').add('a', 'f').add('A', 'F');
  const auto h = [&] { return set(hex); };
  const Grammar::Rule plain_escape = rule_of({
      {set(ByteSet::range('0', '9').add('a', 'c').add('A', 'C').add('e', 'f').add('E', 'F')), h(), h(), h()},
      {set(ByteSet::of("dD")), set(ByteSet::range('0', '7')), h(), h()},
  });
  const ByteSet text = ByteSet::range(0x20, 0x21).add(0x23, 0x5b).add(0x5d, 0x7f);
  char_ = rule_of({
      {set(text)},
      g_.literal("\\") + Symbols{set(ByteSet::of("\"\\/bfnrt"))},
      g_.literal("\\u") + call(plain_escape),
      g_.literal("\\u") + Symbols{set(ByteSet::of("dD")), set(ByteSet::of("89abAB")), h(), h()} + g_.literal("\\u") +
          Symbols{set(ByteSet::of("dD")), set(ByteSet::range('c', 'f').add('C', 'F')), h(), h()},
      {set(ByteSet::range(0xc2, 0xdf)), cont()},
      {set(ByteSet::of("\xe0")), set(ByteSet::range(0xa0, 0xbf)), cont()},
      {set(ByteSet::range(0xe1, 0xec).add(0xee, 0xef)), cont(), cont()},
      {set(ByteSet::of("\xed")), set(ByteSet::range(0x80, 0x9f)), cont()},
      {set(ByteSet::of("\xf0")), set(ByteSet::range(0x90, 0xbf)), cont(), cont()},
      {set(ByteSet::range(0xf1, 0xf3)), cont(), cont(), cont()},
      {set(ByteSet::of("\xf4")), set(ByteSet::range(0x80, 0x8f)), cont(), cont()},
  });
  return *char_;
}

Grammar::Rule JsonSchemaGrammar::string() {
  if (!string_) string_ = rule_of({g_.literal("\"") + call(g_.repeat(string_char(), 0, std::nullopt)) + g_.literal("\"")});
  return *string_;
}

Grammar::Rule JsonSchemaGrammar::digits(std::int64_t min, std::int64_t max) {
  return g_.repeat(rule_of({{g_.bytes(ByteSet::range('0', '9'))}}), min, max);
}

Grammar::Rule JsonSchemaGrammar::integer() {
  if (integer_) return *integer_;
  const Grammar::Rule magnitude = rule_of({g_.literal("0"), {g_.bytes(ByteSet::range('1', '9')), Grammar::call(digits(0, 15))}});
  integer_ = rule_of({call(magnitude), g_.literal("-") + call(magnitude)});
  return *integer_;
}

Grammar::Rule JsonSchemaGrammar::number() {
  if (number_) return *number_;
  const Grammar::Rule fraction = rule_of({{}, g_.literal(".") + call(digits(1, 16))});
  const Grammar::Rule sign = rule_of({{}, {g_.bytes(ByteSet::of("+-"))}});
  const Grammar::Rule exponent = rule_of({{}, {g_.bytes(ByteSet::of("eE")), Grammar::call(sign), Grammar::call(digits(1, 3))}});
  number_ = rule_of({{Grammar::call(integer()), Grammar::call(fraction), Grammar::call(exponent)}});
  return *number_;
}

namespace {

constexpr std::int64_t kLargest = 9'999'999'999'999'999;  // the integers the grammar writes have 16 digits at most

// "'key' rest", built without operator+ (which trips GCC 12's -Wrestrict on string temporaries).
std::string keyword(const char* key, const char* rest) {
  std::string out = "'";
  out.append(key).append("'").append(rest);
  return out;
}

std::int64_t power_of_ten(int n) {
  std::int64_t p = 1;
  while (n-- > 0) p *= 10;
  return p;
}

}  // namespace

// Digit strings of from.size() digits, from `from` to `to` (same length, from <= to).
JsonSchemaGrammar::Symbols JsonSchemaGrammar::same_length(const std::string& from, const std::string& to) {
  if (from.empty()) return {};
  const std::size_t n = from.size();
  const ByteSet any_digit = ByteSet::range('0', '9');
  if (from.find_first_not_of('0') == std::string::npos && to.find_first_not_of('9') == std::string::npos) {
    Symbols all;
    for (std::size_t i = 0; i < n; ++i) all.push_back(g_.bytes(any_digit));
    return all;
  }
  const auto first = static_cast<unsigned char>(from[0]), last = static_cast<unsigned char>(to[0]);
  if (first == last) return Symbols{g_.bytes(ByteSet::range(first, first))} + same_length(from.substr(1), to.substr(1));
  if (n == 1) return {g_.bytes(ByteSet::range(first, last))};
  const Grammar::Rule r = g_.new_rule();
  g_.add(r, Symbols{g_.bytes(ByteSet::range(first, first))} + same_length(from.substr(1), std::string(n - 1, '9')));
  if (first + 1 <= last - 1) {
    Symbols middle{g_.bytes(ByteSet::range(static_cast<unsigned char>(first + 1), static_cast<unsigned char>(last - 1)))};
    for (std::size_t i = 1; i < n; ++i) middle.push_back(g_.bytes(any_digit));
    g_.add(r, middle);
  }
  g_.add(r, Symbols{g_.bytes(ByteSet::range(last, last))} + same_length(std::string(n - 1, '0'), to.substr(1)));
  return call(r);
}

// The decimal texts (no sign, no leading zero) of the integers from lo to hi, 0 <= lo <= hi.
Grammar::Rule JsonSchemaGrammar::natural_range(std::int64_t lo, std::int64_t hi) {
  const Grammar::Rule r = g_.new_rule();
  for (int digits = 1; digits <= 16; ++digits) {
    const std::int64_t a = std::max(lo, digits == 1 ? 0 : power_of_ten(digits - 1));
    const std::int64_t b = std::min(hi, power_of_ten(digits) - 1);
    if (a <= b) g_.add(r, same_length(std::to_string(a), std::to_string(b)));
  }
  return r;
}

// The decimal texts of the multiples of k from lo to hi (0 <= lo <= hi <= kLargest, k >= 2): at
// lo's and hi's lengths, the digits walked from the left with the remainder so far (mod k) and
// whether they still follow lo's or hi's digits (rules free of both depend only on the digits
// left and the remainder); the lengths between, as one automaton. Only states from which a
// multiple can be finished are written, so that the reader never takes a digit it cannot
// complete.
Grammar::Rule JsonSchemaGrammar::multiples_range(std::int64_t lo, std::int64_t hi, std::int64_t k) {
  const auto digit = [&](int d) {
    return g_.bytes(ByteSet::range(static_cast<unsigned char>('0' + d), static_cast<unsigned char>('0' + d)));
  };
  // free[left][r]: `left` more digits, any, after a prefix of remainder r, ending on a multiple.
  std::vector<std::vector<std::optional<Grammar::Rule>>> free(17, std::vector<std::optional<Grammar::Rule>>(static_cast<std::size_t>(k)));
  std::vector<std::vector<char>> free_live(17, std::vector<char>(static_cast<std::size_t>(k), 0));
  free_live[0][0] = 1;
  for (int left = 1; left <= 16; ++left) {
    for (std::int64_t r = 0; r < k; ++r) {
      for (int d = 0; d <= 9 && !free_live[left][r]; ++d) free_live[left][r] = free_live[left - 1][(10 * r + d) % k];
    }
  }
  std::function<Grammar::Rule(int, std::int64_t)> free_rule = [&](int left, std::int64_t r) {
    auto& slot = free[left][static_cast<std::size_t>(r)];
    if (slot) return *slot;
    const Grammar::Rule rule = g_.new_rule();
    slot = rule;
    if (left == 0) {
      g_.add(rule, {});
      return rule;
    }
    for (int d = 0; d <= 9; ++d) {
      const std::int64_t next = (10 * r + d) % k;
      if (!free_live[left - 1][static_cast<std::size_t>(next)]) continue;
      g_.add(rule, Symbols{digit(d), Grammar::call(free_rule(left - 1, next))});
    }
    return rule;
  };
  // One length's multiples from a to b (same number of digits).
  const auto one_length = [&](std::int64_t a, std::int64_t b) -> std::optional<Grammar::Rule> {
    const int length = static_cast<int>(std::to_string(a).size());
    const std::string from = std::to_string(a), to = std::to_string(b);
    // Whether digits pos.. can finish a multiple, given remainder r and the bounds still followed.
    std::map<std::tuple<int, bool, bool, std::int64_t>, bool> live;
    std::function<bool(int, bool, bool, std::int64_t)> alive = [&](int pos, bool low, bool high, std::int64_t r) -> bool {
      if (pos == length) return r == 0;
      if (!low && !high) return free_live[length - pos][static_cast<std::size_t>(r)] != 0;
      const auto key = std::make_tuple(pos, low, high, r);
      if (auto it = live.find(key); it != live.end()) return it->second;
      bool any = false;
      const int first = low ? from[pos] - '0' : 0, last = high ? to[pos] - '0' : 9;
      for (int d = first; d <= last && !any; ++d) any = alive(pos + 1, low && d == first, high && d == last, (10 * r + d) % k);
      return live[key] = any;
    };
    std::map<std::tuple<int, bool, bool, std::int64_t>, Grammar::Rule> rules;
    std::function<Grammar::Rule(int, bool, bool, std::int64_t)> rule_at = [&](int pos, bool low, bool high, std::int64_t r) {
      if (!low && !high) return free_rule(length - pos, r);
      const auto key = std::make_tuple(pos, low, high, r);
      if (auto it = rules.find(key); it != rules.end()) return it->second;
      const Grammar::Rule rule = g_.new_rule();
      rules[key] = rule;
      if (pos == length) {
        g_.add(rule, {});
        return rule;
      }
      const int first = low ? from[pos] - '0' : 0, last = high ? to[pos] - '0' : 9;
      for (int d = first; d <= last; ++d) {
        const bool l = low && d == first, h = high && d == last;
        const std::int64_t next = (10 * r + d) % k;
        if (alive(pos + 1, l, h, next)) g_.add(rule, Symbols{digit(d), Grammar::call(rule_at(pos + 1, l, h, next))});
      }
      return rule;
    };
    if (!alive(0, true, true, 0)) return std::nullopt;
    return rule_at(0, true, true, 0);
  };
  // The lengths strictly between lo's and hi's: a first digit of 1 to 9, then digits until a
  // multiple of between `shortest` and `longest` digits ends. Walked as one automaton over
  // (remainder, digits still due, digits still allowed), so that the reader holds a few ways
  // at once rather than one per length.
  const auto middle = [&](int shortest, int longest) -> std::optional<Grammar::Rule> {
    std::map<std::tuple<std::int64_t, int, int>, bool> live;
    std::function<bool(std::int64_t, int, int)> alive = [&](std::int64_t r, int due, int allowed) -> bool {
      if (due == 0 && r == 0) return true;
      if (allowed == 0) return false;
      const auto key = std::make_tuple(r, due, allowed);
      if (auto it = live.find(key); it != live.end()) return it->second;
      bool any = false;
      for (int d = 0; d <= 9 && !any; ++d) any = alive((10 * r + d) % k, std::max(due - 1, 0), allowed - 1);
      return live[key] = any;
    };
    std::map<std::tuple<std::int64_t, int, int>, Grammar::Rule> rules;
    std::function<Grammar::Rule(std::int64_t, int, int)> rule_at = [&](std::int64_t r, int due, int allowed) {
      const auto key = std::make_tuple(r, due, allowed);
      if (auto it = rules.find(key); it != rules.end()) return it->second;
      const Grammar::Rule rule = g_.new_rule();
      rules[key] = rule;
      if (due == 0 && r == 0) g_.add(rule, {});
      for (int d = 0; d <= 9 && allowed > 0; ++d) {
        const std::int64_t next = (10 * r + d) % k;
        if (alive(next, std::max(due - 1, 0), allowed - 1)) {
          g_.add(rule, Symbols{digit(d), Grammar::call(rule_at(next, std::max(due - 1, 0), allowed - 1))});
        }
      }
      return rule;
    };
    const Grammar::Rule first = g_.new_rule();
    bool any = false;
    for (int d = 1; d <= 9; ++d) {
      if (!alive(d % k, shortest - 1, longest - 1)) continue;
      g_.add(first, Symbols{digit(d), Grammar::call(rule_at(d % k, shortest - 1, longest - 1))});
      any = true;
    }
    if (!any) return std::nullopt;
    return first;
  };
  const Grammar::Rule out = g_.new_rule();
  const int lo_length = static_cast<int>(std::to_string(lo).size()), hi_length = static_cast<int>(std::to_string(hi).size());
  const auto add = [&](std::optional<Grammar::Rule> r) {
    if (r) g_.add(out, {Grammar::call(*r)});
  };
  if (lo_length == hi_length) {
    add(one_length(lo, hi));
  } else {
    add(one_length(lo, power_of_ten(lo_length) - 1));
    if (lo_length + 1 <= hi_length - 1) add(middle(lo_length + 1, hi_length - 1));
    add(one_length(power_of_ten(hi_length - 1), hi));
  }
  return out;
}

Grammar::Rule JsonSchemaGrammar::integer_of(const ojson& schema, const std::string& at) {
  const char* keys[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"};
  if (std::none_of(std::begin(keys), std::end(keys), [&](const char* k) { return schema.contains(k); })) return integer();
  std::int64_t k = 1;
  if (schema.contains("multipleOf")) {
    const ojson& m = schema["multipleOf"];
    if (!m.is_number() || !(m.get<double>() > 0)) fail(at, "'multipleOf' must be a number above 0");
    if (std::floor(m.get<double>()) != m.get<double>()) {
      fail(at, "'multipleOf' of a fraction is not supported (validators comparing doubles disagree on it; whole numbers are)");
    }
    if (m.get<double>() > static_cast<double>(kMaxMultiple)) fail(at, "'multipleOf' above " + std::to_string(kMaxMultiple) + " is not supported");
    k = static_cast<std::int64_t>(m.get<double>());
  }
  const auto bound_of = [&](const char* key) {
    if (!schema[key].is_number()) fail(at, keyword(key, " must be a number"));
    return std::clamp(schema[key].get<double>(), -2.0 * kLargest, 2.0 * kLargest);
  };
  double lo = -static_cast<double>(kLargest), hi = static_cast<double>(kLargest);
  if (schema.contains("minimum")) lo = std::max(lo, std::ceil(bound_of("minimum")));
  if (schema.contains("exclusiveMinimum")) lo = std::max(lo, std::floor(bound_of("exclusiveMinimum")) + 1);
  if (schema.contains("maximum")) hi = std::min(hi, std::floor(bound_of("maximum")));
  if (schema.contains("exclusiveMaximum")) hi = std::min(hi, std::ceil(bound_of("exclusiveMaximum")) - 1);
  if (lo > hi) fail(at, "no integer of at most 16 digits lies within its bounds");
  const auto low = static_cast<std::int64_t>(lo), high = static_cast<std::int64_t>(hi);
  // The multiples of k within [low, high], as magnitudes: the non-negative ones, and the negative
  // ones' (a multiple's magnitude is one).
  const auto range = [&](std::int64_t a, std::int64_t b) { return k > 1 ? multiples_range(a, b, k) : natural_range(a, b); };
  const auto has_multiple = [&](std::int64_t a, std::int64_t b) { return (a + k - 1) / k * k <= b; };
  const Grammar::Rule r = g_.new_rule();
  bool any = false;
  if (high >= 0 && has_multiple(std::max<std::int64_t>(low, 0), high)) {
    g_.add(r, call(range(std::max<std::int64_t>(low, 0), high)));
    any = true;
  }
  if (low < 0 && has_multiple(std::max<std::int64_t>(-high, 1), -low)) {
    g_.add(r, g_.literal("-") + call(range(std::max<std::int64_t>(-high, 1), -low)));
    any = true;
  }
  if (!any) fail(at, "no multiple of " + std::to_string(k) + " lies within its bounds");
  check_size(at);
  return r;
}

namespace {

// A bound as an exact decimal: the magnitude's whole part (no leading zeros) and fraction (no
// trailing zeros); zero is never negative.
struct Decimal {
  bool negative = false;
  std::string whole = "0";
  std::string fraction;
};

Decimal decimal_of_text(std::string text) {
  Decimal d;
  if (!text.empty() && text[0] == '-') {
    d.negative = true;
    text.erase(0, 1);
  }
  const std::size_t point = text.find('.');
  d.whole = text.substr(0, point);
  d.fraction = point == std::string::npos ? "" : text.substr(point + 1);
  d.whole.erase(0, std::min(d.whole.find_first_not_of('0'), d.whole.size() - 1));
  while (!d.fraction.empty() && d.fraction.back() == '0') d.fraction.pop_back();
  if (d.whole == "0" && d.fraction.empty()) d.negative = false;
  return d;
}

// The shortest decimal that reads back as `v` (std::to_chars), written out without an exponent.
Decimal decimal_of(double v) {
  char buf[400];  // the longest fixed-notation double, 5e-324, is 326 characters
  const auto written = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  return decimal_of_text(std::string(buf, written.ptr));
}

int compare_magnitudes(const Decimal& a, const Decimal& b) {
  if (a.whole.size() != b.whole.size()) return a.whole.size() < b.whole.size() ? -1 : 1;
  if (const int c = a.whole.compare(b.whole); c != 0) return c < 0 ? -1 : 1;
  const std::size_t n = std::max(a.fraction.size(), b.fraction.size());
  const int c = (a.fraction + std::string(n - a.fraction.size(), '0')).compare(b.fraction + std::string(n - b.fraction.size(), '0'));
  return c < 0 ? -1 : c > 0 ? 1 : 0;
}

int compare(const Decimal& a, const Decimal& b) {
  if (a.negative != b.negative) return a.negative ? -1 : 1;
  return a.negative ? -compare_magnitudes(a, b) : compare_magnitudes(a, b);
}

Decimal negated(Decimal d) {
  if (d.whole != "0" || !d.fraction.empty()) d.negative = !d.negative;
  return d;
}

}  // namespace

// Digit sequences of up to k digits (at least one unless allow_empty), as the digits after a
// decimal point, whose value lies within [0.lo, 0.hi]; no lo is 0, no hi is 1 (excluded).
Grammar::Rule JsonSchemaGrammar::fraction_digits(const std::optional<std::string>& lo, const std::optional<std::string>& hi,
                                                 int k, bool allow_empty) {
  const Grammar::Rule r = g_.new_rule();
  const bool no_lo = !lo || lo->empty();
  if (allow_empty && no_lo) g_.add(r, {});
  if (k == 0) return r;
  const char a = no_lo ? '0' : (*lo)[0];
  const char b = !hi ? '9' : hi->empty() ? '0' : (*hi)[0];
  const auto digit = [&](char from, char to) {
    return g_.bytes(ByteSet::range(static_cast<unsigned char>(from), static_cast<unsigned char>(to)));
  };
  const auto rest = [](const std::optional<std::string>& s) -> std::optional<std::string> {
    if (!s) return std::nullopt;
    return s->empty() ? std::string() : s->substr(1);
  };
  // The first digit: at a lower bound, at an upper bound, or strictly within (any digits after).
  if (!no_lo && a == b && hi) {
    g_.add(r, Symbols{digit(a, a), Grammar::call(fraction_digits(rest(lo), rest(hi), k - 1, true))});
    return r;
  }
  char from = '0', to = '9';
  if (!no_lo) {
    g_.add(r, Symbols{digit(a, a), Grammar::call(fraction_digits(rest(lo), std::nullopt, k - 1, true))});
    from = static_cast<char>(a + 1);
  }
  if (hi) {
    g_.add(r, Symbols{digit(b, b), Grammar::call(fraction_digits(std::nullopt, rest(hi), k - 1, true))});
    to = static_cast<char>(b - 1);
  }
  if (from <= to) g_.add(r, Symbols{digit(from, to), Grammar::call(digits(0, k - 1))});
  return r;
}

// The texts (no sign, no exponent; at most 16 digits before the point and 16 after) of the
// numbers from lo to hi, 0 <= lo <= hi.
Grammar::Rule JsonSchemaGrammar::magnitude_range(const std::string& lo_whole, const std::string& lo_fraction,
                                                 const std::string& hi_whole, const std::string& hi_fraction) {
  constexpr int kFractionDigits = 16;
  const std::optional<std::string> no_bound;
  const auto fraction = [&](const std::optional<std::string>& from, const std::optional<std::string>& to) {
    const Grammar::Rule f = g_.new_rule();
    if (!from || from->empty()) g_.add(f, {});
    g_.add(f, g_.literal(".") + call(fraction_digits(from, to, kFractionDigits, false)));
    return f;
  };
  const std::int64_t low = std::stoll(lo_whole), high = std::stoll(hi_whole);
  const Grammar::Rule r = g_.new_rule();
  if (low == high) {
    g_.add(r, g_.literal(lo_whole) + call(fraction(lo_fraction, hi_fraction)));
    return r;
  }
  g_.add(r, g_.literal(lo_whole) + call(fraction(lo_fraction, no_bound)));
  if (low + 1 <= high - 1) g_.add(r, call(natural_range(low + 1, high - 1)) + call(fraction(no_bound, no_bound)));
  g_.add(r, g_.literal(hi_whole) + call(fraction(no_bound, hi_fraction)));
  return r;
}

// Numbers within minimum/maximum/exclusiveMinimum/exclusiveMaximum, as exact decimals without
// exponents. A bound is the shortest decimal its double reads back as (the bound as written,
// unless written with more than 17 digits); an exclusive bound is the inclusive bound of the
// next double inward, so that what the grammar lets through also passes a validator that
// compares doubles (1.5000000000000001 reads as 1.5).
Grammar::Rule JsonSchemaGrammar::number_of(const ojson& schema, const std::string& at) {
  if (schema.contains("multipleOf")) return integer_of(schema, at);  // whole multiples: integers, a sound subset
  const char* keys[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
  if (std::none_of(std::begin(keys), std::end(keys), [&](const char* k) { return schema.contains(k); })) return number();
  const Decimal largest = decimal_of_text("9999999999999999.9999999999999999");
  std::optional<Decimal> lo, hi;
  for (const char* key : keys) {
    if (!schema.contains(key)) continue;
    const ojson& v = schema[key];
    if (!v.is_number()) fail(at, keyword(key, " must be a number"));
    const std::string name = key;
    const bool upper = name.find("aximum") != std::string::npos;
    const bool exclusive = name.rfind("exclusive", 0) == 0;
    Decimal d;
    if (exclusive) {
      d = decimal_of(std::nextafter(v.get<double>(), upper ? -HUGE_VAL : HUGE_VAL));
    } else if (v.is_number_integer()) {
      d = decimal_of_text(v.dump());
    } else {
      d = decimal_of(v.get<double>());
    }
    std::optional<Decimal>& slot = upper ? hi : lo;
    if (!slot || (upper ? compare(d, *slot) < 0 : compare(d, *slot) > 0)) slot = d;
  }
  if (!lo || compare(*lo, negated(largest)) < 0) lo = negated(largest);
  if (!hi || compare(*hi, largest) > 0) hi = largest;
  if (compare(*lo, *hi) > 0) fail(at, "no number of at most 16 digits before the point and 16 after lies within its bounds");
  const Grammar::Rule r = g_.new_rule();
  const auto range = [&](const Decimal& from, const Decimal& to) {
    return call(magnitude_range(from.whole, from.fraction, to.whole, to.fraction));
  };
  if (!hi->negative) g_.add(r, range(lo->negative ? Decimal{} : *lo, *hi));
  if (lo->negative) g_.add(r, g_.literal("-") + range(hi->negative ? negated(*hi) : Decimal{}, negated(*lo)));
  return r;
}

// `{`, members whose values follow `value`, `}`.
Grammar::Rule JsonSchemaGrammar::members(Grammar::Rule value, std::int64_t min, std::optional<std::int64_t> max) {
  const Grammar::Rule ws = whitespace();
  const Grammar::Rule member =
      rule_of({call(string()) + call(ws) + g_.literal(":") + call(ws) + call(value) + call(ws)});
  if (max && *max == 0) return rule_of({g_.literal("{") + call(ws) + g_.literal("}")});
  const Grammar::Rule next = rule_of({g_.literal(",") + call(ws) + call(member)});
  // One member, then more up to the bound.
  const Grammar::Rule more = g_.repeat(next, std::max<std::int64_t>(min - 1, 0),
                                       max ? std::optional<std::int64_t>(*max - 1) : std::nullopt);
  const Grammar::Rule some = rule_of({call(member) + call(more)});
  const Grammar::Rule body = min > 0 ? some : rule_of({{}, call(some)});
  return rule_of({g_.literal("{") + call(ws) + call(body) + g_.literal("}")});
}

// The properties `properties` lists, in its order, the required ones always, with from `min` to
// `max` of them written: S(i, c) holds the members from property i on with c written before
// it (a comma first when c > 0); states that cannot reach `min` are left out.
Grammar::Rule JsonSchemaGrammar::counted_members(const ojson& properties, const std::set<std::string>& required, std::int64_t min,
                                                 std::optional<std::int64_t> max, const std::string& at, int depth) {
  std::vector<std::pair<std::string, const ojson*>> listed;
  for (const auto& [name, sub] : properties.items()) listed.emplace_back(name, &sub);
  const auto n = static_cast<std::int64_t>(listed.size());
  if (min > n) fail(at, "'minProperties' above the " + std::to_string(n) + " properties 'properties' lists is not supported");
  const std::int64_t most = std::min(max.value_or(n), n);
  const Grammar::Rule ws = whitespace();
  std::vector<Grammar::Rule> members;
  for (const auto& [name, sub] : listed) {
    const std::string key = ojson(name).dump(-1, ' ', false, ojson::error_handler_t::strict);
    const Grammar::Rule value = schema_rule(*sub, at + "/properties/" + name, depth + 1);
    members.push_back(rule_of({g_.literal(key) + call(ws) + g_.literal(":") + call(ws) + call(value) + call(ws)}));
  }
  // The required properties from i on: they must all fit.
  std::vector<std::int64_t> required_from(static_cast<std::size_t>(n + 1), 0);
  for (std::int64_t i = n - 1; i >= 0; --i) required_from[i] = required_from[i + 1] + (required.count(listed[i].first) ? 1 : 0);
  // next[c]: S(i + 1, c), built from the last property back; absent where it cannot succeed.
  std::vector<std::optional<Grammar::Rule>> next(static_cast<std::size_t>(most + 1));
  for (std::int64_t c = min; c <= most; ++c) next[c] = rule_of({{}});
  for (std::int64_t i = n - 1; i >= 0; --i) {
    std::vector<std::optional<Grammar::Rule>> here(static_cast<std::size_t>(most + 1));
    const bool optional = !required.count(listed[i].first);
    for (std::int64_t c = 0; c <= most; ++c) {
      if (c + required_from[i] > most || c + (n - i) < min) continue;
      std::vector<std::vector<Grammar::Symbol>> ways;
      if (c + 1 <= most && next[c + 1]) {
        ways.push_back((c > 0 ? g_.literal(",") + call(ws) : std::vector<Grammar::Symbol>{}) + call(members[i]) + call(*next[c + 1]));
      }
      if (optional && next[c]) ways.push_back({call(*next[c])});
      if (ways.empty()) continue;
      here[c] = g_.new_rule();
      for (const auto& way : ways) g_.add(*here[c], way);
    }
    next = std::move(here);
  }
  if (!next[0]) fail(at, "no object of the properties 'properties' lists keeps 'minProperties' and 'maxProperties'");
  return rule_of({g_.literal("{") + call(ws) + call(*next[0]) + g_.literal("}")});
}

Grammar::Rule JsonSchemaGrammar::any_object() {
  any_value();
  return *object_;
}

// Values holding up to kMaxNesting containers, one inside the other: value(k) holds k at most,
// built from value(k - 1) up.
Grammar::Rule JsonSchemaGrammar::any_value() {
  if (value_) return *value_;
  const Grammar::Rule ws = whitespace();
  Grammar::Rule inner = rule_of({call(string()), call(number()), g_.literal("true"), g_.literal("false"), g_.literal("null")});
  for (int k = 1; k <= kMaxNesting; ++k) {
    const Grammar::Rule object = members(inner);
    const Grammar::Rule item = rule_of({call(inner) + call(ws)});
    const Grammar::Rule more = g_.new_rule();
    g_.add(more, {});
    g_.add(more, g_.literal(",") + call(ws) + call(item) + call(more));
    const Grammar::Rule items = rule_of({{}, call(item) + call(more)});
    const Grammar::Rule array = rule_of({g_.literal("[") + call(ws) + call(items) + g_.literal("]")});
    inner = rule_of({call(object), call(array), call(string()), call(number()), g_.literal("true"), g_.literal("false"),
                     g_.literal("null")});
    if (k == kMaxNesting) object_ = object;
  }
  value_ = inner;
  return *value_;
}

// Exactly `value`, with white space between its tokens as anywhere else.
Grammar::Rule JsonSchemaGrammar::literal_value(const ojson& value) {
  const auto text = [](const ojson& v) { return v.dump(-1, ' ', false, ojson::error_handler_t::strict); };
  if (!value.is_object() && !value.is_array()) return rule_of({g_.literal(text(value))});
  const Grammar::Rule ws = whitespace();
  Symbols out = g_.literal(value.is_object() ? "{" : "[") + call(ws);
  bool first = true;
  for (const auto& [key, item] : value.items()) {
    if (!first) out = out + g_.literal(",") + call(ws);
    first = false;
    if (value.is_object()) out = out + g_.literal(text(key)) + call(ws) + g_.literal(":") + call(ws);
    out = out + call(literal_value(item)) + call(ws);
  }
  return rule_of({out + g_.literal(value.is_object() ? "}" : "]")});
}

namespace {

std::optional<std::int64_t> bound(const ojson& schema, const char* key, const std::string& at, std::int64_t max) {
  if (!schema.contains(key)) return std::nullopt;
  const ojson& v = schema[key];
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0) throw SchemaError{"at " + at + ": '" + key + "' must be a non-negative integer"};
  if (v.get<std::int64_t>() > max) {
    throw SchemaError{"at " + at + ": '" + key + "' above " + std::to_string(max) + " is not supported"};
  }
  return v.get<std::int64_t>();
}

}  // namespace

// The text (without quotes) of a string `format`: RFC 3339's date, time (with its offset),
// date-time and duration, a UUID, a dotted IPv4 address, an IPv6 address, an RFC 1123 host name,
// an email address, an RFC 3986 URI. Each is a sound subset: years 1000 to 9999, February up to the 28th, no leap
// second, an upper-case T and Z, up to 9 digits a duration's number, no leading zeros in IPv4
// addresses, IPv6's full form of eight groups (no "::"), host names of up to 4 labels of up to
// 62 characters, and plain email addresses (words of letters, digits and _+- joined by single
// dots before the @; letters and digits in each name of the domain; a top-level domain of 2 to
// 10 letters), and URIs without user names or IP literals in the authority, schemes of up to 16
// characters, hosts of up to 128, paths and queries of up to 240 and fragments of up to 64 (each
// character possibly %-escaped): 2041 characters at most.
Grammar::Rule JsonSchemaGrammar::format(const std::string& name, const std::string& at) {
  const auto set = [&](ByteSet b) { return g_.bytes(b); };
  const auto digit = [&] { return set(ByteSet::range('0', '9')); };
  const auto one = [&](char c) { return set(ByteSet::range(static_cast<unsigned char>(c), static_cast<unsigned char>(c))); };
  const auto span = [&](char a, char b) { return set(ByteSet::range(static_cast<unsigned char>(a), static_cast<unsigned char>(b))); };
  const auto times = [&](const Grammar::Rule item, std::int64_t min, std::int64_t max) { return call(g_.repeat(item, min, max)); };
  const Grammar::Rule hex = rule_of({{set(ByteSet::range('0', '9').add('a', 'f').add('A', 'F'))}});
  const auto date = [&] {
    const Grammar::Rule day31 = rule_of({{one('0'), span('1', '9')}, {span('1', '2'), digit()}, {one('3'), span('0', '1')}});
    const Grammar::Rule day30 = rule_of({{one('0'), span('1', '9')}, {span('1', '2'), digit()}, g_.literal("30")});
    const Grammar::Rule day28 = rule_of({{one('0'), span('1', '9')}, {one('1'), digit()}, {one('2'), span('0', '8')}});
    const Grammar::Rule month_day = rule_of({
        Symbols{one('0'), set(ByteSet::of("13578"))} + g_.literal("-") + call(day31),
        g_.literal("1") + Symbols{set(ByteSet::of("02"))} + g_.literal("-") + call(day31),
        Symbols{one('0'), set(ByteSet::of("469"))} + g_.literal("-") + call(day30),
        g_.literal("11-") + call(day30),
        g_.literal("02-") + call(day28),
    });
    return Symbols{span('1', '9'), digit(), digit(), digit()} + g_.literal("-") + call(month_day);
  };
  const auto time = [&] {
    const Grammar::Rule hour = rule_of({{span('0', '1'), digit()}, {one('2'), span('0', '3')}});
    const Grammar::Rule minute = rule_of({{span('0', '5'), digit()}});
    const Grammar::Rule fraction = rule_of({{}, g_.literal(".") + call(digits(1, 9))});
    const Grammar::Rule offset = rule_of({g_.literal("Z"), Symbols{set(ByteSet::of("+-"))} + call(hour) + g_.literal(":") + call(minute)});
    return call(hour) + g_.literal(":") + call(minute) + g_.literal(":") + call(minute) + call(fraction) + call(offset);
  };
  Symbols text;
  if (name == "date") {
    text = date();
  } else if (name == "time") {
    text = time();
  } else if (name == "date-time") {
    text = date() + g_.literal("T") + time();
  } else if (name == "uuid") {
    text = times(hex, 8, 8) + g_.literal("-") + times(hex, 4, 4) + g_.literal("-") + times(hex, 4, 4) + g_.literal("-") +
           times(hex, 4, 4) + g_.literal("-") + times(hex, 12, 12);
  } else if (name == "ipv4") {
    const Grammar::Rule octet = natural_range(0, 255);
    text = call(octet) + g_.literal(".") + call(octet) + g_.literal(".") + call(octet) + g_.literal(".") + call(octet);
  } else if (name == "email") {
    const Grammar::Rule atom = rule_of({{set(ByteSet::range('a', 'z').add('A', 'Z').add('0', '9').add('_', '_').add('+', '+').add('-', '-'))}});
    const Grammar::Rule alnum = rule_of({{set(ByteSet::range('a', 'z').add('A', 'Z').add('0', '9'))}});
    const Grammar::Rule letter = rule_of({{set(ByteSet::range('a', 'z').add('A', 'Z'))}});
    const Grammar::Rule dotted = rule_of({g_.literal(".") + times(atom, 1, 32)});
    const Grammar::Rule label = rule_of({times(alnum, 1, 63) + g_.literal(".")});
    text = times(atom, 1, 32) + times(dotted, 0, 3) + g_.literal("@") + times(label, 1, 4) + times(letter, 2, 10);
  } else if (name == "ipv6") {  // the full form: eight groups, none left out
    const Grammar::Rule group = rule_of({times(hex, 1, 4)});
    const Grammar::Rule more = rule_of({g_.literal(":") + call(group)});
    text = call(group) + times(more, 7, 7);
  } else if (name == "hostname") {  // RFC 1123: up to 4 labels of up to 62 letters, digits and inner hyphens
    const Grammar::Rule alnum = rule_of({{set(ByteSet::range('a', 'z').add('A', 'Z').add('0', '9'))}});
    const Grammar::Rule inner = rule_of({{set(ByteSet::range('a', 'z').add('A', 'Z').add('0', '9').add('-', '-'))}});
    const Grammar::Rule tail = rule_of({times(inner, 0, 60) + call(alnum)});
    const Grammar::Rule label = rule_of({call(alnum) + times(rule_of({{}, call(tail)}), 1, 1)});
    const Grammar::Rule dotted = rule_of({g_.literal(".") + call(label)});
    text = call(label) + times(dotted, 0, 3);
  } else if (name == "duration") {  // RFC 3339's ISO 8601 durations (Appendix A), up to 9 digits a number
    const auto number = [&](const char* unit) { return times(rule_of({{digit()}}), 1, 9) + g_.literal(unit); };
    const Grammar::Rule second = rule_of({number("S")});
    const Grammar::Rule minute = rule_of({number("M") + times(second, 0, 1)});
    const Grammar::Rule hour = rule_of({number("H") + times(minute, 0, 1)});
    const Grammar::Rule time = rule_of({g_.literal("T") + call(rule_of({call(hour), call(minute), call(second)}))});
    const Grammar::Rule day = rule_of({number("D")});
    const Grammar::Rule month = rule_of({number("M") + times(day, 0, 1)});
    const Grammar::Rule year = rule_of({number("Y") + times(month, 0, 1)});
    const Grammar::Rule date = rule_of({call(rule_of({call(day), call(month), call(year)})) + times(time, 0, 1)});
    text = g_.literal("P") + call(rule_of({call(date), call(time), number("W")}));
  } else if (name == "uri") {  // RFC 3986: scheme ":" hier-part ["?" query] ["#" fragment]
    const ByteSet unreserved_sub = ByteSet::of("-._~!$&'()*+,;=").add('a', 'z').add('A', 'Z').add('0', '9');
    const Grammar::Rule pct = rule_of({g_.literal("%") + call(hex) + call(hex)});
    // A host's characters (reg-name: an IPv4 address is one too), a path's (pchar), a query's.
    const Grammar::Rule host_char = rule_of({{set(unreserved_sub)}, call(pct)});
    const Grammar::Rule pchar = rule_of({{set(ByteSet(unreserved_sub).add(':', ':').add('@', '@'))}, call(pct)});
    const Grammar::Rule path_char = rule_of({call(pchar), g_.literal("/")});
    const Grammar::Rule query_char = rule_of({call(pchar), g_.literal("/"), g_.literal("?")});
    const Grammar::Rule port = rule_of({g_.literal(":") + times(rule_of({{digit()}}), 0, 5)});
    const Grammar::Rule path_abempty = rule_of({{}, g_.literal("/") + times(path_char, 0, 239)});
    const Grammar::Rule hier_part = rule_of({
        g_.literal("//") + times(host_char, 0, 128) + times(port, 0, 1) + call(path_abempty),  // authority, no userinfo
        call(pchar) + times(path_char, 0, 239),                                                 // path-rootless
        {},                                                                                     // path-empty
    });
    const Grammar::Rule query = rule_of({g_.literal("?") + times(query_char, 0, 240)});
    const Grammar::Rule fragment = rule_of({g_.literal("#") + times(query_char, 0, 64)});
    const Grammar::Rule scheme_char = rule_of({{set(ByteSet::range('a', 'z').add('A', 'Z').add('0', '9').add('+', '+').add('-', '.'))}});
    text = Symbols{set(ByteSet::range('a', 'z').add('A', 'Z'))} + times(scheme_char, 0, 15) + g_.literal(":") + call(hier_part) +
           times(query, 0, 1) + times(fragment, 0, 1);
  } else {
    fail(at, "'format' " + name + " is not supported (date, time, date-time, duration, uuid, ipv4, ipv6, hostname, email and uri are)");
  }
  return rule_of({g_.literal("\"") + text + g_.literal("\"")});
}

Grammar::Rule JsonSchemaGrammar::string_of(const ojson& schema, const std::string& at) {
  if (schema.contains("pattern")) {
    if (!schema["pattern"].is_string()) fail(at, "'pattern' must be a string");
    for (const char* other : {"format", "minLength", "maxLength"}) {
      if (schema.contains(other)) fail(at, keyword("pattern", " beside '") + other + "' is not supported");
    }
    return rule_of({g_.literal("\"") + call(pattern_rule(g_, schema["pattern"].get<std::string>(), at)) + g_.literal("\"")});
  }
  if (schema.contains("format")) {
    if (!schema["format"].is_string()) fail(at, "'format' must be a string");
    const std::string name = schema["format"].get<std::string>();
    const Grammar::Rule rule = format(name, at);
    // Length bounds are kept where every text of the format keeps them (a URL of at most 2083
    // characters, as Pydantic's HttpUrl asks: the format's texts are ASCII, a byte a character).
    const auto min = bound(schema, "minLength", at, std::numeric_limits<std::int64_t>::max());
    const auto max = bound(schema, "maxLength", at, std::numeric_limits<std::int64_t>::max());
    if (min || max) {
      const auto lengths = g_.length_bounds(rule);  // with its two quotes
      if (!lengths) fail(at, "'format' " + name + " beside 'minLength' or 'maxLength' is not supported");
      const std::uint64_t shortest = lengths->first - 2, longest = lengths->second - 2;
      if (shortest < static_cast<std::uint64_t>(min.value_or(0)) || (max && longest > static_cast<std::uint64_t>(*max))) {
        fail(at, "'format' " + name + " (texts of " + std::to_string(shortest) + " to " + std::to_string(longest) +
                     " characters here) beside 'minLength' or 'maxLength' that not all of them keep is not supported");
      }
    }
    return rule;
  }
  const auto min = bound(schema, "minLength", at, kMaxRepeat);
  const auto max = bound(schema, "maxLength", at, kMaxRepeat);
  if (!min && !max) return string();
  if (min && max && *min > *max) fail(at, "'minLength' is above 'maxLength'");
  return rule_of({g_.literal("\"") + call(g_.repeat(string_char(), min.value_or(0), max)) + g_.literal("\"")});
}

// Arrays: the items of `prefixItems` (or `items` as an array, draft 7's tuples) one by one, then
// items following `items` (`additionalItems` after draft 7's tuples; none where it is false),
// minItems to maxItems of them in all.
Grammar::Rule JsonSchemaGrammar::array_of(const ojson& schema, const std::string& at, int depth) {
  auto min = bound(schema, "minItems", at, kMaxRepeat).value_or(0);
  auto max = bound(schema, "maxItems", at, kMaxRepeat);
  if (max && min > *max) fail(at, "'minItems' is above 'maxItems'");
  if (schema.contains("uniqueItems")) {
    if (!schema["uniqueItems"].is_boolean()) fail(at, "'uniqueItems' must be true or false");
    if (schema["uniqueItems"].get<bool>()) return unique_items(schema, at, min, max);
  }
  const bool draft7_tuple = schema.contains("items") && schema["items"].is_array();
  if (schema.contains("prefixItems") && draft7_tuple) fail(at, "'prefixItems' beside an array of 'items' is not supported");
  if (schema.contains("additionalItems") && !draft7_tuple) fail(at, "'additionalItems' is supported only after an array of 'items'");
  const char* prefix_key = draft7_tuple ? "items" : "prefixItems";
  const char* rest_key = draft7_tuple ? "additionalItems" : "items";
  std::vector<Grammar::Rule> prefix;
  if (schema.contains(prefix_key)) {
    const ojson& list = schema[prefix_key];
    if (!list.is_array()) fail(at, keyword(prefix_key, " must be an array of schemas"));
    if (list.size() > static_cast<std::size_t>(kMaxRepeat)) fail(at, keyword(prefix_key, " of more than 1024 schemas is not supported"));
    for (std::size_t i = 0; i < list.size(); ++i) {
      prefix.push_back(schema_rule(list[i], at + "/" + prefix_key + "/" + std::to_string(i), depth + 1));
    }
  }
  std::optional<Grammar::Rule> rest;
  if (!schema.contains(rest_key) || schema[rest_key] != ojson(false)) {
    rest = schema.contains(rest_key) ? schema_rule(schema[rest_key], at + "/" + rest_key, depth + 1) : any_value();
  }
  const auto n = static_cast<std::int64_t>(prefix.size());
  if (!rest) max = std::min<std::int64_t>(max.value_or(n), n);
  if (max && min > *max) fail(at, "'minItems' is above the number of items the array may hold");
  const Grammar::Rule ws = whitespace();
  const Symbols open = g_.literal("[") + call(ws);
  if (max && *max == 0) return rule_of({open + g_.literal("]")});
  // more(i): what follows the first i items (i >= 1): further items, then the end.
  Grammar::Rule more = rule_of({{}});
  if (rest && (!max || *max > n)) {
    const Grammar::Rule next = rule_of({g_.literal(",") + call(ws) + call(*rest) + call(ws)});
    const std::int64_t from = std::max<std::int64_t>(n, 1);
    more = g_.repeat(next, std::max<std::int64_t>(min - from, 0), max ? std::optional<std::int64_t>(*max - from) : std::nullopt);
  }
  for (std::int64_t i = n - 1; i >= 1; --i) {
    const Grammar::Rule before = g_.new_rule();
    if (i >= min) g_.add(before, {});
    if (!max || i < *max) g_.add(before, g_.literal(",") + call(ws) + call(prefix[static_cast<std::size_t>(i)]) + call(ws) + call(more));
    more = before;
  }
  const Grammar::Rule first = n > 0 ? prefix[0] : *rest;
  const Symbols full = open + call(first) + call(ws) + call(more) + g_.literal("]");
  if (min > 0) return rule_of({full});
  return rule_of({open + g_.literal("]"), full});
}

// Arrays of distinct items drawn from a finite list of scalars: an enum or const (Pydantic's
// set[SomeEnum], tags), or booleans. The items come in the list's order, each at most once, so
// every array written is unique; the ones in another order are left out (sound, not complete).
// After_j_k reads what may follow item j written as the k-th: the end (when k reaches minItems),
// or a comma and a later item, offered only while enough later items remain to reach minItems,
// so that no prefix is a dead end. Counts are tracked only where minItems above 1 or a maxItems
// below the list's size asks for it.
Grammar::Rule JsonSchemaGrammar::unique_items(const ojson& schema, const std::string& at, std::int64_t min,
                                              std::optional<std::int64_t> max) {
  const std::string why = "'uniqueItems' is supported for items of an 'enum' or 'const' of strings, numbers, booleans or "
                          "null, or of type boolean";
  if (schema.contains("prefixItems") || !schema.contains("items")) fail(at, why);
  const ojson* items = resolved(schema["items"]);
  if (!items || !items->is_object()) fail(at, why);
  std::vector<std::string> types;
  for (const auto& [key, value] : items->items()) {
    if (!kAnnotations.count(key) && key != "enum" && key != "const" && key != "type") fail(at, why);
  }
  if (items->contains("type")) {
    const ojson& t = (*items)["type"];
    for (const ojson& one : t.is_array() ? t : ojson::array({t})) {
      if (!one.is_string()) fail(at, why);
      types.push_back(one.get<std::string>());
    }
  }
  ojson listed;
  if (items->contains("enum")) listed = (*items)["enum"];
  else if (items->contains("const")) listed = ojson::array({(*items)["const"]});
  else if (types == std::vector<std::string>{"boolean"}) listed = ojson::array({true, false});
  if (!listed.is_array() || listed.empty()) fail(at, why);
  std::vector<ojson> values;  // distinct as JSON Schema compares them (1 and 1.0 are one value)
  for (const ojson& v : listed) {
    if (v.is_object() || v.is_array()) fail(at, why);
    if (!types.empty() && std::none_of(types.begin(), types.end(), [&](const std::string& t) { return matches_type(v, t); })) continue;
    if (std::find(values.begin(), values.end(), v) == values.end()) values.push_back(v);
  }
  const auto m = static_cast<std::int64_t>(values.size());
  if (m == 0) fail(at, "no value of the items' 'enum' has their type");
  if (m > 256) fail(at, "'uniqueItems' over more than 256 values is not supported");
  const std::int64_t most = std::min(max.value_or(m), m);
  if (min > most) fail(at, "'minItems' is above the number of distinct values the items may take");
  if (most == 0) return rule_of({g_.literal("[") + call(whitespace()) + g_.literal("]")});
  const bool counted = min > 1 || most < m;
  if (counted && m * most > 2048) fail(at, "'uniqueItems' with 'minItems' or 'maxItems' over so many values is not supported");
  std::vector<std::string> texts;
  for (const ojson& v : values) texts.push_back(v.dump(-1, ' ', false, ojson::error_handler_t::strict));
  const Grammar::Rule ws = whitespace();
  // after[k][j]: k is the count of items written (0 throughout when counts are not tracked).
  const std::int64_t levels = counted ? most + 1 : 1;
  std::vector<std::vector<Grammar::Rule>> after(static_cast<std::size_t>(levels), std::vector<Grammar::Rule>(static_cast<std::size_t>(m)));
  const auto level = [&](std::int64_t k) { return counted ? k : 0; };
  const auto feasible = [&](std::int64_t j, std::int64_t k) { return k + (m - 1 - j) >= min; };  // min reachable
  // The later items that may come as the k-th, each with what follows it.
  const auto next = [&](std::int64_t from, std::int64_t k) {
    std::vector<std::pair<std::string, Symbols>> branches;
    for (std::int64_t j = from; j < m; ++j) {
      if (feasible(j, k)) branches.emplace_back(texts[static_cast<std::size_t>(j)], call(ws) + call(after[static_cast<std::size_t>(level(k))][static_cast<std::size_t>(j)]));
    }
    return branches;
  };
  for (std::int64_t k = counted ? most : 1; k >= 1; --k) {
    for (std::int64_t j = m - 1; j >= 0; --j) {
      const Grammar::Rule r = g_.new_rule();
      if (!counted || k >= min) g_.add(r, {});
      if (!counted || k < most) {
        const auto branches = next(j + 1, counted ? k + 1 : 1);
        if (!branches.empty()) g_.add(r, g_.literal(",") + call(ws) + call(g_.choice(branches)));
      }
      after[static_cast<std::size_t>(level(k))][static_cast<std::size_t>(j)] = r;
    }
  }
  const Symbols open = g_.literal("[") + call(ws);
  const Grammar::Rule r = g_.new_rule();
  if (min == 0) g_.add(r, open + g_.literal("]"));
  g_.add(r, open + call(g_.choice(next(0, 1))) + g_.literal("]"));
  return r;
}

Grammar::Rule JsonSchemaGrammar::object_of(const ojson& schema, const std::string& at, int depth) {
  std::set<std::string> required;
  if (schema.contains("required")) {
    const ojson& r = schema["required"];
    if (!r.is_array()) fail(at, "'required' must be an array of property names");
    for (const ojson& name : r) {
      if (!name.is_string()) fail(at, "'required' must be an array of property names");
      required.insert(name.get<std::string>());
    }
  }
  const ojson additional = schema.contains("additionalProperties") ? schema["additionalProperties"] : ojson(true);
  if (!additional.is_boolean() && !additional.is_object()) fail(at, "'additionalProperties' must be a boolean or a schema");
  const Grammar::Rule ws = whitespace();
  const std::optional<std::int64_t> min_properties = bound(schema, "minProperties", at, kMaxRepeat);
  const std::optional<std::int64_t> max_properties = bound(schema, "maxProperties", at, kMaxRepeat);
  if (min_properties && max_properties && *min_properties > *max_properties) fail(at, "'minProperties' is above 'maxProperties'");
  if (max_properties && static_cast<std::int64_t>(required.size()) > *max_properties) {
    fail(at, "'required' names more properties than 'maxProperties' allows");
  }
  if (schema.contains("properties") && !schema["properties"].is_object()) fail(at, "'properties' must be an object");
  if (!schema.contains("properties") || schema["properties"].empty()) {
    if (!required.empty()) fail(at, "'required' names '" + *required.begin() + "', which 'properties' does not define");
    if (additional.is_boolean() && !additional.get<bool>()) {
      if (min_properties.value_or(0) > 0) fail(at, "'minProperties' above 0 where 'additionalProperties' is false allows no object");
      return rule_of({g_.literal("{") + call(ws) + g_.literal("}")});
    }
    // Members of any names may repeat one: at most one distinct name is all a count can rely on.
    if (min_properties.value_or(0) > 1) fail(at, "'minProperties' above 1 is supported only for the properties 'properties' lists");
    const Grammar::Rule value = additional.is_boolean() ? any_value() : schema_rule(additional, at + "/additionalProperties", depth + 1);
    if (!min_properties && !max_properties && additional.is_boolean()) return any_object();
    return members(value, min_properties.value_or(0), max_properties);
  }
  const ojson& properties = schema["properties"];
  for (const std::string& name : required) {
    if (!properties.contains(name)) fail(at, "'required' names '" + name + "', which 'properties' does not define");
  }
  if (min_properties || max_properties) {
    return counted_members(properties, required, min_properties.value_or(0), max_properties, at, depth);
  }
  // Properties in order: A(i) starts the members at property i with none written yet, B(i)
  // after one was (so a comma comes first); an optional property may be skipped.
  Grammar::Rule after = rule_of({{}}), first = rule_of({{}});
  std::vector<std::pair<std::string, const ojson*>> listed;
  for (const auto& [name, sub] : properties.items()) listed.emplace_back(name, &sub);
  for (auto it = listed.rbegin(); it != listed.rend(); ++it) {
    const std::string key = ojson(it->first).dump(-1, ' ', false, ojson::error_handler_t::strict);
    const Grammar::Rule value = schema_rule(*it->second, at + "/properties/" + it->first, depth + 1);
    const Grammar::Rule member = rule_of({g_.literal(key) + call(ws) + g_.literal(":") + call(ws) + call(value) + call(ws)});
    const bool optional = !required.count(it->first);
    const Grammar::Rule b = g_.new_rule(), a = g_.new_rule();
    g_.add(b, g_.literal(",") + call(ws) + call(member) + call(after));
    g_.add(a, call(member) + call(after));
    if (optional) {
      g_.add(b, call(after));
      g_.add(a, call(first));
    }
    after = b;
    first = a;
  }
  return rule_of({g_.literal("{") + call(ws) + call(first) + g_.literal("}")});
}

// `schema`, its $refs followed (null where one points to nothing).
const ojson* JsonSchemaGrammar::resolved(const ojson& schema) const {
  const ojson* s = &schema;
  for (int hops = 0; hops < 32 && s->is_object() && s->contains("$ref") && (*s)["$ref"].is_string(); ++hops) {
    const std::string ref = (*s)["$ref"].get<std::string>();
    if (ref.empty() || ref[0] != '#') return nullptr;
    try {
      const nlohmann::json_pointer<std::string> pointer(ref.substr(1));
      if (!root_->contains(pointer)) return nullptr;
      s = &root_->at(pointer);
    } catch (const nlohmann::json::exception&) {
      return nullptr;
    }
  }
  return s;
}

// Whether no value can match two of `schemas`: each is an object schema that requires one same
// property with a constant value (const, or an enum of one), the values all different. Then
// oneOf means anyOf.
bool JsonSchemaGrammar::tells_apart(const ojson& schemas) const {
  const ojson* first = resolved(schemas[0]);
  if (!first || !first->is_object() || !first->contains("properties") || !(*first)["properties"].is_object()) return false;
  for (const auto& [name, unused] : (*first)["properties"].items()) {
    std::vector<ojson> values;
    for (const ojson& one : schemas) {
      const ojson* s = resolved(one);
      if (!s || !s->is_object() || !s->contains("required") || !(*s)["required"].is_array() ||
          std::find((*s)["required"].begin(), (*s)["required"].end(), ojson(name)) == (*s)["required"].end() ||
          !s->contains("properties") || !(*s)["properties"].is_object() || !(*s)["properties"].contains(name)) {
        break;
      }
      const ojson* p = resolved((*s)["properties"][name]);
      if (!p || !p->is_object()) break;
      if (p->contains("const")) values.push_back((*p)["const"]);
      else if (p->contains("enum") && (*p)["enum"].is_array() && (*p)["enum"].size() == 1) values.push_back((*p)["enum"][0]);
      else break;
    }
    if (values.size() != schemas.size()) continue;
    bool distinct = true;
    for (std::size_t i = 0; i < values.size() && distinct; ++i) {
      for (std::size_t j = i + 1; j < values.size(); ++j) distinct = distinct && values[i] != values[j];
    }
    if (distinct) return true;
  }
  return false;
}

Grammar::Rule JsonSchemaGrammar::reference(const std::string& ref, const std::string& at) {
  if (auto it = refs_.find(ref); it != refs_.end()) return it->second;
  if (ref.empty() || ref[0] != '#') fail(at, "'$ref' " + ref + " is not supported: only references within the schema (#/...) are");
  const ojson* target = nullptr;
  try {
    const nlohmann::json_pointer<std::string> pointer(ref.substr(1));
    if (root_->contains(pointer)) target = &root_->at(pointer);
  } catch (const nlohmann::json::exception&) {
  }
  if (!target) fail(at, "'$ref' " + ref + " points to nothing in the schema");
  const Grammar::Rule r = g_.new_rule();
  refs_[ref] = r;
  g_.add(r, call(schema_rule(*target, ref, 0)));
  return r;
}

Grammar::Rule JsonSchemaGrammar::schema_rule(const ojson& schema, const std::string& at, int depth) {
  if (depth > 64) fail(at, "schemas nested deeper than 64 are not supported");
  check_size(at);
  if (schema.is_boolean()) {
    if (!schema.get<bool>()) fail(at, "the schema false allows no value");
    return any_value();
  }
  if (!schema.is_object()) fail(at, "a schema must be an object or a boolean");
  std::set<std::string> constraints;
  for (const auto& [key, value] : schema.items()) {
    if (kAnnotations.count(key)) continue;
    if (!kConstraints.count(key)) fail(at, "'" + key + "' is not supported");
    constraints.insert(key);
  }
  const auto alone = [&](const char* keyword, std::set<std::string> also = {}) {
    for (const std::string& c : constraints) {
      if (c == keyword || also.count(c)) continue;
      std::string why = "'";
      why.append(keyword).append("' beside '").append(c).append("' is not supported");
      fail(at, why);
    }
  };
  if (constraints.count("$ref")) {
    alone("$ref");
    if (!schema["$ref"].is_string()) fail(at, "'$ref' must be a string");
    return reference(schema["$ref"].get<std::string>(), at);
  }
  if (constraints.count("anyOf") || constraints.count("allOf") || constraints.count("oneOf")) {
    const char* keyword = constraints.count("anyOf") ? "anyOf" : constraints.count("allOf") ? "allOf" : "oneOf";
    alone(keyword);
    const ojson& list = schema[keyword];
    if (!list.is_array() || list.empty()) fail(at, "'" + std::string(keyword) + "' must be a non-empty array of schemas");
    if (keyword == std::string("oneOf") && !tells_apart(list)) {
      fail(at, "'oneOf' is supported only where one required property of constant value tells its schemas apart (a discriminated union)");
    }
    if (keyword == std::string("allOf")) {
      if (list.size() != 1) fail(at, "'allOf' of more than one schema is not supported");
      return schema_rule(list[0], at + "/allOf/0", depth + 1);
    }
    const Grammar::Rule r = g_.new_rule();
    for (std::size_t i = 0; i < list.size(); ++i) {
      g_.add(r, call(schema_rule(list[i], at + "/" + keyword + "/" + std::to_string(i), depth + 1)));
    }
    return r;
  }
  std::vector<std::string> types;
  if (schema.contains("type")) {
    const ojson& t = schema["type"];
    for (const ojson& one : t.is_array() ? t : ojson::array({t})) {
      if (!one.is_string() || !kTypes.count(one.get<std::string>())) {
        fail(at, "'type' must be one of object, array, string, number, integer, boolean, null, or a list of them");
      }
      types.push_back(one.get<std::string>());
    }
    if (types.empty()) fail(at, "'type' lists no type");
  }
  if (constraints.count("enum") || constraints.count("const")) {
    if (constraints.count("enum") && constraints.count("const")) fail(at, "'enum' beside 'const' is not supported");
    const char* keyword = constraints.count("enum") ? "enum" : "const";
    alone(keyword, {"type"});
    const ojson values = keyword == std::string("const") ? ojson::array({schema["const"]}) : schema["enum"];
    if (!values.is_array() || values.empty()) fail(at, "'enum' must be a non-empty array");
    // Scalars as one trie of their texts (an enum of hundreds of values is read a byte at a
    // time, not as hundreds of ways); objects and arrays, with white space inside, apart.
    const Grammar::Rule r = g_.new_rule();
    std::vector<std::pair<std::string, Symbols>> scalars;
    bool any = false;
    for (const ojson& v : values) {
      if (!types.empty() && std::none_of(types.begin(), types.end(), [&](const std::string& t) { return matches_type(v, t); })) continue;
      any = true;
      if (v.is_object() || v.is_array()) g_.add(r, call(literal_value(v)));
      else scalars.emplace_back(v.dump(-1, ' ', false, ojson::error_handler_t::strict), Symbols{});
    }
    if (!any) fail(at, "no value of '" + std::string(keyword) + "' has the schema's type");
    if (!scalars.empty()) g_.add(r, call(g_.choice(scalars)));
    return r;
  }
  if (types.empty()) {  // no type: the one the keywords speak of, or any value
    const bool object = constraints.count("properties") || constraints.count("required") || constraints.count("additionalProperties") ||
                        constraints.count("minProperties") || constraints.count("maxProperties");
    const bool array = constraints.count("items") || constraints.count("minItems") || constraints.count("maxItems") ||
                       constraints.count("prefixItems") || constraints.count("additionalItems") ||
                       constraints.count("uniqueItems");
    const bool string = constraints.count("minLength") || constraints.count("maxLength") || constraints.count("pattern") ||
                        constraints.count("format");
    const bool number = constraints.count("minimum") || constraints.count("maximum") || constraints.count("exclusiveMinimum") ||
                        constraints.count("exclusiveMaximum") || constraints.count("multipleOf");
    if (object + array + string + number > 1) fail(at, "keywords of several types without a 'type' are not supported");
    if (!object && !array && !string && !number) return any_value();
    types.push_back(object ? "object" : array ? "array" : string ? "string" : "number");
  }
  const Grammar::Rule r = g_.new_rule();
  for (const std::string& type : types) {
    Grammar::Rule one;
    if (type == "object") one = object_of(schema, at, depth);
    else if (type == "array") one = array_of(schema, at, depth);
    else if (type == "string") one = string_of(schema, at);
    else if (type == "number") one = number_of(schema, at);
    else if (type == "integer") one = integer_of(schema, at);
    else if (type == "boolean") one = rule_of({g_.literal("true"), g_.literal("false")});
    else one = rule_of({g_.literal("null")});
    g_.add(r, call(one));
  }
  return r;
}

Grammar::Rule JsonSchemaGrammar::compile(const ojson& schema) {
  root_ = &schema;
  refs_.clear();
  const Grammar::Rule r = schema_rule(schema, "#", 0);
  if (g_.left_recursive()) fail("#", "its '$ref's loop back without any text between them");  // patterns cannot
  root_ = nullptr;
  return r;
}

}  // namespace sepal::api

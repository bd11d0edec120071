// Walks a parsed chat template (jinja_ast.h) with Jinja's semantics: scopes (a for loop's
// assignments stay in it; namespaces carry values out), Python's operators, truth and str(), the
// filters, tests, methods and globals chat templates use, and the limits a template from outside
// must not pass.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "actors/api/jinja_ast.h"
#include "kernels/error.h"
#include "model/utf8.h"

namespace sepal::api::jinja {
namespace {

constexpr std::size_t kMaxOutput = std::size_t{10} << 20;

// Every string a template builds stays within the output's limit.
std::string checked(std::string s) {
  if (s.size() > kMaxOutput) throw TemplateError{"a string longer than " + std::to_string(kMaxOutput >> 20) + " MiB"};
  return s;
}
constexpr std::int64_t kMaxSteps = 10'000'000;
constexpr int kMaxDepth = 128;

[[noreturn]] void fail(const std::string& what) { throw TemplateError{what}; }

// Python's str.isspace() for one code point.
bool py_space(std::uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

std::uint32_t code_point(const std::string& s, std::size_t begin, std::size_t end) {
  const auto c = static_cast<unsigned char>(s[begin]);
  if (end - begin == 1) return c;
  std::uint32_t cp = end - begin == 2 ? (c & 0x1f) : end - begin == 3 ? (c & 0x0f) : (c & 0x07);
  for (std::size_t i = begin + 1; i < end; ++i) cp = cp << 6 | (static_cast<unsigned char>(s[i]) & 0x3f);
  return cp;
}

// The code points of s as strings.
std::vector<std::string> characters(const std::string& s) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  for (const std::size_t end : code_point_offsets(s)) {
    out.push_back(s.substr(begin, end - begin));
    begin = end;
  }
  return out;
}

// Python's str.strip / lstrip / rstrip: whitespace, or any of `chars`' code points.
std::string strip(const std::string& s, bool left, bool right, const Value& chars) {
  const std::vector<std::size_t> ends = code_point_offsets(s);
  std::vector<std::string> set;
  if (!chars.is_undefined() && !chars.is_none()) {
    if (!chars.is_string()) fail("strip arg must be None or str");
    set = characters(chars.as_string());
  }
  const auto strippable = [&](std::size_t i) {
    const std::size_t begin = i == 0 ? 0 : ends[i - 1];
    if (chars.is_undefined() || chars.is_none()) return py_space(code_point(s, begin, ends[i]));
    const std::string c = s.substr(begin, ends[i] - begin);
    return std::find(set.begin(), set.end(), c) != set.end();
  };
  std::size_t first = 0, last = ends.size();
  if (left) {
    while (first < last && strippable(first)) ++first;
  }
  if (right) {
    while (last > first && strippable(last - 1)) --last;
  }
  const std::size_t b = first == 0 ? 0 : ends[first - 1], e = last == 0 ? 0 : ends[last - 1];
  return s.substr(b, e - b);
}

std::string case_of(const std::string& s, bool upper) {
  try {
    if (upper) {  // Python's full uppercase for the letters that become two
      std::string out;
      for (const std::string& c : characters(s)) {
        if (c == "\u00df") out += "SS";
        else if (c == "\ufb00") out += "FF";
        else if (c == "\ufb01") out += "FI";
        else if (c == "\ufb02") out += "FL";
        else if (c == "\ufb03") out += "FFI";
        else if (c == "\ufb04") out += "FFL";
        else if (c == "\ufb05" || c == "\ufb06") out += "ST";
        else out += utf8_uppercase(c);
      }
      return out;
    }
    return utf8_lowercase(s);
  } catch (const Error&) {
    fail("a string that is not valid UTF-8 cannot change case");
  }
}

std::string title_case(const std::string& s, bool capitalize_only) {
  std::string out;
  bool after_cased = false, first = true;
  for (const std::string& c : characters(s)) {
    const std::string up = case_of(c, true), low = case_of(c, false);
    const bool cased = up != low;
    if (capitalize_only) out += first ? up : low;
    else out += cased ? (after_cased ? low : up) : c;
    after_cased = cased;
    first = false;
  }
  return out;
}

std::vector<std::string> split(const std::string& s, const Value& sep, std::int64_t max_split) {
  std::vector<std::string> out;
  if (sep.is_undefined() || sep.is_none()) {  // runs of whitespace, none empty
    std::string word;
    bool in_word = false;
    std::int64_t splits = 0;
    const std::vector<std::string> cs = characters(s);
    for (std::size_t i = 0; i < cs.size(); ++i) {
      const bool space = py_space(code_point(cs[i], 0, cs[i].size()));
      if (space && in_word && (max_split < 0 || splits < max_split)) {
        out.push_back(word);
        word.clear();
        in_word = false;
        ++splits;
      } else if (!space || in_word) {
        if (!in_word && max_split >= 0 && splits >= max_split) {  // the rest, left-stripped
          std::string rest;
          for (std::size_t k = i; k < cs.size(); ++k) rest += cs[k];
          out.push_back(strip(rest, false, true, Value()));
          return out;
        }
        word += cs[i];
        in_word = true;
      }
    }
    if (in_word) out.push_back(strip(word, false, true, Value()));
    return out;
  }
  if (!sep.is_string()) fail("must be str or None, not " + std::string(sep.type_name()));
  const std::string& d = sep.as_string();
  if (d.empty()) fail("empty separator");
  std::size_t start = 0;
  std::int64_t splits = 0;
  for (std::size_t at = s.find(d); at != std::string::npos && (max_split < 0 || splits < max_split);
       at = s.find(d, start), ++splits) {
    out.push_back(s.substr(start, at - start));
    start = at + d.size();
  }
  out.push_back(s.substr(start));
  return out;
}

bool starts_or_ends(const std::string& s, const Value& affix, bool starts) {
  const auto one = [&](const Value& v) {
    if (!v.is_string()) fail(std::string(starts ? "startswith" : "endswith") + " first arg must be str or a tuple of str");
    const std::string& a = v.as_string();
    return a.size() <= s.size() && (starts ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0);
  };
  if (affix.is_list()) {
    for (const Value& v : affix.as_list()) {
      if (one(v)) return true;
    }
    return false;
  }
  return one(affix);
}

std::string replace(const std::string& s, const std::string& from, const std::string& to, std::int64_t count) {
  std::string out;
  std::size_t start = 0;
  std::int64_t done = 0;
  if (from.empty()) {  // Python inserts `to` between every code point
    for (const std::string& c : characters(s)) {
      if (count < 0 || done < count) out += to, ++done;
      out += c;
      if (out.size() > kMaxOutput) checked(std::move(out));
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  for (std::size_t at = s.find(from); at != std::string::npos && (count < 0 || done < count); at = s.find(from, start)) {
    if (out.size() > kMaxOutput) checked(std::move(out));
    out += s.substr(start, at - start) + to;
    start = at + from.size();
    ++done;
  }
  return out + s.substr(start);
}

std::int64_t to_index(const Value& v, const char* what) {
  if (v.kind() != Value::Kind::kInt && v.kind() != Value::Kind::kBool) fail(std::string(what) + " indices must be integers");
  return v.as_int();
}

// Python's slice of n items: the indexes taken.
std::vector<std::int64_t> slice_indexes(std::int64_t n, const Value& start, const Value& stop, const Value& step) {
  const auto given = [](const Value& v) { return !v.is_undefined() && !v.is_none(); };
  const std::int64_t st = given(step) ? to_index(step, "slice") : 1;
  if (st == 0) fail("slice step cannot be zero");
  const auto clamp = [&](const Value& v, std::int64_t fallback) {
    if (!given(v)) return fallback;
    std::int64_t i = to_index(v, "slice");
    if (i < 0) i += n;  // i >= INT64_MIN and 0 <= n <= kMaxItems: no overflow
    if (st > 0) return std::clamp<std::int64_t>(i, 0, n);
    return std::clamp<std::int64_t>(i, -1, n - 1);
  };
  const std::int64_t b = clamp(start, st > 0 ? 0 : n - 1), e = clamp(stop, st > 0 ? n : -1);
  std::vector<std::int64_t> out;
  for (std::int64_t i = b; st > 0 ? i < e : i > e;) {
    out.push_back(i);
    if (__builtin_add_overflow(i, st, &i)) break;
  }
  return out;
}

int compare(const Value& a, const Value& b, const std::string& op) {
  if (a.is_number() && b.is_number()) {
    const double x = a.as_float(), y = b.as_float();
    if (a.kind() != Value::Kind::kFloat && b.kind() != Value::Kind::kFloat)
      return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
    return x < y ? -1 : x > y;
  }
  if (a.is_string() && b.is_string()) return a.as_string().compare(b.as_string()) < 0 ? -1 : a.as_string() > b.as_string();
  if (a.is_list() && b.is_list()) {
    const List &x = a.as_list(), &y = b.as_list();
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equal(x[i], y[i])) return compare(x[i], y[i], op);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  fail("'" + op + "' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kString:
      if (!item.is_string()) fail("'in <string>' requires string as left operand, not " + std::string(item.type_name()));
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.as_list()) {
        if (equal(v, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      return item.is_string() && !container.item(item.as_string()).is_undefined();
    case Value::Kind::kUndefined: return false;
    default: fail(std::string("argument of type '") + container.type_name() + "' is not iterable");
  }
}

// Python's ints have no bounds; these have 64 bits, and a result past them is an error.
// (Call with the operation done first: argument evaluation order is unspecified.)
std::int64_t int_result(bool overflowed, std::int64_t r) {
  if (overflowed) fail("an integer past 64 bits");
  return r;
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) fail("an undefined value in '" + op + "'");
  const bool ints = a.is_number() && b.is_number() && a.kind() != Value::Kind::kFloat && b.kind() != Value::Kind::kFloat;
  if (a.is_number() && b.is_number()) {
    std::int64_t r = 0;
    const std::int64_t x = ints ? a.as_int() : 0, y = ints ? b.as_int() : 0;
    if (op == "+" || op == "-" || op == "*") {
      if (!ints) {
        const double f = a.as_float(), g = b.as_float();
        return Value(op == "+" ? f + g : op == "-" ? f - g : f * g);
      }
      const bool overflowed = op == "+"   ? __builtin_add_overflow(x, y, &r)
                              : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                          : __builtin_mul_overflow(x, y, &r);
      return Value(int_result(overflowed, r));
    }
    if (op == "/") {
      if (b.as_float() == 0) fail("division by zero");
      return Value(a.as_float() / b.as_float());
    }
    if (op == "//" || op == "%") {
      if (b.as_float() == 0) fail("integer division or modulo by zero");
      if (ints) {
        if (x == INT64_MIN && y == -1) return op == "//" ? Value(int_result(true, 0)) : Value(0);
        std::int64_t q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
        return op == "//" ? Value(q) : Value(x - q * y);
      }
      const double q = std::floor(a.as_float() / b.as_float());
      return op == "//" ? Value(q) : Value(a.as_float() - q * b.as_float());
    }
    if (op == "**") {
      if (ints && y >= 0) {
        if (x == 0) return Value(std::int64_t{y == 0 ? 1 : 0});
        if (x == 1) return Value(std::int64_t{1});
        if (x == -1) return Value(std::int64_t{y % 2 == 0 ? 1 : -1});
        r = 1;
        for (std::int64_t i = 0; i < y; ++i) {  // |x| >= 2: past 64 bits within 64 steps
          if (__builtin_mul_overflow(r, x, &r)) int_result(true, 0);
        }
        return Value(r);
      }
      return Value(std::pow(a.as_float(), b.as_float()));
    }
  }
  if (op == "+" && a.is_string() && b.is_string()) {
    if (a.as_string().size() + b.as_string().size() > kMaxOutput) fail("a string longer than " + std::to_string(kMaxOutput >> 20) + " MiB");
    return Value(a.as_string() + b.as_string());
  }
  if (op == "+" && a.is_list() && b.is_list()) {
    if (a.as_list().size() + b.as_list().size() > kMaxItems) fail("a list of more than " + std::to_string(kMaxItems) + " items");
    List out = a.as_list();
    out.insert(out.end(), b.as_list().begin(), b.as_list().end());
    return Value(std::move(out));
  }
  if (op == "*" && (a.is_string() || a.is_list()) && b.kind() == Value::Kind::kInt) {
    const std::int64_t unit = a.is_string() ? static_cast<std::int64_t>(a.as_string().size()) : a.length();
    if (b.as_int() > 0 && unit > 0 && b.as_int() > static_cast<std::int64_t>(a.is_string() ? kMaxOutput : kMaxItems) / unit)
      fail("a repetition past the limits");
    if (a.is_string()) {
      std::string out;
      for (std::int64_t i = 0; i < b.as_int(); ++i) out += a.as_string();
      return Value(std::move(out));
    }
    List out;
    for (std::int64_t i = 0; i < b.as_int(); ++i) out.insert(out.end(), a.as_list().begin(), a.as_list().end());
    return Value(std::move(out));
  }
  if (op == "+" && a.is_string()) fail(std::string("can only concatenate str (not \"") + b.type_name() + "\") to str");
  fail("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// The items a for loop or a filter walks: a list's, a dict's keys, a string's characters.
List items_of(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kList: return v.as_list();
    case Value::Kind::kDict: {
      List keys;
      for (const auto& kv : v.as_dict()) keys.emplace_back(kv.first);
      return keys;
    }
    case Value::Kind::kString: {
      if (v.as_string().size() > kMaxItems && code_point_offsets(v.as_string()).size() > kMaxItems)
        fail("a string of more than " + std::to_string(kMaxItems) + " characters to walk");
      List out;
      for (std::string& c : characters(v.as_string())) out.emplace_back(std::move(c));
      if (out.size() > kMaxItems) fail("a string of more than " + std::to_string(kMaxItems) + " characters to walk");
      return out;
    }
    case Value::Kind::kUndefined: return {};
    default: fail(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

// `a.b.c` of an item, as selectattr, map and sort take attributes.
Value attribute_path(const Value& v, const std::string& path) {
  Value cur = v;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (cur.is_mapping()) {
      cur = cur.item(part);
    } else if (cur.is_list() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      const auto i = static_cast<std::size_t>(std::stoll(part));
      cur = i < cur.as_list().size() ? cur.as_list()[i] : Value();
    } else {
      return {};
    }
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// Python's printf-style formatting, `format % args` (args a tuple, or one value): the
// conversions s r d i u f F e E g G x X o c and %, with flags, width and precision.
std::string percent_format(const std::string& format, const Value& args) {
  const List items = args.is_tuple() ? args.as_list() : List{args};
  std::size_t next = 0;
  std::string out;
  for (std::size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    std::size_t j = i + 1;
    std::string flags;
    while (j < format.size() && std::string("-+ #0").find(format[j]) != std::string::npos) flags += format[j++];
    std::string width, precision;
    while (j < format.size() && std::isdigit(static_cast<unsigned char>(format[j]))) width += format[j++];
    if (j < format.size() && format[j] == '.') {
      precision = ".";
      for (++j; j < format.size() && std::isdigit(static_cast<unsigned char>(format[j]));) precision += format[j++];
    }
    if (j >= format.size()) fail("incomplete format");
    const char type = format[j];
    i = j;
    if (type == '%') {
      out += '%';
      continue;
    }
    if (next >= items.size()) fail("not enough arguments for format string");
    const Value& v = items[next++];
    if (width.size() > 3 || precision.size() > 4) fail("a format's width or precision is too large");
    const std::string spec = "%" + flags + width + precision;
    char buf[2048];  // width and precision of at most 3 digits: at most 1310 characters
    if (type == 's' || type == 'r' || type == 'c') {
      std::string text = type == 's' ? v.str() : type == 'r' ? v.repr() : std::string();
      if (type == 'c') {
        if (v.is_string() && v.length() == 1) text = v.as_string();
        else if (v.kind() == Value::Kind::kInt && v.as_int() >= 0 && v.as_int() <= 0x10ffff) utf8_append(text, static_cast<char32_t>(v.as_int()));
        else fail("%c requires an int or a char");
      }
      if (precision.size() > 1) {
        const auto keep = static_cast<std::size_t>(std::stoul(precision.substr(1)));
        const std::vector<std::size_t> ends = code_point_offsets(text);
        if (keep < ends.size()) text.resize(keep == 0 ? 0 : ends[keep - 1]);
      }
      const auto pad = width.empty() ? 0 : static_cast<std::size_t>(std::stoul(width));
      const std::size_t length = code_point_offsets(text).size();
      if (length < pad) {
        const std::string spaces(pad - length, ' ');
        text = flags.find('-') != std::string::npos ? text + spaces : spaces + text;
      }
      out += text;
    } else if (std::string("diu").find(type) != std::string::npos || std::string("xXo").find(type) != std::string::npos) {
      if (!v.is_number()) fail(std::string("%") + type + " format: a real number is required, not " + v.type_name());
      const std::int64_t n = v.as_int();  // a float truncates toward zero, as Python's int() does; out of range fails
      const char conv = type == 'i' || type == 'u' ? 'd' : type;
      if (conv == 'd') {
        std::snprintf(buf, sizeof(buf), (spec + "lld").c_str(), static_cast<long long>(n));
      } else {  // Python writes negative hex and octal with a sign
        std::string body_spec = spec;
        body_spec.erase(std::remove(body_spec.begin(), body_spec.end(), '+'), body_spec.end());
        std::snprintf(buf, sizeof(buf), (body_spec + "ll" + conv).c_str(),
                      static_cast<unsigned long long>(n < 0 ? -static_cast<unsigned long long>(n) : static_cast<unsigned long long>(n)));
        if (n < 0) {
          std::string t = buf;
          const std::size_t first = t.find_first_not_of(' ');
          t.insert(first == std::string::npos ? 0 : first, "-");
          std::snprintf(buf, sizeof(buf), "%s", t.c_str());
        }
      }
      out += buf;
    } else if (std::string("fFeEgG").find(type) != std::string::npos) {
      if (!v.is_number()) fail(std::string("must be real number, not ") + v.type_name());
      std::snprintf(buf, sizeof(buf), (spec + type).c_str(), v.as_float());
      out += buf;
    } else {
      fail(std::string("unsupported format character '") + type + "'");
    }
    if (out.size() > kMaxOutput) checked(std::move(out));
  }
  if (next < items.size()) fail("not all arguments converted during string formatting");
  return out;
}

class Renderer {
 public:
  explicit Renderer(const Value& context) {
    frames_.emplace_back();
    Frame& root = frames_.back();
    define_globals(root);
    if (context.is_mapping()) {
      for (const auto& [k, v] : context.as_dict()) set_in(root, k, v);
    }
  }

  std::string run(const Body& body) {
    std::string out;
    exec(body, out);
    return out;
  }

 private:
  using Frame = std::vector<std::pair<std::string, Value>>;
  enum class Flow { kNormal, kBreak, kContinue };

  struct Depth {
    explicit Depth(Renderer& r) : r_(r) {
      if (++r_.depth_ > kMaxDepth) fail("the template nests deeper than " + std::to_string(kMaxDepth));
    }
    ~Depth() { --r_.depth_; }
    Renderer& r_;
  };

  void step() {
    if (++steps_ > kMaxSteps) fail("the template ran past " + std::to_string(kMaxSteps) + " steps");
  }

  static void set_in(Frame& frame, const std::string& name, Value v) {
    for (auto& kv : frame) {
      if (kv.first == name) {
        kv.second = std::move(v);
        return;
      }
    }
    frame.emplace_back(name, std::move(v));
  }

  Value lookup(const std::string& name) const {
    for (auto f = frames_.rbegin(); f != frames_.rend(); ++f) {
      for (const auto& kv : *f) {
        if (kv.first == name) return kv.second;
      }
    }
    return {};
  }

  void define_globals(Frame& root) {
    set_in(root, "raise_exception", Value::function("raise_exception", [](Arguments& a) -> Value {
             const Value message = a.take(0, "message");
             a.done();
             throw TemplateError{message.str(), true};
           }));
    set_in(root, "strftime_now", Value::function("strftime_now", [](Arguments& a) {
             const Value format = a.take(0, "format");
             a.done();
             if (!format.is_string()) fail("strftime_now() takes a format string");
             const std::time_t now = std::time(nullptr);
             std::tm local{};
             localtime_r(&now, &local);
             char text[256];
             const std::size_t n = std::strftime(text, sizeof(text), format.as_string().c_str(), &local);
             return Value(std::string(text, n));
           }));
    set_in(root, "range", Value::function("range", [this](Arguments& a) {
             const Value x = a.take(0, ""), y = a.take(1, ""), z = a.take(2, "");
             a.done();
             std::int64_t start = 0, stop = 0, stride = 1;
             if (y.is_undefined()) {
               stop = to_index(x, "range");
             } else {
               start = to_index(x, "range");
               stop = to_index(y, "range");
               if (!z.is_undefined()) stride = to_index(z, "range");
             }
             if (stride == 0) fail("range() arg 3 must not be zero");
             List out;
             for (std::int64_t i = start; stride > 0 ? i < stop : i > stop;) {
               step();
               if (out.size() >= kMaxItems) fail("a range of more than " + std::to_string(kMaxItems) + " items");
               out.emplace_back(i);
               if (__builtin_add_overflow(i, stride, &i)) break;
             }
             return Value(std::move(out));
           }));
    const auto keyword_dict = [](Arguments& a) {
      Dict items;
      if (!a.positional.empty()) {
        if (a.positional.size() > 1 || !a.positional[0].is_mapping()) fail(a.callee + "() takes keyword arguments or one dict");
        items = a.positional[0].as_dict();
      }
      for (auto& [k, v] : a.keyword) {
        bool replaced = false;
        for (auto& kv : items) {
          if (kv.first == k) kv.second = v, replaced = true;
        }
        if (!replaced) items.emplace_back(k, v);
      }
      return items;
    };
    set_in(root, "namespace", Value::function("namespace", [keyword_dict](Arguments& a) {
             Dict items = keyword_dict(a);
             for (const auto& kv : items) {
               if (kv.second.holds_namespace()) fail("a namespace cannot hold a namespace here");
             }
             return Value::namespace_of(std::move(items));
           }));
    set_in(root, "dict", Value::function("dict", [keyword_dict](Arguments& a) { return Value(keyword_dict(a)); }));
  }

  void emit(std::string& out, const std::string& text) {
    if (out.size() + text.size() > kMaxOutput) fail("the template's output passed " + std::to_string(kMaxOutput >> 20) + " MiB");
    out += text;
  }

  Flow exec(const Body& body, std::string& out) {
    Depth depth(*this);
    for (const auto& node : body) {
      step();
      try {
        switch (node->kind) {
          case Node::Kind::kText: emit(out, node->text); break;
          case Node::Kind::kOutput: emit(out, eval(*node->expr).str()); break;
          case Node::Kind::kIf: {
            std::size_t i = 0;
            for (; i < node->conditions.size(); ++i) {
              if (eval(*node->conditions[i]).truthy()) break;
            }
            if (i < node->bodies.size()) {
              const Flow f = exec(node->bodies[i], out);
              if (f != Flow::kNormal) return f;
            }
            break;
          }
          case Node::Kind::kFor: exec_for(*node, out); break;
          case Node::Kind::kSet: assign(*node, eval(*node->expr)); break;
          case Node::Kind::kSetBlock: {
            std::string captured;
            exec(node->bodies[0], captured);
            set_in(frames_.back(), node->targets[0], Value(std::move(captured)));
            break;
          }
          case Node::Kind::kMacro: define_macro(*node); break;
          case Node::Kind::kBreak: return Flow::kBreak;
          case Node::Kind::kContinue: return Flow::kContinue;
          case Node::Kind::kPlain: {
            const Flow f = exec(node->bodies[0], out);
            if (f != Flow::kNormal) return f;
            break;
          }
        }
      } catch (TemplateError& e) {
        if (!e.raised && e.message.rfind("line ", 0) != 0) e.message = "line " + std::to_string(node->line) + ": " + e.message;
        throw;
      }
    }
    return Flow::kNormal;
  }

  void assign(const Node& node, const Value& v) {
    if (!node.attribute.empty()) {
      const Value target = lookup(node.targets[0]);
      if (target.kind() != Value::Kind::kNamespace) fail("cannot assign attribute on non-namespace object");
      if (v.holds_namespace()) fail("a namespace cannot hold a namespace here");
      if (target.namespace_items().size() >= kMaxItems) fail("a namespace of too many attributes");
      Dict& items = target.namespace_items();
      for (auto& kv : items) {
        if (kv.first == node.attribute) {
          kv.second = v;
          return;
        }
      }
      items.emplace_back(node.attribute, v);
      return;
    }
    bind(node.targets, v);
  }

  void bind(const std::vector<std::string>& targets, const Value& v) {
    if (targets.size() == 1) {
      set_in(frames_.back(), targets[0], v);
      return;
    }
    const List items = items_of(v);
    if (items.size() != targets.size())
      fail("cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) + " names");
    for (std::size_t i = 0; i < targets.size(); ++i) set_in(frames_.back(), targets[i], items[i]);
  }

  void exec_for(const Node& node, std::string& out) {
    const Value source = eval(*node.expr);
    if (source.is_none()) fail("'NoneType' object is not iterable");
    List items = items_of(source);
    frames_.emplace_back();
    struct Pop {
      ~Pop() { r.frames_.pop_back(); }
      Renderer& r;
    } pop{*this};
    if (node.filter) {
      List kept;
      for (const Value& item : items) {
        step();
        bind(node.targets, item);
        if (eval(*node.filter).truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (node.bodies.size() > 1) exec(node.bodies[1], out);
      return;
    }
    const auto n = static_cast<std::int64_t>(items.size());
    for (std::int64_t i = 0; i < n; ++i) {
      step();
      frames_.back().clear();
      bind(node.targets, items[static_cast<std::size_t>(i)]);
      Dict loop = {{"index", Value(i + 1)},
                   {"index0", Value(i)},
                   {"revindex", Value(n - i)},
                   {"revindex0", Value(n - i - 1)},
                   {"first", Value(i == 0)},
                   {"last", Value(i == n - 1)},
                   {"length", Value(n)},
                   {"depth", Value(1)},
                   {"depth0", Value(0)},
                   {"previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)] : Value()},
                   {"nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)] : Value()}};
      loop.emplace_back("cycle", Value::function("cycle", [i](Arguments& a) {
                          if (a.positional.empty()) fail("no items for cycling given");
                          const Value v = a.positional[static_cast<std::size_t>(i) % a.positional.size()];
                          for (std::size_t k = 0; k < a.positional.size(); ++k) a.take(k, "");
                          a.done();
                          return v;
                        }));
      set_in(frames_.back(), "loop", Value(std::move(loop)));
      if (exec(node.bodies[0], out) == Flow::kBreak) break;
    }
  }

  void define_macro(const Node& node) {
    const Node* macro = &node;
    set_in(frames_.back(), node.text, Value::function(node.text, [this, macro](Arguments& a) {
             Depth depth(*this);
             Frame args;
             for (std::size_t i = 0; i < macro->params.size(); ++i) {
               const MacroParam& p = macro->params[i];
               Value v = a.take(i, p.name);
               if (v.is_undefined() && p.fallback) v = eval(*p.fallback);
               args.emplace_back(p.name, std::move(v));
             }
             a.done();
             // A macro sees the template's top level and its arguments, not its caller's scopes.
             std::vector<Frame> saved(frames_.begin() + 1, frames_.end());
             frames_.resize(1);
             frames_.push_back(std::move(args));
             std::string out;
             try {
               exec(macro->bodies[0], out);
             } catch (...) {
               frames_.resize(1);
               frames_.insert(frames_.end(), saved.begin(), saved.end());
               throw;
             }
             frames_.resize(1);
             frames_.insert(frames_.end(), saved.begin(), saved.end());
             return Value(std::move(out));
           }));
  }

  Arguments arguments(const std::string& callee, const CallArgs& args) {
    Arguments a;
    a.callee = callee;
    for (const ExprPtr& e : args.positional) a.positional.push_back(eval(*e));
    for (const auto& [k, e] : args.keyword) a.keyword.emplace_back(k, eval(*e));
    return a;
  }

  std::string describe(const Expr& e) const {
    if (e.kind == Expr::Kind::kName) return e.name;
    if (e.kind == Expr::Kind::kAttr && e.a) return describe(*e.a) + "." + e.name;
    return "the value";
  }

  Value eval(const Expr& e) {
    Depth depth(*this);
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.value;
      case Expr::Kind::kName: return lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        List items;
        for (const ExprPtr& item : e.items) items.push_back(eval(*item));
        return e.kind == Expr::Kind::kTuple ? Value::tuple(std::move(items)) : Value(std::move(items));
      }
      case Expr::Kind::kDict: {
        Dict items;
        for (std::size_t i = 0; i < e.keys.size(); ++i) {
          const Value k = eval(*e.keys[i]);
          if (!k.is_string()) fail("dict keys must be strings here");
          Value v = eval(*e.items[i]);
          bool replaced = false;
          for (auto& kv : items) {
            if (kv.first == k.as_string()) kv.second = v, replaced = true;
          }
          if (!replaced) items.emplace_back(k.as_string(), std::move(v));
        }
        return Value(std::move(items));
      }
      case Expr::Kind::kAttr: {
        const Value obj = eval(*e.a);
        if (obj.is_undefined()) fail("'" + describe(*e.a) + "' is undefined");
        return attribute(obj, e.name);
      }
      case Expr::Kind::kItem: {
        const Value obj = eval(*e.a);
        if (obj.is_undefined()) fail("'" + describe(*e.a) + "' is undefined");
        return item(obj, eval(*e.b));
      }
      case Expr::Kind::kSlice: {
        const Value obj = eval(*e.a);
        const Value start = e.b ? eval(*e.b) : Value(), stop = e.c ? eval(*e.c) : Value(), stride = e.d ? eval(*e.d) : Value();
        if (obj.is_list()) {
          List out;
          for (const std::int64_t i : slice_indexes(static_cast<std::int64_t>(obj.as_list().size()), start, stop, stride))
            out.push_back(obj.as_list()[static_cast<std::size_t>(i)]);
          return Value(std::move(out));
        }
        if (obj.is_string()) {
          const std::vector<std::string> cs = characters(obj.as_string());
          std::string out;
          for (const std::int64_t i : slice_indexes(static_cast<std::int64_t>(cs.size()), start, stop, stride))
            out += cs[static_cast<std::size_t>(i)];
          return Value(std::move(out));
        }
        if (obj.is_undefined()) fail("'" + describe(*e.a) + "' is undefined");
        fail(std::string("'") + obj.type_name() + "' object is not subscriptable");
      }
      case Expr::Kind::kCall: {
        const Value callee = eval(*e.a);
        if (callee.kind() != Value::Kind::kFunction) {
          if (callee.is_undefined()) fail("'" + describe(*e.a) + "' is undefined");
          fail(std::string("'") + callee.type_name() + "' object is not callable");
        }
        step();
        Arguments a = arguments(callee.function_name(), e.args);
        return callee.as_function()(a);
      }
      case Expr::Kind::kFilter: {
        const Value v = eval(*e.a);
        Arguments a = arguments(e.name, e.args);
        return filter(e.name, v, a);
      }
      case Expr::Kind::kTest: {
        const Value v = eval(*e.a);
        Arguments a = arguments(e.name, e.args);
        const bool r = test(e.name, v, a);
        return Value(e.negated ? !r : r);
      }
      case Expr::Kind::kUnary: {
        const Value v = eval(*e.a);
        if (e.name == "not") return Value(!v.truthy());
        if (!v.is_number()) fail("bad operand type for unary " + e.name + ": '" + v.type_name() + "'");
        if (e.name == "+") return v.kind() == Value::Kind::kFloat ? Value(v.as_float()) : Value(v.as_int());
        if (v.kind() == Value::Kind::kFloat) return Value(-v.as_float());
        if (v.as_int() == INT64_MIN) int_result(true, 0);
        return Value(-v.as_int());
      }
      case Expr::Kind::kBinary: return binary(e);
      case Expr::Kind::kCondition:
        if (eval(*e.a).truthy()) return eval(*e.b);
        return e.c ? eval(*e.c) : Value();
    }
    return {};
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = eval(*e.a);
      return a.truthy() ? eval(*e.b) : a;
    }
    if (op == "or") {
      Value a = eval(*e.a);
      return a.truthy() ? a : eval(*e.b);
    }
    const Value a = eval(*e.a), b = eval(*e.b);
    if (op == "==") return Value(equal(a, b));
    if (op == "!=") return Value(!equal(a, b));
    if (op == "<") return Value(compare(a, b, op) < 0);
    if (op == ">") return Value(compare(a, b, op) > 0);
    if (op == "<=") return Value(compare(a, b, op) <= 0);
    if (op == ">=") return Value(compare(a, b, op) >= 0);
    if (op == "in") return Value(contains(b, a));
    if (op == "not in") return Value(!contains(b, a));
    if (op == "~") return Value(checked(a.str() + b.str()));
    if (op == "%" && a.is_string()) return Value(percent_format(a.as_string(), b));
    return arithmetic(op, a, b);
  }

  Value bound(const std::string& name, std::function<Value(Arguments&)> f) { return Value::function(name, std::move(f)); }

  // obj.name: a string's or dict's method, a dict's item, or undefined.
  Value attribute(const Value& obj, const std::string& name) {
    if (obj.is_string()) return string_method(obj.as_string(), name);
    if (obj.kind() == Value::Kind::kDict) {
      if (name == "items" || name == "keys" || name == "values" || name == "get") return dict_method(obj, name);
      return obj.item(name);
    }
    if (obj.kind() == Value::Kind::kNamespace) return obj.item(name);
    return {};
  }

  Value item(const Value& obj, const Value& key) {
    if (obj.is_list() && (key.kind() == Value::Kind::kInt || key.kind() == Value::Kind::kBool)) {
      std::int64_t i = key.as_int();
      const auto n = static_cast<std::int64_t>(obj.as_list().size());
      if (i < 0) i += n;
      return i >= 0 && i < n ? obj.as_list()[static_cast<std::size_t>(i)] : Value();
    }
    if (obj.is_string() && (key.kind() == Value::Kind::kInt || key.kind() == Value::Kind::kBool)) {
      const std::vector<std::string> cs = characters(obj.as_string());
      std::int64_t i = key.as_int();
      const auto n = static_cast<std::int64_t>(cs.size());
      if (i < 0) i += n;
      return i >= 0 && i < n ? Value(cs[static_cast<std::size_t>(i)]) : Value();
    }
    if (obj.is_mapping() && key.is_string()) {
      const Value v = obj.item(key.as_string());
      return v.is_undefined() && obj.kind() == Value::Kind::kDict ? attribute(obj, key.as_string()) : v;
    }
    if (key.is_string()) return attribute(obj, key.as_string());
    return {};
  }

  Value dict_method(const Value& obj, const std::string& name) {
    return bound(name, [obj, name](Arguments& a) {
      if (name == "get") {
        const Value key = a.take(0, "key"), fallback = a.take(1, "default", Value::none());
        a.done();
        if (!key.is_string()) return fallback;
        const Value v = obj.item(key.as_string());
        return v.is_undefined() ? fallback : v;
      }
      a.done();
      List out;
      for (const auto& [k, v] : obj.as_dict()) {
        if (name == "items") out.push_back(Value::tuple(List{Value(k), v}));
        else if (name == "keys") out.emplace_back(k);
        else out.push_back(v);
      }
      return Value(std::move(out));
    });
  }

  Value string_method(const std::string& s, const std::string& name) {
    static const char* const kMethods[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith",
                                           "upper", "lower", "title", "capitalize", "replace", "find", "count",
                                           "join", "splitlines", "isdigit", "isalpha", "isspace", "isupper", "islower"};
    if (std::find(std::begin(kMethods), std::end(kMethods), name) == std::end(kMethods)) return {};
    return bound(name, [s, name](Arguments& a) -> Value {
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const Value chars = a.take(0, "chars");
        a.done();
        return Value(strip(s, name != "rstrip", name != "lstrip", chars));
      }
      if (name == "split" || name == "rsplit") {
        const Value sep = a.take(0, "sep"), max = a.take(1, "maxsplit", Value(-1));
        a.done();
        if (name == "rsplit" && to_index(max, "maxsplit") >= 0) fail("rsplit with maxsplit is not supported");
        List out;
        for (std::string& part : split(s, sep, to_index(max, "maxsplit"))) out.emplace_back(std::move(part));
        return Value(std::move(out));
      }
      if (name == "startswith" || name == "endswith") {
        const Value affix = a.take(0, "prefix");
        a.done();
        return Value(starts_or_ends(s, affix, name == "startswith"));
      }
      if (name == "upper" || name == "lower") {
        a.done();
        return Value(case_of(s, name == "upper"));
      }
      if (name == "title" || name == "capitalize") {
        a.done();
        return Value(title_case(s, name == "capitalize"));
      }
      if (name == "replace") {
        const Value from = a.take(0, "old"), to = a.take(1, "new"), count = a.take(2, "count", Value(-1));
        a.done();
        if (!from.is_string() || !to.is_string()) fail("replace() arguments must be str");
        return Value(replace(s, from.as_string(), to.as_string(), to_index(count, "count")));
      }
      if (name == "find" || name == "count") {
        const Value sub = a.take(0, "sub");
        a.done();
        if (!sub.is_string()) fail(name + "() argument must be str");
        if (name == "find") {
          const std::size_t at = s.find(sub.as_string());
          if (at == std::string::npos) return Value(-1);
          return Value(static_cast<std::int64_t>(code_point_offsets(s.substr(0, at)).size()));
        }
        if (sub.as_string().empty()) return Value(static_cast<std::int64_t>(code_point_offsets(s).size() + 1));
        std::int64_t n = 0;
        for (std::size_t at = s.find(sub.as_string()); at != std::string::npos; at = s.find(sub.as_string(), at + sub.as_string().size())) ++n;
        return Value(n);
      }
      if (name == "join") {
        const Value items = a.take(0, "iterable");
        a.done();
        std::string out;
        bool first = true;
        for (const Value& v : items_of(items)) {
          if (!v.is_string()) fail("sequence item: expected str instance, " + std::string(v.type_name()) + " found");
          if (!first) out += s;
          out += v.as_string();
          first = false;
        }
        return Value(std::move(out));
      }
      if (name == "splitlines") {
        a.done();
        List out;
        std::size_t start = 0;
        for (std::size_t i = 0; i < s.size(); ++i) {
          if (s[i] == '\n' || s[i] == '\r') {
            out.emplace_back(s.substr(start, i - start));
            if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
            start = i + 1;
          }
        }
        if (start < s.size()) out.emplace_back(s.substr(start));
        return Value(std::move(out));
      }
      a.done();
      const std::vector<std::string> cs = characters(s);
      if (cs.empty()) return Value(false);
      bool all = true, any_cased = false;
      for (const std::string& c : cs) {
        const std::uint32_t cp = code_point(c, 0, c.size());
        const std::string up = case_of(c, true), low = case_of(c, false);
        if (name == "isdigit") all = all && cp < 0x80 && std::isdigit(static_cast<int>(cp));
        else if (name == "isalpha") all = all && (up != low || (cp < 0x80 && std::isalpha(static_cast<int>(cp))));
        else if (name == "isspace") all = all && py_space(cp);
        else if (up != low) {
          any_cased = true;
          all = all && (name == "isupper" ? c == up : c == low);
        }
      }
      return Value(name == "isupper" || name == "islower" ? all && any_cased : all);
    });
  }

  Value apply_filter_by_name(const std::string& name, const Value& v, std::vector<Value> extra) {
    Arguments a;
    a.callee = name;
    a.positional = std::move(extra);
    return filter(name, v, a);
  }

  Value filter(const std::string& name, const Value& v, Arguments& a) {
    if (name == "trim") {
      const Value chars = a.take(0, "chars");
      a.done();
      return Value(strip(v.str(), true, true, chars));
    }
    if (name == "length" || name == "count") {
      a.done();
      const std::int64_t n = v.length();
      if (n < 0) fail(std::string("object of type '") + v.type_name() + "' has no len()");
      return Value(n);
    }
    if (name == "upper" || name == "lower") {
      a.done();
      return Value(case_of(v.str(), name == "upper"));
    }
    if (name == "title") {  // Jinja's: each word (after -, whitespace, (, {, [ or <) capitalized
      a.done();
      std::string out, word;
      const auto flush = [&] {
        if (!word.empty()) out += title_case(word, true);
        word.clear();
      };
      for (const std::string& c : characters(v.str())) {
        const bool breaks = c == "-" || c == "(" || c == "{" || c == "[" || c == "<" || py_space(code_point(c, 0, c.size()));
        if (breaks) {
          flush();
          out += c;
        } else {
          word += c;
        }
      }
      flush();
      return Value(std::move(out));
    }
    if (name == "capitalize") {
      a.done();
      return Value(title_case(v.str(), true));
    }
    if (name == "default" || name == "d") {
      const Value fallback = a.take(0, "default_value", Value(std::string())), boolean = a.take(1, "boolean", Value(false));
      a.done();
      return v.is_undefined() || (boolean.truthy() && !v.truthy()) ? fallback : v;
    }
    if (name == "first" || name == "last") {
      a.done();
      const List items = items_of(v);
      if (items.empty()) return {};
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      const Value sep = a.take(0, "d", Value(std::string())), attr = a.take(1, "attribute");
      a.done();
      std::string out;
      bool first = true;
      for (const Value& item : items_of(v)) {
        if (!first) out += sep.str();
        out += (attr.is_undefined() || attr.is_none() ? item : attribute_path(item, attr.str())).str();
        first = false;
        if (out.size() > kMaxOutput) checked(std::move(out));
      }
      return Value(std::move(out));
    }
    if (name == "list") {
      a.done();
      return Value(items_of(v));
    }
    if (name == "items") {
      a.done();
      if (v.is_undefined()) return Value(List{});
      if (!v.is_mapping()) fail("can only get item pairs from a mapping");
      List out;
      for (const auto& [k, x] : v.as_dict()) out.push_back(Value::tuple(List{Value(k), x}));
      return Value(std::move(out));
    }
    if (name == "string") {
      a.done();
      return Value(v.str());
    }
    if (name == "safe") {
      a.done();
      return v;
    }
    if (name == "escape" || name == "e") {
      a.done();
      return Value(html_escape(v.str()));
    }
    if (name == "int" || name == "float") {
      const Value fallback = a.take(0, "default", name == "int" ? Value(0) : Value(0.0));
      if (name == "int") a.take(1, "base");
      a.done();
      if (v.is_number()) return name == "int" ? Value(v.as_int()) : Value(v.as_float());
      if (v.is_string()) {
        const std::string t = strip(v.as_string(), true, true, Value());
        char* end = nullptr;
        const double d = std::strtod(t.c_str(), &end);
        if (t.empty() || end != t.c_str() + t.size() || !std::isfinite(d)) return fallback;
        if (name == "float") return Value(d);
        if (d < -9.2e18 || d > 9.2e18) return fallback;
        return Value(static_cast<std::int64_t>(d));
      }
      return fallback;
    }
    if (name == "replace") {
      const Value from = a.take(0, "old"), to = a.take(1, "new"), count = a.take(2, "count", Value::none());
      a.done();
      return Value(replace(v.str(), from.str(), to.str(), count.is_none() ? -1 : to_index(count, "count")));
    }
    if (name == "reverse") {
      a.done();
      if (v.is_string()) {
        std::vector<std::string> cs = characters(v.as_string());
        std::string out;
        for (auto it = cs.rbegin(); it != cs.rend(); ++it) out += *it;
        return Value(std::move(out));
      }
      List items = items_of(v);
      std::reverse(items.begin(), items.end());
      return Value(std::move(items));
    }
    if (name == "tojson") {  // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
      const Value ascii = a.take(0, "ensure_ascii", Value(false)), indent = a.take(1, "indent", Value::none()),
                  separators = a.take(2, "separators", Value::none()), sort = a.take(3, "sort_keys", Value(false));
      a.done();
      if (!separators.is_none()) fail("tojson: separators are not supported");
      const std::int64_t width = indent.is_none() ? -1 : to_index(indent, "indent");
      if (width > 64) fail("tojson: an indent over 64");
      return Value(v.to_json(ascii.truthy(), static_cast<int>(width), sort.truthy()));
    }
    if (name == "indent") {
      const Value width = a.take(0, "width", Value(4)), first = a.take(1, "first", Value(false)),
                  blank = a.take(2, "blank", Value(false));
      a.done();
      const std::string pad = width.is_string() ? width.as_string() : std::string(static_cast<std::size_t>(std::clamp<std::int64_t>(to_index(width, "width"), 0, 256)), ' ');
      const std::string s = v.str();
      std::string out;
      std::size_t start = 0;
      bool first_line = true;
      for (;;) {
        const std::size_t nl = s.find('\n', start);
        const std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        const bool add = first_line ? first.truthy() : (blank.truthy() || !strip(line, true, true, Value()).empty());
        out += (add ? pad : "") + line;
        if (out.size() > kMaxOutput) checked(std::move(out));
        if (nl == std::string::npos) break;
        out += '\n';
        start = nl + 1;
        first_line = false;
      }
      return Value(std::move(out));
    }
    if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
      const bool by_attr = name == "selectattr" || name == "rejectattr", keep = name == "selectattr" || name == "select";
      Value attr;
      std::size_t next = 0;
      if (by_attr) {
        attr = a.take(next++, "");
        if (!attr.is_string()) fail(name + "() needs an attribute name");
      }
      const Value test_name = a.take(next++, "");
      std::vector<Value> test_args;
      for (std::size_t i = next; i < a.positional.size(); ++i) test_args.push_back(a.take(i, ""));
      a.done();
      List out;
      for (const Value& item : items_of(v)) {
        step();
        const Value subject = by_attr ? attribute_path(item, attr.as_string()) : item;
        bool r = subject.truthy();
        if (!test_name.is_undefined()) {
          Arguments ta;
          ta.callee = test_name.str();
          ta.positional = test_args;
          if (!test_name.is_string()) fail(name + "() needs a test name");
          r = test(test_name.as_string(), subject, ta);
        }
        if (r == keep) out.push_back(item);
      }
      return Value(std::move(out));
    }
    if (name == "map") {
      const Value attr = a.take(Arguments::kKeywordOnly, "attribute"), fallback = a.take(Arguments::kKeywordOnly, "default");
      List out;
      if (!attr.is_undefined()) {
        a.done();
        for (const Value& item : items_of(v)) {
          step();
          Value x = attribute_path(item, attr.str());
          out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
        }
        return Value(std::move(out));
      }
      const Value filter_name = a.take(0, "");
      if (!filter_name.is_string()) fail("map() needs a filter name or attribute=");
      std::vector<Value> extra;
      for (std::size_t i = 1; i < a.positional.size(); ++i) extra.push_back(a.take(i, ""));
      a.done();
      for (const Value& item : items_of(v)) {
        step();
        out.push_back(apply_filter_by_name(filter_name.as_string(), item, extra));
      }
      return Value(std::move(out));
    }
    if (name == "unique") {
      a.take(0, "case_sensitive");
      a.take(1, "attribute");
      a.done();
      List out;
      for (const Value& item : items_of(v)) {
        bool seen = false;
        for (const Value& o : out) seen = seen || equal(o, item);
        if (!seen) out.push_back(item);
      }
      return Value(std::move(out));
    }
    if (name == "sort" || name == "min" || name == "max") {
      const Value reverse = name == "sort" ? a.take(0, "reverse", Value(false)) : Value(false);
      const Value sensitive = a.take(name == "sort" ? 1 : 0, "case_sensitive", Value(false));
      const Value attr = a.take(name == "sort" ? 2 : 1, "attribute");
      a.done();
      List items = items_of(v);
      const auto key = [&](const Value& item) {
        Value k = attr.is_undefined() || attr.is_none() ? item : attribute_path(item, attr.str());
        return k.is_string() && !sensitive.truthy() ? Value(case_of(k.as_string(), false)) : k;
      };
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        return compare(key(x), key(y), "<") < 0;
      });
      if (name == "sort") {
        if (reverse.truthy()) std::reverse(items.begin(), items.end());
        return Value(std::move(items));
      }
      if (items.empty()) return {};
      return name == "min" ? items.front() : items.back();
    }
    if (name == "dictsort") {
      a.done();
      if (!v.is_mapping()) fail("dictsort() needs a mapping");
      List out;
      for (const auto& [k, x] : v.as_dict()) out.push_back(Value::tuple(List{Value(k), x}));
      std::stable_sort(out.begin(), out.end(), [](const Value& x, const Value& y) {
        return case_of(x.as_list()[0].as_string(), false) < case_of(y.as_list()[0].as_string(), false);
      });
      return Value(std::move(out));
    }
    if (name == "sum") {
      const Value attr = a.take(0, "attribute"), start = a.take(1, "start", Value(0));
      a.done();
      Value total = start;
      for (const Value& item : items_of(v))
        total = arithmetic("+", total, attr.is_undefined() || attr.is_none() ? item : attribute_path(item, attr.str()));
      return total;
    }
    if (name == "abs") {
      a.done();
      if (!v.is_number()) fail(std::string("bad operand type for abs(): '") + v.type_name() + "'");
      if (v.kind() == Value::Kind::kFloat) return Value(std::fabs(v.as_float()));
      if (v.as_int() == INT64_MIN) int_result(true, 0);
      return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
    }
    if (name == "round") {
      const Value precision = a.take(0, "precision", Value(0)), method = a.take(1, "method", Value("common"));
      a.done();
      if (!v.is_number()) fail("round() needs a number");
      const double scale = std::pow(10.0, static_cast<double>(to_index(precision, "precision")));
      const double x = v.as_float() * scale;
      const std::string m = method.str();
      if (m != "common" && m != "floor" && m != "ceil") fail("method must be 'common', 'ceil' or 'floor'");
      const double r = m == "floor" ? std::floor(x) : m == "ceil" ? std::ceil(x) : std::nearbyint(x);  // Python's round: half to even
      return Value(r / scale);
    }
    if (name == "format") {  // Jinja's: value % args
      if (!a.keyword.empty()) fail("format: keyword arguments are not supported");
      List args;
      for (std::size_t i = 0; i < a.positional.size(); ++i) args.push_back(a.take(i, ""));
      a.done();
      return Value(percent_format(v.str(), Value::tuple(std::move(args))));
    }
    if (name == "wordcount") {
      a.done();
      return Value(static_cast<std::int64_t>(split(v.str(), Value(), -1).size()));
    }
    fail("no filter named '" + name + "'");
  }

  bool test(const std::string& name, const Value& v, Arguments& a) {
    if (name == "divisibleby" || name == "eq" || name == "equalto" || name == "==" || name == "ne" || name == "gt" ||
        name == "ge" || name == "lt" || name == "le" || name == "in" || name == "sameas") {
      const Value other = a.take(0, "other");
      a.done();
      if (name == "divisibleby") {
        const std::int64_t d = to_index(other, "divisibleby");
        if (d == 0) fail("integer division or modulo by zero");
        return to_index(v, "divisibleby") % d == 0;
      }
      if (name == "in") return contains(other, v);
      if (name == "ne") return !equal(v, other);
      if (name == "gt") return compare(v, other, ">") > 0;
      if (name == "ge") return compare(v, other, ">=") >= 0;
      if (name == "lt") return compare(v, other, "<") < 0;
      if (name == "le") return compare(v, other, "<=") <= 0;
      if (name == "sameas") return v.kind() == other.kind() && equal(v, other) && (v.is_none() || v.kind() == Value::Kind::kBool || v.is_undefined());
      return equal(v, other);
    }
    a.done();
    using K = Value::Kind;
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "string") return v.is_string();
    if (name == "number") return v.is_number();
    if (name == "integer") return v.kind() == K::kInt;
    if (name == "float") return v.kind() == K::kFloat;
    if (name == "boolean") return v.kind() == K::kBool;
    if (name == "true") return v.kind() == K::kBool && v.as_bool();
    if (name == "false") return v.kind() == K::kBool && !v.as_bool();
    if (name == "mapping") return v.kind() == K::kDict;
    if (name == "iterable") return v.is_list() || v.is_string() || v.kind() == K::kDict || v.is_undefined();
    if (name == "sequence") return v.is_list() || v.is_string() || v.kind() == K::kDict;
    if (name == "callable") return v.kind() == K::kFunction;
    if (name == "odd" || name == "even") return (to_index(v, name.c_str()) % 2 != 0) == (name == "odd");
    if (name == "lower") return v.is_string() && case_of(v.as_string(), false) == v.as_string();
    if (name == "upper") return v.is_string() && case_of(v.as_string(), true) == v.as_string();
    fail("no test named '" + name + "'");
  }

  std::vector<Frame> frames_;
  std::int64_t steps_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string render_template(const Body& body, const Value& context) {
  Renderer renderer(context);
  return renderer.run(body);
}

}  // namespace sepal::api::jinja

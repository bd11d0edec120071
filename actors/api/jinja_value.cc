#include "actors/api/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace sepal::api::jinja {
namespace {
std::string float_repr(double f);
}  // namespace

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value::Value(bool b) : kind_(Kind::kBool), b_(b), i_(b ? 1 : 0) {}
Value::Value(std::int64_t i) : kind_(Kind::kInt), i_(i) {}
Value::Value(double f) : kind_(Kind::kFloat), f_(f) {}
Value::Value(std::string s) : kind_(Kind::kString), s_(std::move(s)) {}
Value::Value(List items) : kind_(Kind::kList) {
  if (items.size() > kMaxItems) throw TemplateError{"a list of more than " + std::to_string(kMaxItems) + " items"};
  for (const Value& v : items) depth_ = std::max(depth_, v.depth_ + 1);
  if (depth_ > kMaxValueDepth) throw TemplateError{"values nest deeper than " + std::to_string(kMaxValueDepth)};
  list_ = std::make_shared<List>(std::move(items));
}

Value::Value(Dict items) : kind_(Kind::kDict) {
  if (items.size() > kMaxItems) throw TemplateError{"a dict of more than " + std::to_string(kMaxItems) + " items"};
  for (const auto& kv : items) depth_ = std::max(depth_, kv.second.depth_ + 1);
  if (depth_ > kMaxValueDepth) throw TemplateError{"values nest deeper than " + std::to_string(kMaxValueDepth)};
  dict_ = std::make_shared<Dict>(std::move(items));
}

bool Value::holds_namespace() const {
  if (kind_ == Kind::kNamespace) return true;
  if (kind_ == Kind::kList) {
    for (const Value& v : *list_) {
      if (v.holds_namespace()) return true;
    }
  }
  if (kind_ == Kind::kDict) {
    for (const auto& kv : *dict_) {
      if (kv.second.holds_namespace()) return true;
    }
  }
  return false;
}

Value Value::tuple(List items) {
  Value v(std::move(items));
  v.tuple_ = true;
  return v;
}

Value Value::namespace_of(Dict items) {
  Value v(std::move(items));
  v.kind_ = Kind::kNamespace;
  return v;
}

Value Value::function(std::string name, Function f) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.s_ = std::move(name);
  v.fn_ = std::make_shared<Function>(std::move(f));
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<std::int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& e : j) items.push_back(from_json(e));
      return Value(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict items;
      for (const auto& [k, e] : j.items()) items.emplace_back(k, from_json(e));
      return Value(std::move(items));
    }
    default: return none();  // binary and discarded values do not come from JSON text
  }
}

std::int64_t Value::as_int() const {
  if (kind_ != Kind::kFloat) return i_;
  if (!(f_ > -9.2e18 && f_ < 9.2e18)) throw TemplateError{"cannot convert float " + float_repr(f_) + " to a 64-bit integer"};
  return static_cast<std::int64_t>(f_);
}
double Value::as_float() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(i_); }

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return b_;
    case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return f_ != 0;
    case Kind::kString: return !s_.empty();
    case Kind::kList: return !list_->empty();
    case Kind::kDict: return !dict_->empty();
    case Kind::kNamespace:
    case Kind::kFunction: return true;
  }
  return false;
}

Value Value::item(const std::string& key) const {
  if (!is_mapping()) return {};
  for (const auto& [k, v] : *dict_) {
    if (k == key) return v;
  }
  return {};
}

namespace {

// Python's repr of a float: the shortest digits that read back, in fixed notation unless the
// decimal point falls more than 16 places right or 4 left of the first digit.
std::string float_repr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f < 0 ? "-inf" : "inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const std::size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(sci.substr(e + 1));
  const int point = exponent + 1;  // digits before the decimal point
  if (point > 16 || point <= -4) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ex[16];
    std::snprintf(ex, sizeof(ex), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + ex;
  }
  if (point <= 0) return sign + "0." + std::string(static_cast<std::size_t>(-point), '0') + digits;
  if (static_cast<std::size_t>(point) >= digits.size())
    return sign + digits + std::string(static_cast<std::size_t>(point) - digits.size(), '0') + ".0";
  return sign + digits.substr(0, static_cast<std::size_t>(point)) + "." + digits.substr(static_cast<std::size_t>(point));
}

std::string string_repr(const std::string& s) {
  const char quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, quote);
  for (const unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == static_cast<unsigned char>(quote)) out += std::string("\\") + quote;
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + quote;
}

// Decodes one UTF-8 sequence at s[i] (a malformed byte counts as one code point of its own).
std::uint32_t decode_at(const std::string& s, std::size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  int extra = c >= 0xf0 && c < 0xf8 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
  if (c >= 0xf8) extra = 0;
  std::uint32_t cp = extra == 0 ? c : extra == 1 ? (c & 0x1f) : extra == 2 ? (c & 0x0f) : (c & 0x07);
  std::size_t j = i + 1;
  for (int k = 0; k < extra; ++k, ++j) {
    if (j >= s.size() || (static_cast<unsigned char>(s[j]) & 0xc0) != 0x80) {
      ++i;
      return c;
    }
    cp = cp << 6 | (static_cast<unsigned char>(s[j]) & 0x3f);
  }
  i = j;
  return cp;
}

void json_string(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == '\b') out += "\\b";
    else if (c == '\f') out += "\\f";
    if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
      ++i;
      continue;
    }
    char hex[16];
    if (c < 0x20) {
      std::snprintf(hex, sizeof(hex), "\\u%04x", c);
      out += hex;
      ++i;
    } else if (c < 0x80 || !ensure_ascii) {
      out += static_cast<char>(c);
      ++i;
    } else {
      const std::uint32_t cp = decode_at(s, i);
      if (cp >= 0x10000) {
        const std::uint32_t v = cp - 0x10000;
        std::snprintf(hex, sizeof(hex), "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
      } else {
        std::snprintf(hex, sizeof(hex), "\\u%04x", cp);
      }
      out += hex;
    }
  }
  out += '"';
}

void to_json_at(const Value& v, bool ensure_ascii, int indent, bool sort_keys, int depth, std::string& out) {
  if (depth > 512) throw TemplateError{"tojson: nesting too deep"};
  if (out.size() > (std::size_t{10} << 20)) throw TemplateError{"tojson: a text longer than 10 MiB"};
  const auto newline = [&](int level) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(level), ' ');
  };
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (v.kind()) {
    case Value::Kind::kNone: out += "null"; return;
    case Value::Kind::kBool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::kInt: out += std::to_string(v.as_int()); return;
    case Value::Kind::kFloat: {
      const double f = v.as_float();
      out += std::isnan(f) ? "NaN" : std::isinf(f) ? (f < 0 ? "-Infinity" : "Infinity") : float_repr(f);
      return;
    }
    case Value::Kind::kString: json_string(v.as_string(), ensure_ascii, out); return;
    case Value::Kind::kList: {
      if (v.as_list().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      bool first = true;
      for (const Value& e : v.as_list()) {
        if (!first) out += item_sep;
        first = false;
        newline(depth + 1);
        to_json_at(e, ensure_ascii, indent, sort_keys, depth + 1, out);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::kDict: {
      if (v.as_dict().empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.as_dict()) items.push_back(&kv);
      if (sort_keys) std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out += item_sep;
        first = false;
        newline(depth + 1);
        json_string(kv->first, ensure_ascii, out);
        out += ": ";
        to_json_at(kv->second, ensure_ascii, indent, sort_keys, depth + 1, out);
      }
      newline(depth);
      out += '}';
      return;
    }
    case Value::Kind::kUndefined:
    case Value::Kind::kNamespace:
    case Value::Kind::kFunction: break;
  }
  throw TemplateError{std::string("Object of type ") + v.type_name() + " is not JSON serializable"};
}

}  // namespace

std::string Value::str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kString: return s_;
    default: return repr();
  }
}

namespace {

constexpr std::size_t kMaxText = std::size_t{10} << 20;

void repr_into(const Value& v, std::string& out) {
  if (out.size() > kMaxText) throw TemplateError{"a value's text longer than " + std::to_string(kMaxText >> 20) + " MiB"};
  switch (v.kind()) {
    case Value::Kind::kUndefined: return;
    case Value::Kind::kNone: out += "None"; return;
    case Value::Kind::kBool: out += v.as_bool() ? "True" : "False"; return;
    case Value::Kind::kInt: out += std::to_string(v.as_int()); return;
    case Value::Kind::kFloat: out += float_repr(v.as_float()); return;
    case Value::Kind::kString: out += string_repr(v.as_string()); return;
    case Value::Kind::kList: {
      out += v.is_tuple() ? "(" : "[";
      for (std::size_t i = 0; i < v.as_list().size(); ++i) {
        if (i) out += ", ";
        repr_into(v.as_list()[i], out);
      }
      if (v.is_tuple() && v.as_list().size() == 1) out += ",";
      out += v.is_tuple() ? ")" : "]";
      return;
    }
    case Value::Kind::kDict: {
      out += "{";
      for (std::size_t i = 0; i < v.as_dict().size(); ++i) {
        if (i) out += ", ";
        out += string_repr(v.as_dict()[i].first) + ": ";
        repr_into(v.as_dict()[i].second, out);
      }
      out += "}";
      return;
    }
    case Value::Kind::kNamespace: out += "<Namespace>"; return;
    case Value::Kind::kFunction: out += "<function " + v.function_name() + ">"; return;
  }
}

}  // namespace

std::string Value::repr() const {
  std::string out;
  repr_into(*this, out);
  if (out.size() > kMaxText) throw TemplateError{"a value's text longer than " + std::to_string(kMaxText >> 20) + " MiB"};
  return out;
}

std::string Value::to_json(bool ensure_ascii, int indent, bool sort_keys) const {
  std::string out;
  to_json_at(*this, ensure_ascii, indent, sort_keys, 0, out);
  return out;
}

std::int64_t Value::length() const {
  switch (kind_) {
    case Kind::kString: return static_cast<std::int64_t>(code_point_offsets(s_).size());
    case Kind::kList: return static_cast<std::int64_t>(list_->size());
    case Kind::kDict:
    case Kind::kNamespace: return static_cast<std::int64_t>(dict_->size());
    case Kind::kUndefined: return 0;
    default: return -1;
  }
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "Namespace";
    case Kind::kFunction: return "function";
  }
  return "?";
}

bool equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind() == K::kFloat || b.kind() == K::kFloat) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kUndefined:
    case K::kNone: return true;
    case K::kString: return a.as_string() == b.as_string();
    case K::kList: {
      if (a.is_tuple() != b.is_tuple() || a.as_list().size() != b.as_list().size()) return false;
      for (std::size_t i = 0; i < a.as_list().size(); ++i) {
        if (!equal(a.as_list()[i], b.as_list()[i])) return false;
      }
      return true;
    }
    case K::kDict: {
      if (a.as_dict().size() != b.as_dict().size()) return false;
      for (const auto& [k, v] : a.as_dict()) {
        const Value other = b.item(k);
        if (other.is_undefined() || !equal(v, other)) return false;
      }
      return true;
    }
    case K::kNamespace: return &a.as_dict() == &b.as_dict();
    case K::kFunction: return &a.as_function() == &b.as_function();
    default: return false;
  }
}

Value Arguments::take(std::size_t index, const std::string& name, Value fallback) {
  used_positional_.resize(positional.size());
  used_keyword_.resize(keyword.size());
  if (index < positional.size()) {
    used_positional_[index] = true;
    return positional[index];
  }
  for (std::size_t i = 0; i < keyword.size(); ++i) {
    if (keyword[i].first == name) {
      used_keyword_[i] = true;
      return keyword[i].second;
    }
  }
  return fallback;
}

void Arguments::done() const {
  for (std::size_t i = 0; i < positional.size(); ++i) {
    if (i >= used_positional_.size() || !used_positional_[i])
      throw TemplateError{callee + "() got " + std::to_string(positional.size()) + " positional arguments, more than it takes"};
  }
  for (std::size_t i = 0; i < keyword.size(); ++i) {
    if (i >= used_keyword_.size() || !used_keyword_[i])
      throw TemplateError{callee + "() got an unexpected keyword argument '" + keyword[i].first + "'"};
  }
}

std::vector<std::size_t> code_point_offsets(const std::string& s) {
  std::vector<std::size_t> ends;
  for (std::size_t i = 0; i < s.size();) {
    decode_at(s, i);
    ends.push_back(i);
  }
  return ends;
}

}  // namespace sepal::api::jinja

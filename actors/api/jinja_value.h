#pragma once
// The values a chat template computes with, as Jinja (Python) has them: undefined, None, bools,
// ints, floats, strings (UTF-8; lengths and indexes count code points), lists, dicts (keys in
// insertion order), namespaces (the one mutable kind) and callables (macros, built-in functions
// and bound methods). Conversion to text follows Python's str() and repr(); tojson follows
// Python's json.dumps as transformers' chat templates call it.
//
// Thread-safety: a Value is not shared between threads; copies share lists and dicts.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace sepal::api::jinja {

class Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;
struct Arguments;
using Function = std::function<Value(Arguments&)>;

/// An error while rendering (a template's raise_exception, a type error, an undefined attribute):
/// the message is what the API's caller is told.
struct TemplateError {
  std::string message;
  bool raised = false;  // by the template's raise_exception: the message is the template's own
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kFunction };

  Value() = default;  // undefined
  static Value none();
  Value(bool b);
  Value(std::int64_t i);
  Value(int i) : Value(static_cast<std::int64_t>(i)) {}
  Value(double f);
  Value(std::string s);
  Value(const char* s) : Value(std::string(s)) {}
  Value(List items);
  Value(Dict items);
  /// A tuple: a list that Python writes in parentheses and that never equals a list.
  static Value tuple(List items);
  static Value namespace_of(Dict items);
  static Value function(std::string name, Function f);
  /// JSON as Python's json.loads gives it (objects keep their key order).
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_mapping() const { return kind_ == Kind::kDict || kind_ == Kind::kNamespace; }

  bool as_bool() const { return b_; }
  std::int64_t as_int() const;  // bools and ints
  double as_float() const;      // any number
  const std::string& as_string() const { return s_; }
  const List& as_list() const { return *list_; }
  const Dict& as_dict() const { return *dict_; }
  Dict& namespace_items() const { return *dict_; }  // namespaces only
  const Function& as_function() const { return *fn_; }
  const std::string& function_name() const { return s_; }

  /// Python's truth value (undefined is false).
  bool truthy() const;
  /// A dict's (or namespace's) value for key, or undefined.
  Value item(const std::string& key) const;
  /// Python's str(): None, True, 1, 1.5, text, ['a', 1], {'k': 'v'}; undefined is "".
  std::string str() const;
  /// Python's repr() (strings quoted).
  std::string repr() const;
  /// Python's json.dumps(value, ensure_ascii, indent (< 0: none), sort_keys).
  std::string to_json(bool ensure_ascii, int indent, bool sort_keys) const;
  /// A list's, string's (code points) or dict's length; -1 for other kinds.
  std::int64_t length() const;
  /// The type's name in errors ("str", "int", "list", "dict", "NoneType", ...).
  const char* type_name() const;
  /// Whether a namespace is in this value (a namespace holding one could hold itself).
  bool holds_namespace() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool tuple_ = false;
  int depth_ = 0;  // lists and dicts: how deep values nest in them
  std::int64_t i_ = 0;
  double f_ = 0;
  std::string s_;  // strings; a function's name
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> fn_;
};

/// How deep lists and dicts may nest, and how many items one may hold: past either, building one
/// throws TemplateError (a template is outside input; its values must stay finite and shallow).
inline constexpr int kMaxValueDepth = 128;
inline constexpr std::size_t kMaxItems = std::size_t{1} << 20;

/// Python's ==.
bool equal(const Value& a, const Value& b);

/// A call's arguments: positional, then keyword ones, each taken once by the callee.
struct Arguments {
  std::string callee;
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  /// For take(): an argument that can only be given by name.
  static constexpr std::size_t kKeywordOnly = static_cast<std::size_t>(-1);

  /// The argument at position `index` or named `name`, or `fallback`; marks it used.
  Value take(std::size_t index, const std::string& name, Value fallback = Value());
  /// Fails when an argument was given that no take() asked for.
  void done() const;

 private:
  std::vector<bool> used_positional_;
  std::vector<bool> used_keyword_;
};

/// The code points of a UTF-8 string, as byte offsets (one past the last included).
std::vector<std::size_t> code_point_offsets(const std::string& s);

}  // namespace sepal::api::jinja

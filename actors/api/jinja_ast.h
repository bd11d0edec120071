#pragma once
// A parsed chat template: expressions and statements, as jinja_parse.cc builds them and
// jinja_render.cc walks them. Internal to the Jinja engine (actors/api/jinja_template.h).

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "actors/api/jinja_value.h"

namespace sepal::api::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct CallArgs {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct Expr {
  enum class Kind {
    kLiteral,    // value
    kName,       // name
    kList,       // items
    kTuple,      // items (evaluated as a list)
    kDict,       // keys[i]: items[i]
    kAttr,       // a.name
    kItem,       // a[b]
    kSlice,      // a[b:c:d], any of b, c, d null
    kCall,       // a(args)
    kFilter,     // a | name(args)
    kTest,       // a is [not] name(args)
    kUnary,      // op a: "not", "-", "+"
    kBinary,     // a op b: "or", "and", "==", "!=", "<", ">", "<=", ">=", "in", "not in", "+", "-", "~", "*", "/", "//", "%", "**"
    kCondition,  // b if a else c (c may be null)
  };
  Kind kind;
  Value value;
  std::string name;  // kName, kAttr, kFilter, kTest; the operator of kUnary and kBinary
  ExprPtr a, b, c, d;
  std::vector<ExprPtr> items;
  std::vector<ExprPtr> keys;
  CallArgs args;
  bool negated = false;  // kTest: "is not"
  int line = 1;
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct MacroParam {
  std::string name;
  ExprPtr fallback;  // null: required
};

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // conditions[i] -> bodies[i]; bodies.back() is the else when it has one more
    kFor,       // for targets in expr [if filter]: bodies[0], else bodies[1]
    kSet,       // set targets (or target.attr) = expr
    kSetBlock,  // set targets[0] %}bodies[0]{% endset
    kMacro,     // macro name(params): bodies[0]
    kBreak,
    kContinue,
    kPlain,     // a block rendered as is: generation
  };
  Kind kind;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  std::vector<std::string> targets;
  std::string attribute;  // kSet on a namespace: targets[0].attribute
  std::vector<MacroParam> params;
  int line = 1;
};

/// The statements of a template's source; throws TemplateError ("line N: ...").
Body parse_template(const std::string& source);

/// Renders `body` with the variables of `context` (a dict); throws TemplateError.
std::string render_template(const Body& body, const Value& context);

}  // namespace sepal::api::jinja

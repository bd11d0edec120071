// Chat templates' source to statements: a lexer that splits text from tags and applies Jinja's
// whitespace control (- and +, trim_blocks and lstrip_blocks as transformers sets them), and a
// recursive-descent parser with Jinja's operator precedence.
#include <cctype>
#include <cstdint>
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "actors/api/jinja_ast.h"
#include "model/utf8.h"

namespace sepal::api::jinja {
namespace {

constexpr int kMaxDepth = 128;

// The filters and tests jinja_render.cc knows; a template naming another fails to parse, as
// Jinja fails to compile it.
const std::set<std::string>& known_filters() {
  static const std::set<std::string> names = {
      "abs",  "capitalize", "count",   "d",          "default", "dictsort", "e",         "escape", "first",
      "float", "format",    "indent",    "int",     "items",      "join",    "last",     "length",    "list",   "lower",
      "map",   "max",       "min",     "rejectattr", "reject",  "replace",  "reverse",   "round",  "safe",
      "select", "selectattr", "sort",  "string",     "sum",     "title",    "tojson",    "trim",   "unique",
      "upper", "wordcount"};
  return names;
}

const std::set<std::string>& known_tests() {
  static const std::set<std::string> names = {
      "boolean", "callable", "defined", "divisibleby", "eq",       "equalto", "even",   "false",   "float",
      "ge",      "gt",       "in",      "integer",     "iterable", "le",      "lower",  "lt",      "mapping",
      "ne",      "none",     "number",  "odd",         "sameas",   "sequence", "string", "true",   "undefined",
      "upper",   "=="};
  return names;
}

struct Token {
  enum class Kind { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEnd };
  Kind kind;
  std::string text;
  std::int64_t i = 0;
  double f = 0;
  int line = 1;
};

[[noreturn]] void fail_at(int line, const std::string& what) {
  throw TemplateError{"line " + std::to_string(line) + ": " + what};
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Token> run() {
    // As Jinja reads a source: \r\n and \r become \n, and one newline at the end is dropped.
    std::string normalized;
    normalized.reserve(src_.size());
    for (std::size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\r') {
        normalized += '\n';
        if (i + 1 < src_.size() && src_[i + 1] == '\n') ++i;
      } else {
        normalized += src_[i];
      }
    }
    if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
    src_ = std::move(normalized);
    // Pieces: texts, and tags with their whitespace control, before the rules are applied.
    struct Tag {
      char type;  // '{' variable, '%' block, '#' comment
      char left, right;  // '-', '+' or 0
      std::vector<Token> tokens;
      int line;
    };
    std::vector<std::string> texts(1);
    std::vector<Tag> tags;
    std::vector<int> text_lines(1, 1);
    while (pos_ < src_.size()) {
      const std::size_t open = find_open(pos_);
      if (open == std::string::npos) {
        texts.back() += src_.substr(pos_);
        advance_to(src_.size());
        break;
      }
      texts.back() += src_.substr(pos_, open - pos_);
      advance_to(open);
      Tag tag{src_[open + 1], 0, 0, {}, line_};
      advance_to(open + 2);
      if (pos_ < src_.size() && (src_[pos_] == '-' || src_[pos_] == '+')) tag.left = src_[pos_], advance_to(pos_ + 1);
      if (tag.type == '#') {
        const std::size_t close = src_.find("#}", pos_);
        if (close == std::string::npos) fail_at(tag.line, "a comment is not closed");
        if (close > pos_ && (src_[close - 1] == '-' || src_[close - 1] == '+')) tag.right = src_[close - 1];
        advance_to(close + 2);
      } else {
        tag.tokens = tag_tokens(tag.type == '{' ? '}' : '%', tag.right);
      }
      tags.push_back(std::move(tag));
      texts.emplace_back();
      text_lines.push_back(line_);
    }
    // Whitespace control, tag by tag: a '-' strips all whitespace on its side; otherwise a block
    // or comment takes the newline after it (trim_blocks) and the spaces and tabs before it on
    // its line (lstrip_blocks), unless marked '+'.
    std::vector<bool> line_starting(tags.size() + 1, false);  // before tag i: the text starts a line
    line_starting[0] = true;
    for (std::size_t i = 0; i < tags.size(); ++i) {
      const Tag& tag = tags[i];
      std::string& after = texts[i + 1];
      if (tag.right == '-') {
        std::size_t n = 0;
        while (n < after.size() && std::isspace(static_cast<unsigned char>(after[n]))) ++n;
        line_starting[i + 1] = n > 0 && after[n - 1] == '\n';
        after.erase(0, n);
      } else if (tag.type != '{' && tag.right != '+' && !after.empty() && after[0] == '\n') {
        after.erase(0, 1);
        line_starting[i + 1] = true;
      }
    }
    for (std::size_t i = 0; i < tags.size(); ++i) {
      const Tag& tag = tags[i];
      std::string& before = texts[i];
      if (tag.left == '-') {
        std::size_t n = before.size();
        while (n > 0 && std::isspace(static_cast<unsigned char>(before[n - 1]))) --n;
        before.erase(n);
      } else if (tag.type != '{' && tag.left != '+') {
        const std::size_t line_start = before.rfind('\n') == std::string::npos ? 0 : before.rfind('\n') + 1;
        if (line_start > 0 || line_starting[i]) {
          bool blank = true;
          for (std::size_t k = line_start; k < before.size(); ++k)
            blank = blank && std::isspace(static_cast<unsigned char>(before[k]));
          if (blank) before.erase(line_start);
        }
      }
    }
    std::vector<Token> out;
    for (std::size_t i = 0; i <= tags.size(); ++i) {
      if (!texts[i].empty()) out.push_back({Token::Kind::kText, texts[i], 0, 0, text_lines[i]});
      if (i == tags.size()) break;
      Tag& tag = tags[i];
      if (tag.type == '#') continue;
      out.push_back({tag.type == '{' ? Token::Kind::kVarBegin : Token::Kind::kBlockBegin, "", 0, 0, tag.line});
      for (Token& t : tag.tokens) out.push_back(std::move(t));
      out.push_back({tag.type == '{' ? Token::Kind::kVarEnd : Token::Kind::kBlockEnd, "", 0, 0, line_});
    }
    out.push_back({Token::Kind::kEnd, "", 0, 0, line_});
    return out;
  }

 private:
  std::size_t find_open(std::size_t from) const {
    for (std::size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  void advance_to(std::size_t to) {
    for (; pos_ < to; ++pos_) line_ += src_[pos_] == '\n';
  }

  // The tokens of a tag up to its closing }} or %} (outside brackets and strings); sets `right`
  // to its whitespace control.
  std::vector<Token> tag_tokens(char closer, char& right) {
    std::vector<Token> tokens;
    int depth = 0;
    for (;;) {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) advance_to(pos_ + 1);
      if (pos_ >= src_.size()) fail_at(line_, std::string("a tag is not closed (no ") + closer + "})");
      const char c = src_[pos_];
      if (depth == 0) {
        for (const char control : {'-', '+'}) {
          if (c == control && pos_ + 2 < src_.size() && src_[pos_ + 1] == closer && src_[pos_ + 2] == '}') {
            right = control;
            advance_to(pos_ + 3);
            return tokens;
          }
        }
        if (c == closer && pos_ + 1 < src_.size() && src_[pos_ + 1] == '}') {
          advance_to(pos_ + 2);
          return tokens;
        }
      }
      Token t{Token::Kind::kOp, "", 0, 0, line_};
      if (c == '\'' || c == '"') {
        t.kind = Token::Kind::kString;
        t.text = string_literal(c);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        number(t);
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        std::size_t end = pos_;
        while (end < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
        t.kind = Token::Kind::kName;
        t.text = src_.substr(pos_, end - pos_);
        advance_to(end);
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                           ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};
        for (const char* op : kOps) {
          if (src_.compare(pos_, std::char_traits<char>::length(op), op) == 0) {
            t.text = op;
            break;
          }
        }
        if (t.text.empty()) fail_at(line_, std::string("unexpected character '") + c + "'");
        if (t.text == "(" || t.text == "[" || t.text == "{") ++depth;
        if ((t.text == ")" || t.text == "]" || t.text == "}") && depth > 0) --depth;
        advance_to(pos_ + t.text.size());
      }
      tokens.push_back(std::move(t));
    }
  }

  std::string string_literal(char quote) {
    const int line = line_;
    std::string out;
    std::size_t i = pos_ + 1;
    for (;; ++i) {
      if (i >= src_.size()) fail_at(line, "a string is not closed");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\' || i + 1 >= src_.size()) {
        out += c;
        continue;
      }
      const char e = src_[++i];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case 'a': out += '\a'; break;
        case '0': out += '\0'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case '\n': break;  // a continued line
        case 'x':
        case 'u':
        case 'U': {
          const std::size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + digits >= src_.size()) fail_at(line, "a truncated \\" + std::string(1, e) + " escape");
          std::uint32_t cp = 0;
          for (std::size_t k = 1; k <= digits; ++k) {
            const char h = src_[i + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) fail_at(line, "a malformed \\" + std::string(1, e) + " escape");
            cp = cp * 16 + static_cast<std::uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : std::tolower(h) - 'a' + 10);
          }
          if (cp > 0x10ffff) fail_at(line, "an escape past U+10FFFF");
          utf8_append(out, cp);
          i += digits;
          break;
        }
        default:
          out += '\\';
          out += e;
      }
    }
    advance_to(i + 1);
    return out;
  }

  void number(Token& t) {
    std::size_t end = pos_;
    while (end < src_.size() && std::isdigit(static_cast<unsigned char>(src_[end]))) ++end;
    bool is_float = false;
    if (end + 1 < src_.size() && src_[end] == '.' && std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
      is_float = true;
      ++end;
      while (end < src_.size() && std::isdigit(static_cast<unsigned char>(src_[end]))) ++end;
    }
    if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      std::size_t k = end + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        is_float = true;
        end = k;
        while (end < src_.size() && std::isdigit(static_cast<unsigned char>(src_[end]))) ++end;
      }
    }
    const std::string text = src_.substr(pos_, end - pos_);
    if (is_float) {
      t.kind = Token::Kind::kFloat;
      t.f = std::strtod(text.c_str(), nullptr);
    } else {
      t.kind = Token::Kind::kInt;
      if (text.size() > 18) fail_at(line_, "an integer literal too large: " + text);
      t.i = std::stoll(text);
    }
    advance_to(end);
  }

  std::string src_;
  std::size_t pos_ = 0;
  int line_ = 1;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Body parse() {
    Body body = parse_body({});
    if (peek().kind != Token::Kind::kEnd) fail_at(peek().line, "unexpected '" + peek().text + "'");
    return body;
  }

 private:
  const Token& peek(std::size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
  const Token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool is_op(const char* op, std::size_t ahead = 0) const {
    return peek(ahead).kind == Token::Kind::kOp && peek(ahead).text == op;
  }
  bool is_name(const char* name, std::size_t ahead = 0) const {
    return peek(ahead).kind == Token::Kind::kName && peek(ahead).text == name;
  }
  void expect_op(const char* op) {
    if (!is_op(op)) fail_at(peek().line, std::string("expected '") + op + "', got '" + describe(peek()) + "'");
    ++i_;
  }
  std::string expect_name() {
    if (peek().kind != Token::Kind::kName) fail_at(peek().line, "expected a name, got '" + describe(peek()) + "'");
    return next().text;
  }
  void expect_block_end() {
    if (peek().kind != Token::Kind::kBlockEnd) fail_at(peek().line, "expected the end of the tag, got '" + describe(peek()) + "'");
    ++i_;
  }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Token::Kind::kEnd: return "end of template";
      case Token::Kind::kBlockEnd: return "%}";
      case Token::Kind::kVarEnd: return "}}";
      case Token::Kind::kText: return "text";
      default: return t.text;
    }
  }

  struct Depth {
    explicit Depth(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxDepth) fail_at(p_.peek().line, "nesting deeper than " + std::to_string(kMaxDepth));
    }
    ~Depth() { --p_.depth_; }
    Parser& p_;
  };

  // Statements until a block tag whose name is one of `ends` (left unread) or the template's end.
  Body parse_body(const std::vector<std::string>& ends) {
    Depth depth(*this);
    Body body;
    for (;;) {
      const Token& t = peek();
      if (t.kind == Token::Kind::kEnd) {
        if (!ends.empty()) fail_at(t.line, "missing {% " + ends.back() + " %}");
        return body;
      }
      if (t.kind == Token::Kind::kText) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kText;
        n->text = t.text;
        n->line = t.line;
        body.push_back(std::move(n));
        ++i_;
      } else if (t.kind == Token::Kind::kVarBegin) {
        ++i_;
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kOutput;
        n->line = t.line;
        n->expr = parse_tuple_or_expr();
        if (peek().kind != Token::Kind::kVarEnd) fail_at(peek().line, "expected '}}', got '" + describe(peek()) + "'");
        ++i_;
        body.push_back(std::move(n));
      } else if (t.kind == Token::Kind::kBlockBegin) {
        const Token& name = peek(1);
        if (name.kind != Token::Kind::kName) fail_at(name.line, "a tag without a statement name");
        for (const std::string& end : ends) {
          if (name.text == end) return body;
        }
        ++i_;
        body.push_back(parse_statement());
      } else {
        fail_at(t.line, "unexpected '" + describe(t) + "'");
      }
    }
  }

  // After a statement's name and arguments: the end of its tag, its body, and its closing tag.
  Body block_until(const char* end) {
    expect_block_end();
    Body body = parse_body({end});
    i_ += 2;  // {% and the end's name
    expect_block_end();
    return body;
  }

  std::unique_ptr<Node> parse_statement() {
    const Token& name_token = next();
    const std::string name = name_token.text;
    auto n = std::make_unique<Node>();
    n->line = name_token.line;
    if (name == "if") {
      n->kind = Node::Kind::kIf;
      n->conditions.push_back(parse_expression());
      expect_block_end();
      for (;;) {
        n->bodies.push_back(parse_body({"elif", "else", "endif"}));
        ++i_;  // the block begin
        const std::string end = next().text;
        if (end == "elif") {
          n->conditions.push_back(parse_expression());
          expect_block_end();
        } else if (end == "else") {
          n->bodies.push_back(block_until("endif"));
          return n;
        } else {
          expect_block_end();
          return n;
        }
      }
    }
    if (name == "for") {
      n->kind = Node::Kind::kFor;
      n->targets = parse_targets();
      if (!is_name("in")) fail_at(peek().line, "expected 'in' in a for loop");
      ++i_;
      n->expr = parse_expression(/*with_condition=*/false);
      if (is_name("if")) {
        ++i_;
        n->filter = parse_expression();
      }
      if (is_name("recursive")) fail_at(peek().line, "recursive loops are not supported");
      expect_block_end();
      n->bodies.push_back(parse_body({"else", "endfor"}));
      ++i_;
      if (next().text == "else") {
        n->bodies.push_back(block_until("endfor"));
      } else {
        expect_block_end();
      }
      return n;
    }
    if (name == "set") {
      n->targets = parse_targets();
      if (n->targets.size() == 1 && is_op(".")) {
        ++i_;
        n->attribute = expect_name();
      }
      if (is_op("=")) {
        ++i_;
        n->kind = Node::Kind::kSet;
        n->expr = parse_tuple_or_expr();
        expect_block_end();
        return n;
      }
      if (n->targets.size() != 1 || !n->attribute.empty()) fail_at(n->line, "a block set takes one name");
      if (is_op("|")) fail_at(peek().line, "filtered block sets are not supported");
      n->kind = Node::Kind::kSetBlock;
      n->bodies.push_back(block_until("endset"));
      return n;
    }
    if (name == "macro") {
      n->kind = Node::Kind::kMacro;
      n->text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        MacroParam p;
        p.name = expect_name();
        if (is_op("=")) {
          ++i_;
          p.fallback = parse_expression();
        }
        n->params.push_back(std::move(p));
        if (!is_op(")")) expect_op(",");
      }
      ++i_;
      n->bodies.push_back(block_until("endmacro"));
      return n;
    }
    if (name == "break" || name == "continue") {
      n->kind = name == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      expect_block_end();
      return n;
    }
    if (name == "generation") {
      n->kind = Node::Kind::kPlain;
      n->bodies.push_back(block_until("endgeneration"));
      return n;
    }
    fail_at(n->line, "the statement '" + name + "' is not supported");
  }

  // Names separated by commas (a tuple's parentheses allowed).
  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    const bool paren = is_op("(");
    if (paren) ++i_;
    names.push_back(expect_name());
    while (is_op(",")) {
      ++i_;
      if (peek().kind != Token::Kind::kName) break;
      names.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return names;
  }

  ExprPtr make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // An expression, or a bare tuple of them (`{{ a, b }}`, `set x = a, b`).
  ExprPtr parse_tuple_or_expr() {
    const int line = peek().line;
    ExprPtr first = parse_expression();
    if (!is_op(",")) return first;
    auto tuple = make(Expr::Kind::kTuple, line);
    tuple->items.push_back(std::move(first));
    while (is_op(",")) {
      ++i_;
      if (peek().kind == Token::Kind::kVarEnd || peek().kind == Token::Kind::kBlockEnd) break;
      tuple->items.push_back(parse_expression());
    }
    return tuple;
  }

  ExprPtr parse_expression(bool with_condition = true) {
    Depth depth(*this);
    ExprPtr e = parse_or();
    if (!with_condition) return e;
    while (is_name("if")) {
      const int line = next().line;
      auto cond = make(Expr::Kind::kCondition, line);
      cond->b = std::move(e);
      cond->a = parse_or();
      if (is_name("else")) {
        ++i_;
        cond->c = parse_expression();
      }
      e = std::move(cond);
    }
    return e;
  }

  ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b, int line) {
    auto e = make(Expr::Kind::kBinary, line);
    e->name = op;
    e->a = std::move(a);
    e->b = std::move(b);
    return e;
  }

  // One left-associative level of binary operators: operands from `operand`, joined by any of
  // `ops` (keywords when `keywords`, else operator tokens).
  using Level = ExprPtr (Parser::*)();
  ExprPtr chain(Level operand, std::initializer_list<const char*> ops, bool keywords) {
    ExprPtr e = (this->*operand)();
    for (;;) {
      const char* found = nullptr;
      for (const char* op : ops) {
        if (keywords ? is_name(op) : is_op(op)) found = op;
      }
      if (!found) return e;
      const int line = next().line;
      e = binary(found, std::move(e), (this->*operand)(), line);
    }
  }

  ExprPtr parse_or() { return chain(&Parser::parse_and, {"or"}, true); }
  ExprPtr parse_and() { return chain(&Parser::parse_not, {"and"}, true); }

  ExprPtr parse_not() {
    if (is_name("not")) {
      Depth depth(*this);
      const int line = next().line;
      auto e = make(Expr::Kind::kUnary, line);
      e->name = "not";
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    for (;;) {
      const int line = peek().line;
      std::string op;
      if (peek().kind == Token::Kind::kOp &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == ">" ||
           peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        ++i_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        i_ += 2;
        op = "not in";
      } else {
        return e;
      }
      e = binary(op, std::move(e), parse_math1(), line);
    }
  }

  // Jinja's order: + and - bind looser than ~, which binds looser than * / // %, then **.
  ExprPtr parse_math1() { return chain(&Parser::parse_concat, {"+", "-"}, false); }
  ExprPtr parse_concat() { return chain(&Parser::parse_math2, {"~"}, false); }
  ExprPtr parse_math2() { return chain(&Parser::parse_pow, {"*", "/", "//", "%"}, false); }
  ExprPtr parse_pow() { return chain(&Parser::parse_filtered_unary, {"**"}, false); }
  ExprPtr parse_filtered_unary() { return parse_unary(true); }

  ExprPtr parse_unary(bool with_filter) {
    Depth depth(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& op = next();
      e = make(Expr::Kind::kUnary, op.line);
      e->name = op.text;
      e->a = parse_unary(false);
    } else {
      e = parse_postfix(parse_primary());
    }
    return with_filter ? parse_filters(std::move(e)) : std::move(e);
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    switch (t.kind) {
      case Token::Kind::kName: {
        ++i_;
        if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
          auto e = make(Expr::Kind::kLiteral, t.line);
          e->value = Value(t.text == "true" || t.text == "True");
          return e;
        }
        if (t.text == "none" || t.text == "None") {
          auto e = make(Expr::Kind::kLiteral, t.line);
          e->value = Value::none();
          return e;
        }
        auto e = make(Expr::Kind::kName, t.line);
        e->name = t.text;
        return e;
      }
      case Token::Kind::kString: {
        std::string s;
        while (peek().kind == Token::Kind::kString) s += next().text;  // adjacent literals join
        auto e = make(Expr::Kind::kLiteral, t.line);
        e->value = Value(std::move(s));
        return e;
      }
      case Token::Kind::kInt: {
        ++i_;
        auto e = make(Expr::Kind::kLiteral, t.line);
        e->value = Value(t.i);
        return e;
      }
      case Token::Kind::kFloat: {
        ++i_;
        auto e = make(Expr::Kind::kLiteral, t.line);
        e->value = Value(t.f);
        return e;
      }
      case Token::Kind::kOp:
        if (t.text == "(") {
          ++i_;
          if (is_op(")")) {
            ++i_;
            return make(Expr::Kind::kTuple, t.line);
          }
          ExprPtr first = parse_expression();
          if (is_op(")")) {
            ++i_;
            return first;
          }
          auto tuple = make(Expr::Kind::kTuple, t.line);
          tuple->items.push_back(std::move(first));
          while (is_op(",")) {
            ++i_;
            if (is_op(")")) break;
            tuple->items.push_back(parse_expression());
          }
          expect_op(")");
          return tuple;
        }
        if (t.text == "[") {
          ++i_;
          auto list = make(Expr::Kind::kList, t.line);
          while (!is_op("]")) {
            list->items.push_back(parse_expression());
            if (!is_op("]")) expect_op(",");
          }
          ++i_;
          return list;
        }
        if (t.text == "{") {
          ++i_;
          auto dict = make(Expr::Kind::kDict, t.line);
          while (!is_op("}")) {
            dict->keys.push_back(parse_expression());
            expect_op(":");
            dict->items.push_back(parse_expression());
            if (!is_op("}")) expect_op(",");
          }
          ++i_;
          return dict;
        }
        break;
      default: break;
    }
    fail_at(t.line, "unexpected '" + describe(t) + "'");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    for (;;) {
      const int line = peek().line;
      if (is_op(".")) {
        ++i_;
        auto attr = make(Expr::Kind::kAttr, line);
        attr->a = std::move(e);
        if (peek().kind == Token::Kind::kInt) {  // foo.0 is foo[0]
          attr->kind = Expr::Kind::kItem;
          auto index = make(Expr::Kind::kLiteral, line);
          index->value = Value(next().i);
          attr->b = std::move(index);
        } else {
          attr->name = expect_name();
        }
        e = std::move(attr);
      } else if (is_op("[")) {
        ++i_;
        e = parse_subscript(std::move(e), line);
      } else if (is_op("(")) {
        auto call = make(Expr::Kind::kCall, line);
        call->a = std::move(e);
        call->args = parse_call_args();
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target, int line) {
    ExprPtr parts[3];
    int colons = 0;
    for (;;) {
      if (is_op("]")) break;
      if (is_op(":")) {
        ++i_;
        if (++colons > 2) fail_at(line, "a slice with more than 3 parts");
        continue;
      }
      if (parts[colons]) fail_at(line, "a malformed subscript");
      parts[colons] = parse_expression();
    }
    ++i_;
    if (colons == 0) {
      if (!parts[0]) fail_at(line, "an empty subscript");
      auto item = make(Expr::Kind::kItem, line);
      item->a = std::move(target);
      item->b = std::move(parts[0]);
      return item;
    }
    auto slice = make(Expr::Kind::kSlice, line);
    slice->a = std::move(target);
    slice->b = std::move(parts[0]);
    slice->c = std::move(parts[1]);
    slice->d = std::move(parts[2]);
    return slice;
  }

  CallArgs parse_call_args() {
    expect_op("(");
    CallArgs args;
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) fail_at(peek().line, "*args and **kwargs are not supported");
      if (peek().kind == Token::Kind::kName && is_op("=", 1)) {
        std::string name = next().text;
        ++i_;
        args.keyword.emplace_back(std::move(name), parse_expression());
      } else {
        if (!args.keyword.empty()) fail_at(peek().line, "a positional argument after a keyword argument");
        args.positional.push_back(parse_expression());
      }
      if (!is_op(")")) expect_op(",");
    }
    ++i_;
    return args;
  }

  ExprPtr parse_filters(ExprPtr e) {
    for (;;) {
      const int line = peek().line;
      if (is_op("|")) {
        ++i_;
        auto f = make(Expr::Kind::kFilter, line);
        f->name = expect_name();
        while (is_op(".")) {  // dotted filter names are not Jinja's built-ins
          ++i_;
          f->name += "." + expect_name();
        }
        if (!known_filters().count(f->name)) fail_at(line, "no filter named '" + f->name + "'");
        f->a = std::move(e);
        if (is_op("(")) f->args = parse_call_args();
        e = std::move(f);
      } else if (is_name("is")) {
        ++i_;
        auto test = make(Expr::Kind::kTest, line);
        if (is_name("not")) {
          ++i_;
          test->negated = true;
        }
        if (is_op("==")) {
          ++i_;
          test->name = "==";
        } else {
          test->name = expect_name();
        }
        if (!known_tests().count(test->name)) fail_at(line, "no test named '" + test->name + "'");
        test->a = std::move(e);
        if (is_op("(")) {
          test->args = parse_call_args();
        } else if (takes_bare_argument()) {
          test->args.positional.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(test);
      } else if (is_op("(")) {
        auto call = make(Expr::Kind::kCall, line);
        call->a = std::move(e);
        call->args = parse_call_args();
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  // `x is divisibleby 3`, `x is sameas false`: a test's one argument without parentheses.
  bool takes_bare_argument() const {
    const Token& t = peek();
    if (t.kind == Token::Kind::kString || t.kind == Token::Kind::kInt || t.kind == Token::Kind::kFloat) return true;
    if (t.kind == Token::Kind::kOp) return t.text == "[" || t.text == "{";
    if (t.kind != Token::Kind::kName) return false;
    static const std::set<std::string> stops = {"and", "or", "else", "is", "if", "in", "not"};
    return !stops.count(t.text);
  }

  std::vector<Token> t_;
  std::size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

Body parse_template(const std::string& source) {
  Lexer lexer(source);
  Parser parser(lexer.run());
  return parser.parse();
}

}  // namespace sepal::api::jinja

#include "actors/api/json_prefix.h"

namespace sepal::api {

namespace {

bool space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool hex(unsigned char c) { return digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

std::string_view literal_word(char first) {
  return first == 't' ? std::string_view("true") : first == 'f' ? std::string_view("false") : std::string_view("null");
}

}  // namespace

bool JsonPrefix::take_space(unsigned char c) {
  if (!space(c)) return false;
  constexpr std::uint8_t kMaxIndent = 20;
  if (space_ == 0 && (c == ' ' || c == '\n')) {
    space_ = c == ' ' ? 1 : 2;
  } else if (space_ >= 2 && (c == ' ' || c == '\t') && space_ < 2 + kMaxIndent) {
    ++space_;
  } else {
    return false;
  }
  spaced_ = true;
  return true;
}

bool JsonPrefix::push(bool object) {
  if (depth_ == kMaxDepth) return false;
  if (object) objects_ |= std::uint64_t{1} << depth_;
  else objects_ &= ~(std::uint64_t{1} << depth_);
  ++depth_;
  state_ = object ? State::kFirstKey : State::kFirstValue;
  return true;
}

bool JsonPrefix::close(bool object) {
  if (depth_ == 0 || in_object() != object) return false;
  --depth_;
  state_ = depth_ == 0 ? State::kDone : State::kAfterValue;
  return true;
}

bool JsonPrefix::begin_value(unsigned char c) {
  switch (c) {
    case '{':
      return push(true);
    case '[':
      return push(false);
    case '"':
      key_ = false;
      state_ = State::kString;
      return true;
    case '-':
      state_ = State::kMinus;
      return true;
    case 't':
    case 'f':
    case 'n':
      literal_ = static_cast<char>(c);
      count_ = 1;
      state_ = State::kLiteral;
      return true;
    default:
      break;
  }
  if (!digit(c)) return false;
  state_ = c == '0' ? State::kZero : State::kInteger;
  return true;
}

bool JsonPrefix::after_value(unsigned char c) {
  state_ = State::kAfterValue;
  if (space(c)) return take_space(c);
  if (c == ',') {
    state_ = in_object() ? State::kKey : State::kValue;
    return true;
  }
  if (c == '}' || c == ']') return close(c == '}');
  return false;
}

bool JsonPrefix::feed(unsigned char c) {
  const JsonPrefix before = *this;
  spaced_ = false;
  bool ok = false;
  switch (state_) {
    case State::kStart:
      ok = take_space(c) || (c == '{' && push(true));
      break;
    case State::kFirstValue:
      if (c == ']') {
        ok = close(false);
        break;
      }
      [[fallthrough]];
    case State::kValue:
      ok = take_space(c) || begin_value(c);
      break;
    case State::kFirstKey:
      if (c == '}') {
        ok = close(true);
        break;
      }
      [[fallthrough]];
    case State::kKey:
      ok = take_space(c);
      if (c == '"') {
        key_ = true;
        state_ = State::kString;
        ok = true;
      }
      break;
    case State::kColon:
      ok = take_space(c);
      if (c == ':') {
        state_ = State::kValue;
        ok = true;
      }
      break;
    case State::kAfterValue:
      ok = after_value(c);
      break;
    case State::kString:
      ok = c >= 0x20;
      if (c == '"') {
        state_ = key_ ? State::kColon : State::kAfterValue;
        key_ = false;
      } else if (c == '\\') {
        state_ = State::kEscape;
      }
      break;
    case State::kEscape:
      ok = c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't' || c == 'u';
      if (c == 'u') {
        count_ = 0;
        state_ = State::kUnicode;
      } else {
        state_ = State::kString;
      }
      break;
    case State::kUnicode:
      ok = hex(c);
      if (++count_ == 4) state_ = State::kString;
      break;
    case State::kMinus:
      ok = digit(c);
      state_ = c == '0' ? State::kZero : State::kInteger;
      break;
    case State::kZero:
    case State::kInteger:
      if (digit(c) && state_ == State::kInteger) {
        ok = true;
      } else if (c == '.') {
        ok = true;
        state_ = State::kDot;
      } else if (c == 'e' || c == 'E') {
        ok = true;
        state_ = State::kExponent;
      } else {
        ok = after_value(c);
      }
      break;
    case State::kDot:
      ok = digit(c);
      state_ = State::kFraction;
      break;
    case State::kFraction:
      if (digit(c)) {
        ok = true;
      } else if (c == 'e' || c == 'E') {
        ok = true;
        state_ = State::kExponent;
      } else {
        ok = after_value(c);
      }
      break;
    case State::kExponent:
      ok = digit(c) || c == '+' || c == '-';
      state_ = digit(c) ? State::kExponentDigits : State::kExponentSign;
      break;
    case State::kExponentSign:
      ok = digit(c);
      state_ = State::kExponentDigits;
      break;
    case State::kExponentDigits:
      ok = digit(c) || after_value(c);
      if (digit(c)) state_ = State::kExponentDigits;
      break;
    case State::kLiteral: {
      const std::string_view word = literal_word(literal_);
      ok = static_cast<char>(c) == word[count_];
      if (++count_ == word.size()) state_ = State::kAfterValue;
      break;
    }
    case State::kDone:
      break;
  }
  if (!ok) *this = before;
  else if (!spaced_) space_ = 0;
  return ok;
}

bool JsonPrefix::feed(std::string_view text) {
  for (const char c : text) {
    if (!feed(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace sepal::api

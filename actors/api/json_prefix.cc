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

// A byte of a string's text (not '"' or '\\'): UTF-8, no control characters.
bool JsonPrefix::string_byte(unsigned char c) {
  if (utf8_left_ > 0) {
    if (c < utf8_low_ || c > utf8_high_) return false;
    --utf8_left_;
    utf8_low_ = 0x80;
    utf8_high_ = 0xbf;
    return true;
  }
  if (high_surrogate_) return false;  // "\uD83D" must go on with "\uDE00"
  if (c < 0x20) return false;
  if (c < 0x80) return true;
  if (c >= 0xc2 && c <= 0xdf) {
    utf8_left_ = 1;
  } else if (c >= 0xe0 && c <= 0xef) {
    utf8_left_ = 2;
    if (c == 0xe0) utf8_low_ = 0xa0;
    if (c == 0xed) utf8_high_ = 0x9f;  // no surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    utf8_left_ = 3;
    if (c == 0xf0) utf8_low_ = 0x90;
    if (c == 0xf4) utf8_high_ = 0x8f;
  } else {
    return false;
  }
  return true;
}

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
      if ((c == '"' || c == '\\') && utf8_left_ == 0) {
        ok = c == '\\' || !high_surrogate_;
        state_ = c == '\\' ? State::kEscape : key_ ? State::kColon : State::kAfterValue;
        if (c == '"') key_ = false;
      } else {
        ok = string_byte(c);
      }
      break;
    case State::kEscape:
      ok = c == 'u' || (!high_surrogate_ && (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                                              c == 'r' || c == 't'));
      if (c == 'u') {
        count_ = 0;
        escape_ = 0;
        state_ = State::kUnicode;
      } else {
        state_ = State::kString;
      }
      break;
    case State::kUnicode: {
      ok = hex(c);
      escape_ = static_cast<std::uint16_t>(escape_ * 16 + (digit(c) ? c - '0' : (c | 0x20) - 'a' + 10));
      if (++count_ < 4) break;
      state_ = State::kString;
      const bool high = escape_ >= 0xd800 && escape_ <= 0xdbff, low = escape_ >= 0xdc00 && escape_ <= 0xdfff;
      if (high_surrogate_ != low) ok = false;  // a low one right after a high one, and only there
      high_surrogate_ = high;
      break;
    }
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

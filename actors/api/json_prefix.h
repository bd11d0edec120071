#pragma once
// JSON text read one byte at a time, to know whether what was read so far can still become a
// JSON object (RFC 8259; an object at the top, as OpenAI's JSON mode asks): each byte is either
// accepted or refused, and complete() says the object has closed. The state is a small value
// with no allocation, so it can be copied for every token of a vocabulary to try it.
// Nesting deeper than kMaxDepth is refused. Strings must be UTF-8 (a character may be split
// across tokens) and their \u escapes proper: a high surrogate followed by a low one, and no
// low surrogate alone (as nlohmann's parser and most others require). White space between tokens is held to what llama.cpp's
// JSON grammar allows, one space or a newline and up to 20 spaces or tabs, so that a model cannot
// fill its reply with it.
//
// Thread-safety: a plain value.

#include <cstdint>
#include <string_view>

namespace sepal::api {

class JsonPrefix {
 public:
  static constexpr int kMaxDepth = 64;

  /// Takes one byte; false (and the state unchanged) when no JSON object can continue with it.
  bool feed(unsigned char c);
  /// Takes every byte of `text`; false at the first refused one (the state then holds the bytes
  /// before it).
  bool feed(std::string_view text);
  /// Whether the top-level object has closed (nothing but its end may follow: no byte is accepted).
  bool complete() const { return state_ == State::kDone; }

 private:
  enum class State : std::uint8_t {
    kStart,        // white space, then '{'
    kValue,        // a value is expected (after ':' or ',' in an array)
    kFirstValue,   // after '[': a value or ']'
    kKey,          // after ',' in an object: a key string
    kFirstKey,     // after '{': a key string or '}'
    kColon,        // after a key
    kAfterValue,   // after a value inside a container: ',' or its closing bracket
    kString,       // inside a string (key or value)
    kEscape,       // after '\' in a string
    kUnicode,      // in the 4 hex digits of \u
    kMinus,        // number: after '-'
    kZero,         // number: a leading 0
    kInteger,      // number: integer digits
    kDot,          // number: after '.'
    kFraction,     // number: fraction digits
    kExponent,     // number: after 'e' or 'E'
    kExponentSign, // number: after the exponent's sign
    kExponentDigits,
    kLiteral,      // in true, false or null
    kDone,
  };
  bool push(bool object);
  bool close(bool object);
  bool begin_value(unsigned char c);
  bool take_space(unsigned char c);
  bool after_value(unsigned char c);
  bool in_object() const { return depth_ > 0 && ((objects_ >> (depth_ - 1)) & 1u) != 0; }

  State state_ = State::kStart;
  bool key_ = false;           // the string being read is an object's key
  std::uint8_t depth_ = 0;
  std::uint8_t count_ = 0;     // hex digits read, or the literal's bytes matched
  std::uint8_t utf8_left_ = 0;  // continuation bytes the current character still needs
  std::uint8_t utf8_low_ = 0x80, utf8_high_ = 0xbf;  // the range of the next continuation byte
  std::uint16_t escape_ = 0;    // the \u escape's value so far
  bool high_surrogate_ = false; // a high surrogate was escaped: a low one must follow at once
  bool string_byte(unsigned char c);
  std::uint8_t space_ = 0;     // this run of white space: 0 none, 1 a space, 2 + n a newline and n more
  bool spaced_ = false;        // the byte being fed was white space between tokens
  char literal_ = 0;           // 't', 'f' or 'n'
  std::uint64_t objects_ = 0;  // bit d: the container at depth d + 1 is an object
};

}  // namespace sepal::api

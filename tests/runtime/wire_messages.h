#pragma once
// Message types that exercise every kind of wire field, shared by the wire tests and the fuzzer.

#include <optional>
#include <string>
#include <vector>

#include "runtime/wire.h"

namespace sepal::test {

struct Inner {
  std::int32_t a = 0;
  std::string label;
  SEPAL_FIELDS(a, label)
};

enum class Color : std::uint8_t { kRed = 1, kGreen = 2 };

struct Everything {
  static constexpr std::uint16_t kTypeId = 0x7001;
  std::uint8_t u8 = 0;
  std::int64_t i64 = 0;
  double real = 0;
  bool flag = false;
  Color color = Color::kRed;
  std::string text;
  std::vector<std::uint32_t> numbers;
  std::vector<Inner> inners;
  std::optional<Inner> maybe;
  TensorPayload first;
  TensorPayload second;
  SEPAL_FIELDS(u8, i64, real, flag, color, text, numbers, inners, maybe, first, second)
};

struct Small {
  static constexpr std::uint16_t kTypeId = 0x7002;
  std::uint64_t sequence = 0;
  SEPAL_FIELDS(sequence)
};

}  // namespace sepal::test

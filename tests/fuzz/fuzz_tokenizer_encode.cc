// Fuzz target: any bytes as text for a fixed tokenizer (tests/fuzz/data/tokenizer.json:
// Lowercase and Replace normalizers, a GPT-2 style regex split, byte fallback). Encoding must
// give in-range ids or throw sepal::Error (text that is not UTF-8, a regex over its match
// limit); decoding the ids must give back valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/error.h"
#include "model/tokenizer.h"
#include "model/utf8.h"
#include "tests/fuzz/fixed_tokenizer.h"

namespace {

const sepal::Tokenizer& tokenizer() { return sepal::fuzz::fixed_tokenizer(); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto ids = tokenizer().encode(text);
    for (auto id : ids) {
      if (id < 0 || id >= tokenizer().vocab_size()) __builtin_trap();
    }
    if (sepal::first_invalid_utf8(tokenizer().decode(ids))) __builtin_trap();
  } catch (const sepal::Error&) {
  }
  return 0;
}

// Fuzz target: tokenizer.json text. Loading must succeed or throw sepal::Error; a tokenizer that
// loads must encode and decode a few texts without crashing, and its ids must be in range.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/error.h"
#include "model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::unique_ptr<sepal::Tokenizer> tokenizer;
  try {
    tokenizer = sepal::parse_hf_tokenizer(std::string(reinterpret_cast<const char*>(data), size), "fuzz/tokenizer.json");
  } catch (const sepal::Error&) {
    return 0;
  }
  for (const char* text : {"Hello World", " once upon a time, 123!", "ÀÉÎ ΟΔΟΣ İstanbul 日本語 🙂", ""}) {
    try {
      const auto ids = tokenizer->encode(text);
      for (auto id : ids) {
        if (id < 0 || id >= tokenizer->vocab_size()) __builtin_trap();
      }
      (void)tokenizer->decode(ids);
    } catch (const sepal::Error&) {
    }
  }
  return 0;
}

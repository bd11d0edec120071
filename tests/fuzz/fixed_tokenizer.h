#pragma once
// The fixed tokenizer of the fuzz targets that need one (tests/fuzz/data/tokenizer.json:
// Lowercase and Replace normalizers, a GPT-2 style regex split, byte fallback), loaded once.

#include <fstream>
#include <sstream>

#include "model/tokenizer.h"

namespace sepal::fuzz {

inline const Tokenizer& fixed_tokenizer() {
  static const auto loaded = [] {
    std::ifstream in(SEPAL_FUZZ_DATA "/tokenizer.json");
    std::stringstream text;
    text << in.rdbuf();
    return parse_hf_tokenizer(text.str(), SEPAL_FUZZ_DATA "/tokenizer.json");
  }();
  return *loaded;
}

}  // namespace sepal::fuzz

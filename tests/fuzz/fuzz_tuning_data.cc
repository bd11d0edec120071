// Fuzz target: a tuning or scoring data file (model/tuning_data.h: JSON lines of "text" or
// "prompt" and "completion", or plain text in documents) from any bytes, tokenized by a fixed
// tokenizer (tests/fuzz/data/tokenizer.json). Reading must give examples of ids in the
// vocabulary, at most max_length each, with a scored flag per id and at least one scored, or
// throw sepal::Error; any other exception is a finding. SEPAL_FUZZ_VERBOSE=1 prints what became of
// each input (to check seeds).
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "kernels/error.h"
#include "model/model_config.h"
#include "model/tokenizer.h"
#include "model/tuning_data.h"
#include "tests/fuzz/fixed_tokenizer.h"

namespace {

const sepal::Tokenizer& tokenizer() { return sepal::fuzz::fixed_tokenizer(); }

const sepal::ModelConfig& config() {
  static const sepal::ModelConfig c = [] {
    return sepal::parse_model_config(
        R"({"architectures":["LlamaForCausalLM"],"hidden_size":16,"intermediate_size":24,"num_hidden_layers":1,
            "num_attention_heads":2,"num_key_value_heads":1,"vocab_size":)" +
            std::to_string(tokenizer().vocab_size()) + R"(,"max_position_embeddings":64,"bos_token_id":1})",
        "fuzz/config.json");
  }();
  return c;
}

const std::filesystem::path& file() {
  static const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("sepal-fuzz-data-" + std::to_string(getpid()) + ".jsonl");
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  {
    std::ofstream out(file(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  constexpr std::int64_t kMaxLength = 48;
  try {
    const auto examples = sepal::read_examples(file(), tokenizer(), config(), kMaxLength);
    if (examples.empty()) __builtin_trap();
    for (const sepal::Example& e : examples) {
      if (e.ids.empty() || e.ids.size() != e.scored.size() || static_cast<std::int64_t>(e.ids.size()) > kMaxLength) __builtin_trap();
      if (e.scored[0] || e.scored_count() == 0) __builtin_trap();
      for (auto id : e.ids) {
        if (id < 0 || id >= config().vocab_size) __builtin_trap();
      }
    }
    if (std::getenv("SEPAL_FUZZ_VERBOSE")) std::fprintf(stderr, "accepted\n");
  } catch (const sepal::Error& e) {
    if (std::getenv("SEPAL_FUZZ_VERBOSE")) std::fprintf(stderr, "refused: %s\n", e.what());  // to check seeds
  }
  return 0;
}

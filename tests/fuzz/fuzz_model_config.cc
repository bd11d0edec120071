// Fuzz target: config.json text. Parsing must give a config whose sizes are consistent, or throw
// sepal::Error; any other exception (a JSON type error leaking out) is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/error.h"
#include "model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto c = sepal::parse_model_config(std::string(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
    if (c.hidden_size <= 0 || c.num_layers <= 0 || c.vocab_size <= 0) __builtin_trap();
    if (c.bos_token_id >= c.vocab_size) __builtin_trap();
    for (auto id : c.eos_token_ids) {
      if (id < 0 || id >= c.vocab_size) __builtin_trap();
    }
  } catch (const sepal::Error&) {
  }
  return 0;
}

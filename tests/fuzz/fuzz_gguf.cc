// Fuzz target: a GGUF file from any bytes. Parsing, the model configuration, the tensors under
// Hugging Face names (dequantized where stored quantized) and the tokenizer must each succeed or
// throw sepal::Error with a message; every tensor accepted must lie inside the file.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/error.h"
#include "model/gguf.h"
#include "model/gguf_model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(data[i]);
  try {
    const auto file = sepal::GgufFile::parse(sepal::MappedFile::in_memory(std::move(bytes), "fuzz.gguf"));
    volatile std::uint8_t sink = 0;
    for (const auto& [name, t] : file.tensors()) {
      for (std::size_t i = 0; i < t.bytes; ++i) sink = sink ^ static_cast<std::uint8_t>(t.data[i]);
    }
    try {
      (void)sepal::gguf_model_config(file);
      const sepal::Checkpoint checkpoint = sepal::gguf_checkpoint(file);
      for (const auto& [name, listed] : checkpoint.tensors()) (void)checkpoint.get(name).data;
    } catch (const sepal::Error&) {
    }
    try {
      const auto tokenizer = sepal::gguf_tokenizer(file);
      (void)tokenizer->encode("Once upon a time, \xF0\x9F\x98\x80 \t 12");
    } catch (const sepal::Error&) {
    }
  } catch (const sepal::Error&) {
  }
  return 0;
}

// Fuzz target: a PEFT LoRA folder (model/peft_adapter.h) from any bytes, for one of five small
// models (a Llama, a Mixtral whose experts take adapters, BLOOM's fused query_key_value, Phi-3's
// fused qkv_proj and gate_up_proj, a Qwen2-MoE with a shared expert and a dense block). Input: a byte choosing the model, 4 bytes (little-endian) of
// adapter_config.json's length, that text, then adapter_model.safetensors. Reading must give
// adapters that fit the model (every value finite) or throw sepal::Error; any other exception is a
// finding. SEPAL_FUZZ_VERBOSE=1 prints what became of each input (to check seeds).
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "kernels/error.h"
#include "model/block_adapters.h"
#include "model/model_config.h"
#include "model/peft_adapter.h"

namespace {

const sepal::ModelConfig& model(std::uint8_t which) {
  static const sepal::ModelConfig models[] = {
      sepal::parse_model_config(R"({"architectures":["LlamaForCausalLM"],"hidden_size":16,"intermediate_size":24,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":300,
        "max_position_embeddings":64})",
                                "llama/config.json"),
      sepal::parse_model_config(R"({"architectures":["MixtralForCausalLM"],"hidden_size":16,"intermediate_size":24,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":300,
        "max_position_embeddings":64,"num_local_experts":3,"num_experts_per_tok":2})",
                                "mixtral/config.json"),
      sepal::parse_model_config(R"({"architectures":["BloomForCausalLM"],"hidden_size":16,"n_layer":2,"n_head":2,
        "vocab_size":300})",
                                "bloom/config.json"),
      sepal::parse_model_config(R"({"architectures":["Phi3ForCausalLM"],"hidden_size":16,"intermediate_size":24,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":300,
        "max_position_embeddings":64})",
                                "phi3/config.json"),
      sepal::parse_model_config(R"({"architectures":["Qwen2MoeForCausalLM"],"hidden_size":16,"intermediate_size":24,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":300,
        "max_position_embeddings":64,"num_experts":3,"num_experts_per_tok":2,"moe_intermediate_size":12,
        "shared_expert_intermediate_size":20,"mlp_only_layers":[1]})",
                                "qwen2moe/config.json"),
  };
  return models[which % 5];
}

// A folder of this process's own, rewritten for every input.
const std::filesystem::path& folder() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("sepal-fuzz-peft-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

void write(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return 0;
  const sepal::ModelConfig& config = model(data[0]);
  const std::size_t length = data[1] | (data[2] << 8) | (data[3] << 16) | (static_cast<std::size_t>(data[4]) << 24);
  const std::size_t json_size = std::min(length, size - 5);
  write(folder() / "adapter_config.json", data + 5, json_size);
  write(folder() / "adapter_model.safetensors", data + 5 + json_size, size - 5 - json_size);
  try {
    const sepal::PromptParameters p = sepal::read_peft_adapter(folder(), config);
    sepal::validate(p.adapter_shape, config);
    if (p.layers != config.num_layers) __builtin_trap();
    if (static_cast<std::int64_t>(p.adapter.size()) != p.layers * p.adapter_shape.values_per_block(config)) __builtin_trap();
    for (float v : p.adapter) {
      if (!std::isfinite(v)) __builtin_trap();
    }
    if (std::getenv("SEPAL_FUZZ_VERBOSE")) std::fprintf(stderr, "accepted\n");
  } catch (const sepal::Error& e) {
    if (std::getenv("SEPAL_FUZZ_VERBOSE")) std::fprintf(stderr, "refused: %s\n", e.what());  // to check seeds
  }
  return 0;
}

#include "tools/client_model.h"

#include <unistd.h>

#include <cstdio>

#include "kernels/error.h"
#include "model/safetensors.h"

namespace sepal::tools {

ClientModel load_client_model(const std::string& dir, const ModelConfig& config, const WeightLoading& loading,
                              bool with_blocks, const Device& device) {
  std::shared_ptr<Backend> backend;
  if (with_blocks && !device.is_cpu()) backend = open_backend(device);
  // A tokenizer may hold more ids than the model embeds (Gemma 3's <image_soft_token> past
  // Gemma-3-1B's vocabulary): prompts holding one are refused (encode_for_model).
  auto tokenizer = load_tokenizer(dir);
  if (isatty(STDERR_FILENO)) {
    std::fprintf(stderr, "sepal: loading %s (%lld blocks, %s)...\r", dir.c_str(),
                 static_cast<long long>(config.num_layers), std::string(dtype_name(loading.dtype)).c_str());
  }
  const Checkpoint checkpoint = Checkpoint::open(dir);
  ClientModel model{std::move(tokenizer), ModelEnds::load(checkpoint, config, loading), nullptr};
  if (with_blocks) {
    model.blocks = std::make_unique<BlockStack>(BlockStack::load(checkpoint, config, 0, config.num_layers, loading));
  }
  if (backend) {
    model.blocks->place_on(backend);
    const BackendInfo info = backend->info();
    std::fprintf(stderr, "sepal: blocks on %s (%s): %.1f MB of weights, %.0f of %.0f MiB free\n",
                 device_name(info.device).c_str(), info.name.c_str(), model.blocks->weight_bytes() / 1e6,
                 info.free_bytes / 1048576.0, info.memory_bytes / 1048576.0);
  }
  return model;
}

}  // namespace sepal::tools

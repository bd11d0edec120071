#include "tools/client_model.h"

#include <unistd.h>

#include <cstdio>

#include "kernels/error.h"
#include "model/safetensors.h"

namespace sepal::tools {

ClientModel load_client_model(const std::string& dir, const ModelConfig& config, const WeightLoading& loading,
                              bool with_blocks) {
  auto tokenizer = load_tokenizer(dir);
  if (tokenizer->vocab_size() > config.vocab_size) {
    fail("the tokenizer has ", tokenizer->vocab_size(), " tokens but the model only ", config.vocab_size);
  }
  if (isatty(STDERR_FILENO)) {
    std::fprintf(stderr, "sepal: loading %s (%lld blocks, %s)...\r", dir.c_str(),
                 static_cast<long long>(config.num_layers), std::string(dtype_name(loading.dtype)).c_str());
  }
  const Checkpoint checkpoint = Checkpoint::open(dir);
  ClientModel model{std::move(tokenizer), ModelEnds::load(checkpoint, config, loading), nullptr};
  if (with_blocks) {
    model.blocks = std::make_unique<BlockStack>(BlockStack::load(checkpoint, config, 0, config.num_layers, loading));
  }
  return model;
}

}  // namespace sepal::tools

#pragma once
// The client's own part of a model, as generate and perplexity load it: the tokenizer, the
// embeddings and LM head, and the blocks too when no swarm serves them.

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/device.h"
#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace sepal::tools {

struct ClientModel {
  std::unique_ptr<Tokenizer> tokenizer;
  ModelEnds ends;
  std::unique_ptr<BlockStack> blocks;  ///< null when a swarm serves them; on --device

  /// Bytes of weights held in this process (and its device).
  std::int64_t weight_bytes() const { return ends.weight_bytes() + (blocks ? blocks->weight_bytes() : 0); }
};

/// Loads it from `dir`, the blocks on `device` when with_blocks (the device is opened first, so
/// that a missing GPU is said before anything loads); throws sepal::Error naming the problem (a
/// missing file, a tokenizer with more tokens than the model's vocabulary, no such GPU, ...).
ClientModel load_client_model(const std::string& dir, const ModelConfig& config, const WeightLoading& loading,
                              bool with_blocks, const Device& device = Device{});

}  // namespace sepal::tools

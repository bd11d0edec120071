#pragma once
// The client's own part of a model, as generate and perplexity load it: the tokenizer, the
// embeddings and LM head, and the blocks too when no swarm serves them.

#include <cstdint>
#include <memory>
#include <string>

#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace sepal::tools {

struct ClientModel {
  std::unique_ptr<Tokenizer> tokenizer;
  ModelEnds ends;
  std::unique_ptr<BlockStack> blocks;  ///< null when a swarm serves them

  /// Bytes of weights held in this process.
  std::int64_t weight_bytes() const { return ends.weight_bytes() + (blocks ? blocks->weight_bytes() : 0); }
};

/// Loads it from `dir`; throws sepal::Error naming the problem (a missing file, a tokenizer with
/// more tokens than the model's vocabulary, ...).
ClientModel load_client_model(const std::string& dir, const ModelConfig& config, const WeightLoading& loading,
                              bool with_blocks);

}  // namespace sepal::tools

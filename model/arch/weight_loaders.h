#pragma once
// Each architecture's weight loader (model/arch/<name>_weights.cc): its tensor names and
// layouts turned into BlockWeights, EmbeddingWeights and HeadWeights. model/weights.h's
// load_*_weights pick one by ModelConfig::family; the shapes are checked against the config.

#include "model/weights.h"

namespace sepal {

BlockWeights load_llama_block_weights(const Checkpoint& checkpoint, const ModelConfig& config, std::int64_t layer,
                                      const WeightLoading& loading);
EmbeddingWeights load_llama_embedding(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading);
HeadWeights load_llama_head(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading,
                            const EmbeddingWeights* embedding);

BlockWeights load_bloom_block_weights(const Checkpoint& checkpoint, const ModelConfig& config, std::int64_t layer,
                                      const WeightLoading& loading);
EmbeddingWeights load_bloom_embedding(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading);
HeadWeights load_bloom_head(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading,
                            const EmbeddingWeights* embedding);

}  // namespace sepal

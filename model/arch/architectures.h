#pragma once
// What each architecture folder (model/arch/<name>/) provides: its weight loader (weights.cc:
// tensor names and layouts turned into BlockWeights, EmbeddingWeights and HeadWeights, the
// shapes checked against the config), its block forward for inference (block.cc) and its
// training pass over packed sequences, forward and input-gradient backward (training.cc).
// model/weights.cc, block_stack.cc and block_training.cc pick one by ModelConfig::family.
//
// Its block forward on a device (device_block.cc: the same block in kernels/backend.h's ops) is
// picked by model/device_blocks.cc, and its training pass on a device (device_training.cc, the
// same for training.cc) by model/device_training.cc.
//
// Adding an architecture: a folder with these four files, its family in model_config.h, and a
// case in the four dispatchers.

#include "model/arch/block_parts.h"
#include "model/arch/training_parts.h"
#include "model/weights.h"

namespace sepal {

struct DeviceBlockCall;     // model/arch/device_parts.h
struct DeviceTrainingCall;  // model/arch/device_training_parts.h

// ---- Llama family (Llama, Qwen2's q/k/v biases, Mistral's sliding window): model/arch/llama/ ----
BlockWeights load_llama_block_weights(const Checkpoint& checkpoint, const ModelConfig& config, std::int64_t layer,
                                      const WeightLoading& loading);
EmbeddingWeights load_llama_embedding(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading);
HeadWeights load_llama_head(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading,
                            const EmbeddingWeights* embedding);
/// A projection's Hugging Face module: "model.layers.L.self_attn.q_proj", ... (unfused).
ProjectionModule llama_projection_module(const ModelConfig& config, std::int64_t layer, Projection p,
                                         std::int64_t copy = 0);
void llama_block_forward(const BlockCall& call);
void llama_training_forward(const TrainingCall& call, float* hidden);
void llama_training_backward(const TrainingCall& call, float* grad);
void llama_device_block_forward(const DeviceBlockCall& call);
void llama_device_training_forward(const DeviceTrainingCall& call, float* hidden);
void llama_device_training_backward(const DeviceTrainingCall& call, float* grad);

// ---- BLOOM: model/arch/bloom/ ----
BlockWeights load_bloom_block_weights(const Checkpoint& checkpoint, const ModelConfig& config, std::int64_t layer,
                                      const WeightLoading& loading);
EmbeddingWeights load_bloom_embedding(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading);
HeadWeights load_bloom_head(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading,
                            const EmbeddingWeights* embedding);
/// A projection's module in BloomForCausalLM: q, k and v are rows of the fused
/// "transformer.h.L.self_attention.query_key_value"; o, up and down are "...self_attention.dense",
/// "...mlp.dense_h_to_4h" and "...mlp.dense_4h_to_h".
ProjectionModule bloom_projection_module(const ModelConfig& config, std::int64_t layer, Projection p);
void bloom_block_forward(const BlockCall& call);
void bloom_training_forward(const TrainingCall& call, float* hidden);
void bloom_training_backward(const TrainingCall& call, float* grad);
void bloom_device_block_forward(const DeviceBlockCall& call);
void bloom_device_training_forward(const DeviceTrainingCall& call, float* hidden);
void bloom_device_training_backward(const DeviceTrainingCall& call, float* grad);

}  // namespace sepal

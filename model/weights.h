#pragma once
// Weights of a Llama-family model held in memory, loaded block by block from a Checkpoint.
// Only the tensors asked for are read from the file mapping. By default each is copied (and
// converted, if its type differs) into memory backed by huge pages, and the file pages it came
// from are released: decode streams all weights once per token, and 4 KiB pages cost 5 to 15% of
// that in TLB misses (bench/decode_bench). In-place loading uses the mapping itself when the
// stored type matches: faster to load and shared between processes through the page cache.
//
// Thread-safety: loaded weights are immutable; any thread may read them.

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quantize.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace sepal {

/// How loaded weights are held.
struct WeightLoading {
  WeightLoading(DType dtype = DType::kF32, bool in_place = false) : dtype(dtype), in_place(in_place) {}
  DType dtype;    ///< type in memory: f32, bf16, or int8 (LLM.int8(), quantized while loading)
  bool in_place;  ///< use the file mapping directly where the stored type matches (not int8)
  float outlier_threshold = kDefaultOutlierThreshold;  ///< int8 only: see WeightView
  DType kv_dtype = DType::kF32;  ///< the sessions' key/value caches: f32, or bf16 (half the memory; CPU only)
};

/// What decides a host's output bits besides the model and the input: the weights' type (for
/// int8, its outlier threshold), the caches' type, and `kernels`, where the blocks run ("cpu
/// avx512vnni", "cuda (NVIDIA H200)"). Two hosts that say the same give the same bits for the
/// same steps, so a session replayed from one to the other keeps its text; hosts announce it.
std::string describe_numerics(const WeightLoading& loading, std::string_view kernels);

/// A weight matrix and whatever keeps its bytes alive.
struct HeldMatrix {
  WeightView view;
  std::shared_ptr<const void> storage;
};

/// A vector of f32 weights (norm scales) and whatever keeps it alive.
struct HeldVector {
  const float* data = nullptr;
  std::int64_t size = 0;
  std::shared_ptr<const void> storage;
};

/// Weights of one decoder block (attention + MLP with their norms). Llama: no biases, a gated
/// MLP. BLOOM: LayerNorm biases, the fused query_key_value split into q, k and v (with their
/// biases), dense as o_proj, dense_h_to_4h as up_proj, dense_4h_to_h as down_proj, no gate.
struct BlockWeights {
  std::int64_t layer = 0;
  HeldVector input_norm;
  HeldVector post_attention_norm;
  HeldMatrix q_proj, k_proj, v_proj, o_proj;
  HeldMatrix gate_proj, up_proj, down_proj;
  HeldVector input_norm_bias, post_attention_norm_bias;          ///< BLOOM
  HeldVector q_bias, k_bias, v_bias, o_bias, up_bias, down_bias;  ///< BLOOM; q, k, v also Qwen2; q, k, v, o GPT-OSS
  HeldVector sinks;  ///< GPT-OSS: each head's sink logit [heads]
  HeldVector q_norm, k_norm;  ///< Qwen3: RMSNorm weights [head_dim] applied to each head of q and k
  /// Gemma 2: RMSNorms of the attention's and the MLP's outputs (its post_attention_layernorm and
  /// post_feedforward_layernorm; its pre_feedforward_layernorm is post_attention_norm above, the
  /// norm before the MLP).
  HeldVector attention_out_norm, mlp_out_norm;
  /// A sparse block's MLP (ModelConfig::sparse_block): the router [num_experts, hidden] and each
  /// expert's gate, up and down; gate_proj, up_proj and down_proj above are then empty.
  HeldMatrix router;
  HeldVector router_bias;  ///< GPT-OSS [num_experts]
  struct Expert {
    HeldMatrix gate_proj, up_proj, down_proj;
    HeldVector gate_bias, up_bias, down_bias;  ///< GPT-OSS
  };
  std::vector<Expert> experts;
  /// Qwen2-MoE: the shared expert every row takes, and its gate [1, hidden].
  Expert shared_expert;
  HeldMatrix shared_expert_gate;

  /// Bytes of all this block's weights held in memory.
  std::int64_t bytes() const;
};

/// A block's attention layout: the config's, with the block's sinks (GPT-OSS).
inline AttentionDims block_attention_dims(const ModelConfig& config, const BlockWeights& weights) {
  AttentionDims dims = config.attention_dims();
  dims.sinks = weights.sinks.data;
  return dims;
}

/// Token embedding table [vocab, hidden]; BLOOM normalises the embeddings (a LayerNorm).
struct EmbeddingWeights {
  HeldMatrix table;
  HeldVector norm, norm_bias;  ///< BLOOM
};

/// Final norm and LM head [vocab, hidden]; with tied embeddings the head shares the table.
struct HeadWeights {
  HeldVector final_norm;
  HeldVector final_norm_bias;  ///< BLOOM
  HeldMatrix lm_head;
};

/// Loads block `layer`. Throws sepal::Error naming the tensor when it is
/// missing or its shape disagrees with the config.
BlockWeights load_block_weights(const Checkpoint& checkpoint, const ModelConfig& config,
                                std::int64_t layer, const WeightLoading& loading);

/// Loads the embedding table (model.embed_tokens.weight, or lm_head.weight when tied and the
/// table is stored only as the head).
EmbeddingWeights load_embedding_weights(const Checkpoint& checkpoint, const ModelConfig& config,
                                        const WeightLoading& loading);

/// Loads the final norm and the LM head. With tied embeddings and `embedding` given, the head
/// shares the embedding's memory.
HeadWeights load_head_weights(const Checkpoint& checkpoint, const ModelConfig& config,
                              const WeightLoading& loading, const EmbeddingWeights* embedding);

/// Copies row `token` of an embedding table into `out` as f32.
void embedding_row(const EmbeddingWeights& embedding, std::int32_t token, float* out);

}  // namespace sepal

#pragma once
// The architecture of a model (Llama family, with or without a mixture of experts, or BLOOM), read from a Hugging Face config.json.
//
// Thread-safety: an immutable value.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/rope.h"

namespace sepal {

/// The block architectures sepal runs.
enum class ModelFamily {
  kLlama,  ///< RMSNorm, RoPE, gated MLP, grouped-query attention (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 1 to 3,
           ///< Granite, OLMo 2 and 3, SmolLM3, GLM and GLM-4, Cohere 1 and 2 with their LayerNorms, and the mixtures of
           ///< experts Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, Granite-MoE and GPT-OSS)
  kBloom,  ///< LayerNorm with biases (also after the embedding), fused QKV, ALiBi, GELU MLP, biases
};

/// Hyper-parameters of a decoder. Validated on construction by read_model_config.
struct ModelConfig {
  std::string architecture;  ///< e.g. "LlamaForCausalLM"
  ModelFamily family = ModelFamily::kLlama;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_layers = 0;
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;  ///< Llama's RMSNorm; the LayerNorms' epsilon for kBloom and layer_norms
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  /// Which blocks rotate q and k (SmolLM3's no_rope_layers: every fourth does not); empty: all.
  std::vector<bool> rope_layers;
  /// Dimensions of each head that rotate (the first ones; 0: all of head_dim). Phi-4-mini's
  /// partial_rotary_factor 0.75 rotates 96 of 128.
  std::int64_t rotary_dim = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;        ///< biases on the q, k and v projections (Qwen2)
  bool attention_output_bias = false; ///< and on o_proj (GPT-OSS)
  /// A learned logit per head that joins each softmax as a score with no value (GPT-OSS's sinks;
  /// kernels/attention.h).
  bool attention_sinks = false;
  bool qk_norm = false;               ///< RMSNorm over each head of q and k before RoPE (Qwen3)
  /// The q and k norms span each row's whole projection, every head at once (OLMo 2, OLMoE), not each head.
  bool qk_norm_across_heads = false;
  /// q, k and v stored as one qkv_proj (Phi-3), gate and up as one gate_up_proj (Phi-3, GLM), each
  /// the parts' rows one after the other; split into the usual projections while loading.
  bool fused_qkv = false;
  bool fused_gate_up = false;
  /// The MLP gate's activation: SiLU (SwiGLU), or GELU's tanh approximation (Gemma's GeGLU).
  GateActivation mlp_activation = GateActivation::kSilu;
  /// Every RMSNorm scales by 1 + weight rather than weight (Gemma's folders): the loader holds the
  /// sum. False for GGUF files, which hold the sum already (llama.cpp's converter adds the one).
  bool norm_weight_plus_one = false;
  /// The token embeddings are multiplied by this before the first block (Gemma: √hidden_size,
  /// rounded to f32 as Hugging Face's normalizer is); 1 elsewhere. Soft prompts sit after it.
  float embedding_scale = 1.0f;
  std::int64_t sliding_window = 0;    ///< a query attends to the last this many positions (Mistral, Phi-3); 0: all
  /// Each block's window where blocks differ (Gemma 2: the window on even blocks, 0 on odd ones);
  /// empty: every block has sliding_window.
  std::vector<std::int64_t> layer_windows;
  /// Sliding blocks rotate with this RoPE base and no rope_scaling (Gemma 3's
  /// rope_local_base_freq; OLMo 3's rope_theta); 0: every block as rope_theta and rope_scaling say.
  double local_rope_theta = 0.0;
  /// Attention scores are q·k times this; 0: 1/√head_dim (Gemma 2: 1/√query_pre_attn_scalar).
  float attention_scale = 0.0f;
  /// Gemma 2's soft-capping of attention scores and of the head's logits (cap · tanh(x / cap)); 0: none.
  float attention_softcap = 0.0f;
  float final_logit_softcap = 0.0f;
  /// Granite's multipliers: each block adds its attention's and its MLP's outputs times
  /// residual_scale, and the head's logits are divided by logit_divisor (its logits_scaling).
  float residual_scale = 1.0f;
  float logit_divisor = 1.0f;
  /// Gemma 2's sandwich norms: the attention's and the MLP's outputs RMS-normalised too, before
  /// each joins the residual stream.
  bool output_norms = false;
  /// Whether the attention and the MLP take RMS-normalised inputs; OLMo 2 and 3 take the residual
  /// stream as it is, normalising only their outputs (output_norms).
  bool input_norms = true;
  /// Every norm (the blocks' inputs, q and k, the final one) is a LayerNorm with no bias, the row's
  /// mean subtracted before it is scaled (Cohere), instead of an RMSNorm; rms_norm_eps is its epsilon.
  bool layer_norms = false;
  /// The attention and the MLP both read the block's one input norm and their outputs join the
  /// residual stream together (Cohere's parallel block): no post-attention norm.
  bool parallel_block = false;
  /// RoPE turns pairs (2i, 2i + 1) of each head (Cohere, GPT-J) instead of (i, i + rotated/2).
  bool rope_adjacent_pairs = false;
  /// The q and k norms hold their own weights for every head, q_norm [num_heads, head_dim] and
  /// k_norm [num_kv_heads, head_dim] (Cohere's use_qk_norm); else one head's, shared.
  bool qk_norm_per_head_weights = false;
  /// A mixture of experts (Mixtral, Qwen3-MoE): the MLP of a sparse block is num_experts gated
  /// MLPs of moe_intermediate_size, of which a router (a [num_experts, hidden] matrix) picks
  /// experts_per_token for each row: the largest logits, weighted by their softmax probabilities,
  /// which are scaled to sum to one where moe_renormalize (Mixtral; Qwen3-MoE's norm_topk_prob).
  /// 0 experts: every block is dense.
  std::int64_t num_experts = 0;
  std::int64_t experts_per_token = 0;
  std::int64_t moe_intermediate_size = 0;
  bool moe_renormalize = true;
  /// GPT-OSS: biases on the router's logits and on each expert's gate, up and down products.
  bool expert_biases = false;
  /// GPT-OSS's clamp of the experts' gate and up products (GateActivation::kClampedSwiglu); 0: none.
  float swiglu_limit = 0.0f;
  /// A shared expert: a gated MLP of this width every token takes besides its picked ones; 0:
  /// none. Qwen2-MoE's output is scaled by sigmoid(x · shared_expert_gate) (shared_expert_gated),
  /// Granite-MoE-Shared's (shared_mlp) is added as it is.
  std::int64_t shared_expert_intermediate_size = 0;
  bool shared_expert_gated = true;
  /// Blocks with a dense MLP of intermediate_size in a mixture of experts (Qwen3-MoE's
  /// mlp_only_layers, and those decoder_sparse_step skips); empty: every block is sparse.
  std::vector<std::int64_t> dense_layers;
  /// Prepended to every prompt; -1 when none is. A folder's config.json names it, unless its
  /// tokenizer_config.json says "add_bos_token": false (Qwen2's tokenizer adds none).
  std::int32_t bos_token_id = -1;
  std::vector<std::int32_t> eos_token_ids;    ///< generation stops at any of these

  /// Whether the model has sparse blocks, and whether block `layer` is one.
  bool mixture_of_experts() const { return num_experts > 0; }
  bool sparse_block(std::int64_t layer) const {
    if (num_experts == 0) return false;
    for (std::int64_t l : dense_layers) if (l == layer) return false;
    return true;
  }
  /// Whether some block has a dense MLP (of intermediate_size).
  bool any_dense_block() const { return num_experts == 0 || !dense_layers.empty(); }
  /// The widest MLP a block has: intermediate_size, or an expert's where that is wider.
  std::int64_t widest_mlp() const {
    return std::max({intermediate_size, moe_intermediate_size, shared_expert_intermediate_size});
  }
  /// Whether block `layer` rotates its q and k at all (SmolLM3's NoPE blocks do not).
  bool rotates(std::int64_t layer) const {
    return rope_layers.empty() || rope_layers.at(static_cast<std::size_t>(layer));
  }
  /// Dimensions of each head that RoPE rotates.
  std::int64_t rope_dims() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  /// Width of the query projection output (num_heads * head_dim).
  std::int64_t q_size() const { return num_heads * head_dim; }
  /// Width of the key and value projection outputs (num_kv_heads * head_dim).
  std::int64_t kv_size() const { return num_kv_heads * head_dim; }
  /// The sliding window of block `layer` (0: none).
  std::int64_t window_of(std::int64_t layer) const {
    return layer_windows.empty() ? sliding_window : layer_windows.at(static_cast<std::size_t>(layer));
  }
  /// Whether block `layer` rotates with local_rope_theta.
  bool local_rope_of(std::int64_t layer) const { return local_rope_theta > 0.0 && window_of(layer) > 0; }
  /// What block `layer`'s rotation is scaled by: the scaling's attention factor (YaRN, LongRoPE),
  /// or 1 on blocks that rotate without the scaling (local_rope_of).
  double rope_magnitude(std::int64_t layer) const { return local_rope_of(layer) ? 1.0 : rope_scaling.attention_factor; }
  /// The width each q and k norm spans: a head, or the whole projection (qk_norm_across_heads).
  std::int64_t q_norm_width() const { return qk_norm_across_heads ? q_size() : head_dim; }
  std::int64_t k_norm_width() const { return qk_norm_across_heads ? kv_size() : head_dim; }
  /// Whether a session (or sequence) of `positions` positions rotates with LongRoPE's long factors:
  /// it is longer than the original context. Hugging Face takes them for every position of a
  /// sequence that long; sepal decides by the session's length, so that a session's keys do not
  /// depend on how its tokens came (prompt, decode steps, a replay to another host).
  bool long_rope_for(std::int64_t positions) const {
    return !rope_scaling.long_freq_factors.empty() &&
           static_cast<double>(positions) > rope_scaling.original_max_position_embeddings;
  }
  /// Every block's attention layout: heads, score scale and soft-capping.
  AttentionDims attention_dims() const {
    AttentionDims dims{num_heads, num_kv_heads, head_dim};
    dims.scale = attention_scale;
    dims.softcap = attention_softcap;
    return dims;
  }
};

/// Reads and validates `dir`/config.json (with generation_config.json's EOS ids where it names
/// them, and tokenizer_config.json's add_bos_token) (or a GGUF file's metadata: model/gguf_model.h). Throws sepal::Error with one line naming the field on
/// a missing folder or file, invalid JSON, an unsupported architecture or activation, or values
/// that are missing, non-positive or inconsistent.
ModelConfig read_model_config(const std::filesystem::path& dir);

/// Parses config.json text (for tests and tools); `where` names the source in errors.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where);

}  // namespace sepal

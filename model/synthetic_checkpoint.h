#pragma once
// Synthetic Llama checkpoints with random weights, in Hugging Face layout (config.json,
// model.safetensors, tokenizer.json), for benchmarks and shape tests. Random weights say nothing
// about correctness.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/dtype.h"

namespace sepal {

/// Shape and storage of a synthetic checkpoint.
struct SyntheticSpec {
  std::int64_t hidden_size = 256;
  std::int64_t intermediate_size = 688;
  std::int64_t num_layers = 4;
  std::int64_t num_heads = 8;
  std::int64_t num_kv_heads = 4;
  std::int64_t head_dim = 0;  ///< 0: hidden_size / num_heads; otherwise written to config.json
  std::int64_t vocab_size = 512;
  std::int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  /// "LlamaForCausalLM", "Qwen2ForCausalLM" (q, k and v biases are written), "Qwen3ForCausalLM"
  /// (q_norm and k_norm are written),
  /// "MistralForCausalLM" (with `sliding_window`), "Phi3ForCausalLM" (qkv_proj and gate_up_proj
  /// fused; `sliding_window` too), "GemmaForCausalLM" (norms stored less one, random around 1;
  /// GeGLU; head_dim always written), "Gemma2ForCausalLM" (Gemma's, with norms of the attention's
  /// and MLP's outputs and the soft-capping below), "Gemma3ForCausalLM" (Gemma 2's without
  /// soft-capping, with q and k norms stored less one and the RoPE below) or "BloomForCausalLM".
  std::string architecture = "LlamaForCausalLM";
  std::int64_t sliding_window = 0;  ///< Mistral, Phi-3, Gemma 2 (every other block): written to config.json when > 0
  /// Gemma 2: its soft-capping of attention scores and of logits (its own are 50 and 30; random
  /// weights need tighter caps for a test to see them), and query_pre_attn_scalar (0: head_dim).
  double attention_softcap = 50.0, final_logit_softcap = 30.0;
  std::int64_t query_pre_attn_scalar = 0;
  /// Gemma 3: every this-many-th block attends to all positions, the others slide (with a
  /// sliding_window) and rotate with a base of 10000 against rope_theta 1000000 elsewhere; a
  /// linear RoPE factor (0: none) on the global blocks, as its 4B and larger models have.
  std::int64_t sliding_window_pattern = 6;
  double linear_rope_factor = 0;
  /// LongRoPE as Phi-3's long-context variants write it: rope_scaling with head_dim/2 short and
  /// long factors (random, 1 to 4) and original_max_position_embeddings this many positions (0:
  /// none). The context then ends there.
  std::int64_t long_rope_original = 0;
  /// Rotary embeddings on this share of each head's dimensions (Phi-4-mini: 0.75); 1: all. LongRoPE's
  /// factors are then half the rotated dimensions.
  double partial_rotary_factor = 1.0;
  /// "MixtralForCausalLM" (Mistral's blocks with block_sparse_moe: a router and experts w1, w3,
  /// w2 of intermediate_size) and "Qwen3MoeForCausalLM" (Qwen3's with mlp.gate and mlp.experts of
  /// moe_intermediate_size; blocks in mlp_only_layers dense, of intermediate_size): num_experts
  /// experts, experts_per_token picked, renormalised where norm_topk_prob (Mixtral's always are).
  std::int64_t num_experts = 0;
  std::int64_t experts_per_token = 2;
  std::int64_t moe_intermediate_size = 0;
  bool norm_topk_prob = true;
  std::vector<std::int64_t> mlp_only_layers;
  /// "Qwen2MoeForCausalLM" (Qwen3-MoE's layout with Qwen2's q, k and v biases instead of its norms,
  /// and a shared expert of this width with its gate; 0: intermediate_size); also
  /// "GraniteMoeSharedForCausalLM"'s shared_mlp (ungated), written as shared_intermediate_size.
  std::int64_t shared_expert_intermediate_size = 0;
  /// "Olmo2ForCausalLM" (norms of the attention's and the MLP's outputs, none of their inputs, q and
  /// k norms over the whole projection), "Olmo3ForCausalLM" (OLMo 2's with `sliding_window`, 4096
  /// when 0, on 3 of every 4 blocks, listed in layer_types) and "OlmoeForCausalLM" (Llama's norms,
  /// OLMo's q and k norms, num_experts experts of intermediate_size, renormalised where
  /// norm_topk_prob).
  /// "GraniteMoeForCausalLM": Granite's multipliers and num_experts experts of intermediate_size,
  /// stacked as its folders hold them (router.layer, input_linear, output_linear);
  /// "GraniteMoeSharedForCausalLM" adds each block's shared_mlp (input_linear, output_linear).
  /// "SmolLM3ForCausalLM": Llama's blocks, every fourth without RoPE (no_rope_layers written).
  /// "GptOssForCausalLM": biases on q, k, v and o, a sink per head, `sliding_window` (128 when 0)
  /// on every other block from the first (layer_types written), and num_experts experts of
  /// intermediate_size with biases, stacked and transposed as transformers holds them, their
  /// SwiGLU clamped at swiglu_limit (7 as GPT-OSS's; random weights need less to reach it).
  /// Sinks and biases are 1 ± 0.5, so that a test sees them.
  /// "CohereForCausalLM": LayerNorms without biases (weights 1 ± 0.5), q and k norms with each
  /// head's own weights (use_qk_norm), the attention and the MLP on one norm, RoPE over adjacent
  /// pairs, logit_scale 0.0625; "Cohere2ForCausalLM" the same without q and k norms, with
  /// `sliding_window` (4096 when 0) on 3 of every 4 blocks, the only ones that rotate.
  /// "GlmForCausalLM": q, k and v biases, gate_up_proj fused, partial_rotary_factor 0.5 unless set
  /// (RoPE over adjacent pairs); "Glm4ForCausalLM" adds post_self_attn_layernorm and
  /// post_mlp_layernorm (weights 1 ± 0.5).
  double swiglu_limit = 7.0;
  /// "GraniteForCausalLM": Llama's blocks with these multipliers written to config.json (its
  /// 3.x models' are 12, 0.22, 1/128 and 8; random weights need larger attention scores to show).
  double embedding_multiplier = 12.0, residual_multiplier = 0.22, attention_multiplier = 0.25, logits_scaling = 8.0;
  DType dtype = DType::kF32;
  std::uint64_t seed = 0;
  double weight_std = 0.02;  ///< standard deviation of the (uniform) random weights
  /// Outlier features: this many hidden dimensions (spread evenly) get `outlier_scale` as their
  /// weight in every block's two norms, so the inputs of the attention and MLP projections hold a
  /// few large-magnitude features, as real models past 6.7B parameters do.
  std::int64_t outlier_dims = 0;
  double outlier_scale = 20.0;
};

/// Whether a synthetic checkpoint of `architecture` is a mixture of experts (Mixtral, Qwen2-MoE,
/// Qwen3-MoE, OLMoE).
bool synthetic_mixture(std::string_view architecture);

/// A named real-model shape ("tinyllama-1.1b", "llama-7b", "stories-110m", "stories-15m", "bloom-1.1b",
/// "qwen3-0.6b", "phi3-mini", "gemma-2b", "gemma2-2b", "gemma3-1b");
/// nullopt if unknown.
std::optional<SyntheticSpec> synthetic_preset(std::string_view name);

/// Throws sepal::Error naming the first invalid field (non-positive sizes, heads not dividing,
/// a vocabulary too small for the byte-fallback tokenizer, ...).
void validate(const SyntheticSpec& spec);

/// Writes the checkpoint into `dir` (created if needed). `progress` is called with the fraction
/// written so far. Deterministic for a given spec. Throws sepal::Error on I/O failure.
void write_synthetic_checkpoint(const SyntheticSpec& spec, const std::filesystem::path& dir,
                                const std::function<void(double)>& progress = {});

}  // namespace sepal

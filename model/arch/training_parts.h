#pragma once
// What the training passes of every architecture (model/arch/<name>/training.cc) share: the
// layout of a batch of whole sequences packed one after another, one block's activations as its
// backward needs them, and causal attention over the packed sequences, forward and backward.
//
// Thread-safety: an Activations belongs to one pass.

#include <cstdint>
#include <span>
#include <vector>

#include "model/arch/experts.h"
#include "model/block_adapters.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace sepal {

/// The batch's layout: where each sequence starts and every token's position in its sequence.
struct Packing {
  std::vector<std::int64_t> starts, positions;
  std::int64_t tokens = 0;
  explicit Packing(std::span<const std::int64_t> lengths);
  /// Tokens of sequence s.
  std::int64_t length(std::size_t s) const { return (s + 1 < starts.size() ? starts[s + 1] : tokens) - starts[s]; }
};

/// One block's activations over the batch, as its backward needs them, and the scratch of the
/// forward and backward; allocated once per pass and reused by every block (fresh memory costs a
/// page fault per page). Keys and values are per sequence in the attention kernels' layout
/// [kv_heads, length, head_dim], one sequence after another. What a field holds is the
/// architecture's (for BLOOM `up` is the MLP's input to GELU and `gate` is unused).
struct Activations {
  std::vector<float> input, normed1, q, keys, values, attn, mid, normed2, gate, up, act;
  std::vector<float> k_rows, v_rows;  // forward scratch: keys and values as the projections give them
  std::vector<float> q_raw, k_raw;    // Qwen3: q and k before each head's RMSNorm (empty otherwise)
  std::vector<float> o_raw, down_raw;  // Gemma 2: the o and down products before their output norms
  ExpertActivations moe;               // a sparse block's MLP (model/arch/experts.h)
  // backward scratch
  std::vector<float> d_act, d_gate, d_up, d_norm, part, d_attn, dq, dk_heads, dv_heads, dk, dv;
  Activations(const ModelConfig& c, std::int64_t t);
  /// Sizes the backward's scratch (not needed by a forward-only pass).
  void for_backward(const ModelConfig& c, std::int64_t t);
};

/// One block's training pass: its weights, the RoPE frequencies or ALiBi slopes of the stack,
/// the batch and the activations.
struct TrainingCall {
  const ModelConfig& config;
  const BlockWeights& weights;
  const double* inv_freq;  ///< RoPE (Llama family)
  const float* alibi;      ///< ALiBi slopes (BLOOM)
  const Packing& pack;
  Activations& a;
  const BlockAdapters* adapters = nullptr;  ///< may be null (model/block_adapters.h)
  float* adapter_grads = nullptr;           ///< this block's adapter gradients, added to (backward)
  /// RoPE of a sequence longer than the original context (LongRoPE; null: inv_freq for every one).
  const double* long_inv_freq = nullptr;
};

/// As adapt_product (block_parts.h), over the pass's rows.
void adapt_product(const TrainingCall& call, Projection p, const float* x, float* y);
/// dx[t, cols] = d loss / d x of the (adapted) product y = x · wᵀ of projection p, given dy =
/// d loss / d y; dy is scratch (PEQA rescales it). Adds the adapter's gradients.
void product_input_grad(const TrainingCall& call, Projection p, const float* x, float* dy, float* dx);

/// Causal attention of every packed sequence (the config's sliding window, the call's ALiBi):
/// a.q [t, q_size] and keys and values as rows [t, kv_size] in; a.keys and a.values (the
/// kernel's layout) and a.attn out.
void packed_attention(const TrainingCall& call, const float* k_rows, const float* v_rows);

/// Its input gradients from d_attn [t, q_size] (a.d_attn): a.dq, and a.dk and a.dv as rows.
void packed_attention_backward(const TrainingCall& call);

}  // namespace sepal

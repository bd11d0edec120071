#pragma once
// What the blocks of every architecture (model/arch/<name>/block.cc) share: the arguments of one
// block's forward, its scratch buffers, how a step's rows go into the KV cache, and how its
// products run (a token tree's rows in pieces that keep decoding's bits).
//
// Thread-safety: a BlockCall and its Scratch belong to one forward call.

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "model/arch/experts.h"
#include "model/block_adapters.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace sepal {

/// Scratch buffers of one forward call, sized for n rows.
struct Scratch {
  AlignedFloats normed, q, k, v, attn, proj, gate, up;  // the products' inputs start on cache lines
  ExpertScratch experts;  // sparse blocks' (model/arch/experts.h)
  explicit Scratch(const ModelConfig& c, std::int64_t n)
      : normed(n * c.hidden_size), q(n * c.q_size()), k(n * c.kv_size()), v(n * c.kv_size()),
        attn(n * c.q_size()), proj(n * c.hidden_size), gate(c.any_dense_block() ? n * c.intermediate_size : 0),
        up(c.any_dense_block() ? n * c.intermediate_size : 0), experts(c, n) {}
};

/// A tree step: the nodes' parents (attention_tree) and the first new node.
struct TreeRows {
  const std::int32_t* parents = nullptr;
  std::int64_t first = 0;
};

/// One session's rows in a batched call (BlockStack::forward_batch): rows [row, row + n) of the
/// call, at slots [start, start + n) of the session's own cache, with its own adapters.
struct RowSegment {
  std::int64_t row = 0, n = 0, start = 0;
  KvArray keys;
  KvArray values;
  std::int64_t capacity = 0;
  std::int64_t held_from = 0;  ///< the position at the arrays' slot 0 (model/kv_cache.h)
  const BlockAdapters* adapters = nullptr;
  const double* inv_freq = nullptr;  ///< RoPE: the session's table (model/rope_tables.h)
};

/// One block's forward: rows hidden[n, hidden_size], in place, at cache positions [start, start +
/// n) (start + tree->first with a tree, whose rows then attend along their paths), at `positions`;
/// the arrays' slot 0 holds position held_from. With `segments`, the rows are the steps of several
/// sessions instead (start, keys, values, capacity, held_from, adapters and RoPE's table are then
/// each segment's), every row's products as it gets them alone.
struct BlockCall {
  const ModelConfig& config;
  const BlockWeights& weights;
  const double* inv_freq;  ///< RoPE (Llama)
  const float* alibi;      ///< ALiBi slopes (BLOOM)
  float* hidden;
  std::int64_t n;
  std::int64_t start;
  const std::int64_t* positions;
  KvArray keys;
  KvArray values;
  std::int64_t capacity;
  std::int64_t held_from;
  Scratch& scratch;
  const TreeRows* tree;
  const BlockAdapters* adapters;  ///< may be null (model/block_adapters.h)
  std::span<const RowSegment> segments = {};
};

/// Whether the call's products must give each row the bits it gets alone (a tree's rows, or the
/// steps of several sessions).
inline bool rows_alone(const BlockCall& call) { return call.tree != nullptr || !call.segments.empty(); }

/// Stores the call's keys k [n, kv_size] and values v in the cache(s) and writes the attention of
/// its queries q [n, q_size] to out: causal, along a tree's paths, or each segment in its own
/// cache; with the config's sliding window and the call's ALiBi slopes (may be null).
void store_and_attend(const BlockCall& call, const float* q, const float* k, const float* v, float* out);

/// y = x · wᵀ for n rows (already computed) becomes the adapted product when `call` has an
/// adapter on projection p of its block.
void adapt_product(const BlockCall& call, Projection p, const float* x, float* y);

/// The Llama family's norm of n rows of `dim` values: RMSNorm, or Cohere's LayerNorm without a
/// bias (ModelConfig::layer_norms), with epsilon rms_norm_eps. y may equal x.
void family_norm(const ModelConfig& c, const float* x, std::int64_t n, std::int64_t dim, const float* weight, float* y);
/// Its input gradient: dx = d loss / d x given dy = d loss / d y. dx may equal dy.
void family_norm_input_grad(const ModelConfig& c, const float* x, std::int64_t n, std::int64_t dim, const float* weight,
                            const float* dy, float* dx);

/// Qwen3's RMSNorm of each head of q [rows, q_size] and k [rows, kv_size], in place; OLMo's of
/// each whole row (ModelConfig::qk_norm_across_heads); Cohere's LayerNorm of each head with that
/// head's weights (qk_norm_per_head_weights).
void qk_norms(const ModelConfig& c, const BlockWeights& w, std::int64_t rows, float* q, float* k);
/// The input gradient of qk_norms: dq and dk (d loss / d normed q and k) become d loss / d q and k
/// before the norms, whose inputs were q_raw and k_raw.
void qk_norms_input_grad(const ModelConfig& c, const BlockWeights& w, std::int64_t rows, const float* q_raw,
                         const float* k_raw, float* dq, float* dk);

/// RoPE of x[n, heads, head_dim] at `positions` with the table inv_freq, in the config's layout
/// (kernels/rope.h: halves, or Cohere's adjacent pairs), in place; or its input gradient.
void rotate_heads(const ModelConfig& c, float* x, std::int64_t n, std::int64_t heads, const std::int64_t* positions,
                  const double* inv_freq, double magnitude);
void rotate_heads_input_grad(const ModelConfig& c, float* dx, std::int64_t n, std::int64_t heads,
                             const std::int64_t* positions, const double* inv_freq, double magnitude);

/// ys[i] = x · ws[i]ᵀ for n rows; with `alone`, each row's the bits it gets decoded alone
/// (matmul_many_alone: prompts and decode round differently).
void block_products(const float* x, std::int64_t n, bool alone, std::span<const WeightView> ws,
                    std::span<float* const> ys);

}  // namespace sepal

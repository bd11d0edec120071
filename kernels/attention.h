#pragma once
// Scaled dot-product attention of new query rows against a key/value cache, with grouped-query
// heads (several query heads share one key/value head).

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/dtype.h"

namespace sepal {

/// Head layout of one attention layer. heads must be a multiple of kv_heads.
struct AttentionDims {
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
  /// A score is q·k times this; 0 means 1/√head_dim (Gemma 2 takes 1/√query_pre_attn_scalar).
  float scale = 0.0f;
  /// Gemma 2's soft-capping: each scaled score s becomes softcap · tanh(s / softcap) before the
  /// softmax (and before ALiBi's bias); 0: none.
  float softcap = 0.0f;
  /// GPT-OSS's attention sinks: a learned logit per head [heads] that joins each row's softmax as
  /// one more score with no value (the row's weights then sum to less than one); null: none.
  const float* sinks = nullptr;

  float score_scale() const { return scale > 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(head_dim)); }
};

/// ALiBi's slope of each head (BLOOM), as Press et al. and Hugging Face define them: for a power
/// of two h, 2^(-8 i / h) for i = 1..h; otherwise those of the largest power of two below h, then
/// every other slope of twice that.
std::vector<float> alibi_slopes(std::int64_t heads);

/// A cache's key or value array [kv_heads, capacity, head_dim] of one block: f32 elements, or
/// bf16 (DType::kBF16: half the memory, and half the bytes attention reads; rounded to nearest
/// even when stored, read back exactly). The functions below take either; with bf16 each row's
/// attention is the f32 computation over the rounded keys and values.
struct KvArray {
  void* data = nullptr;
  DType dtype = DType::kF32;  ///< kF32 or kBF16
};

/// Whether a cache can hold elements of `dtype` (f32 and bf16).
constexpr bool kv_dtype_supported(DType dtype) { return dtype == DType::kF32 || dtype == DType::kBF16; }

/// Copies rows [n, kv_heads, head_dim] into slots [start, start + n) of a cache laid out
/// [kv_heads, capacity, head_dim].
void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
              std::int64_t capacity, float* cache);
/// The same into a cache of either type.
void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
              std::int64_t capacity, KvArray cache);

/// Causal attention. q is [n, heads, head_dim]; keys and values are [kv_heads, capacity, head_dim]
/// and already hold positions [0, start + n). Query row t (position start + t) attends to
/// positions [0, start + t]. With `alibi` (a slope per head), the score of key position p gets
/// slope * p added (ALiBi; the same as slope * (p - query position) after the softmax). With a
/// `window` > 0 (Mistral's sliding window), a query at position q attends only to positions
/// (q - window, q]; the arrays' slot 0 may then hold a later position than 0, `held_from` (the
/// positions before it are gone: a cache that keeps only its window, model/kv_cache.h), so that
/// position p is at slot p - held_from; the window must not reach before it (sepal::Error). out is
/// [n, heads * head_dim]. Uses the thread pool (kernels/parallel.h) over (row, head).
void attention_causal(const float* q, std::int64_t n, std::int64_t start, const float* keys,
                      const float* values, std::int64_t capacity, const AttentionDims& dims,
                      float* out, const float* alibi = nullptr, std::int64_t window = 0, std::int64_t held_from = 0);
/// The same over a cache of either type (keys and values of the same type).
void attention_causal(const float* q, std::int64_t n, std::int64_t start, KvArray keys, KvArray values,
                      std::int64_t capacity, const AttentionDims& dims, float* out, const float* alibi = nullptr,
                      std::int64_t window = 0, std::int64_t held_from = 0);

/// Attention of the nodes of a token tree (speculative decoding). The cache holds positions
/// [0, start) of the sequence, and tree node i at slot start + i. parents[i] is the node's parent
/// (an earlier node) or -1 for a node that follows the sequence directly; a node at depth d (its
/// ancestors) sits at position start + d. q is [n, heads, head_dim] for nodes [first, first + n);
/// parents covers nodes [0, first + n) (`alibi`, `window` and `held_from` as for attention_causal:
/// slots are then positions less held_from). Node i
/// attends to positions [0, start), its ancestors and
/// itself, and its row equals, bit for bit, attention_causal's row for the same keys stored as a
/// sequence. out is [n, heads * head_dim]. Throws sepal::Error for a parent that is not an
/// earlier node or slots past the capacity.
void attention_tree(const float* q, std::int64_t first, std::int64_t n, std::int64_t start, const std::int32_t* parents,
                    const float* keys, const float* values, std::int64_t capacity, const AttentionDims& dims, float* out,
                    const float* alibi = nullptr, std::int64_t window = 0, std::int64_t held_from = 0);
/// The same over a cache of either type (keys and values of the same type).
void attention_tree(const float* q, std::int64_t first, std::int64_t n, std::int64_t start, const std::int32_t* parents,
                    KvArray keys, KvArray values, std::int64_t capacity, const AttentionDims& dims, float* out,
                    const float* alibi = nullptr, std::int64_t window = 0, std::int64_t held_from = 0);

}  // namespace sepal

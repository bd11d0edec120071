#pragma once
// Scaled dot-product attention of new query rows against a key/value cache, with grouped-query
// heads (several query heads share one key/value head).

#include <cstdint>

namespace sepal {

/// Head layout of one attention layer. heads must be a multiple of kv_heads.
struct AttentionDims {
  std::int64_t heads = 0;
  std::int64_t kv_heads = 0;
  std::int64_t head_dim = 0;
};

/// Causal attention. q is [n, heads, head_dim]; keys and values are [kv_heads, capacity, head_dim]
/// and already hold positions [0, start + n). Query row t (position start + t) attends to
/// positions [0, start + t]. out is [n, heads * head_dim]. Uses the thread pool (kernels/parallel.h) over (row, head).
void attention_causal(const float* q, std::int64_t n, std::int64_t start, const float* keys,
                      const float* values, std::int64_t capacity, const AttentionDims& dims,
                      float* out);

}  // namespace sepal

#include "model/arch/block_parts.h"

#include <algorithm>

#include "kernels/attention.h"

namespace sepal {

void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads,
              std::int64_t head_dim, std::int64_t capacity, float* cache) {
  for (std::int64_t t = 0; t < n; ++t) {
    for (std::int64_t h = 0; h < kv_heads; ++h) {
      const float* src = rows + (t * kv_heads + h) * head_dim;
      std::copy(src, src + head_dim, cache + (h * capacity + start + t) * head_dim);
    }
  }
}

void block_products(const float* x, std::int64_t n, bool tree, std::span<const WeightView> ws, std::span<float* const> ys) {
  const std::int64_t piece = tree ? std::min(n, kStreamingMaxTokens) : n;
  std::vector<float*> at(ys.size());
  for (std::int64_t r = 0; r < n; r += piece) {
    for (std::size_t i = 0; i < ys.size(); ++i) at[i] = ys[i] + r * ws[i].rows;
    matmul_many(x + r * ws[0].cols, std::min(piece, n - r), ws, at);
  }
}

void adapt_product(const BlockCall& call, Projection p, const float* x, float* y) {
  const WeightView& w = projection_weight(call.weights, p);
  for (const RowSegment& seg : call.segments) {
    if (!seg.adapters) continue;
    if (const auto adapter = seg.adapters->of(call.config, call.weights.layer, p)) {
      apply_adapter(*adapter, w, x + seg.row * w.cols, seg.n, y + seg.row * w.rows);
    }
  }
  if (!call.adapters) return;
  if (const auto adapter = call.adapters->of(call.config, call.weights.layer, p)) apply_adapter(*adapter, w, x, call.n, y);
}

void store_and_attend(const BlockCall& call, const float* q, const float* k, const float* v, float* out) {
  const ModelConfig& c = call.config;
  const AttentionDims dims{c.num_heads, c.num_kv_heads, c.head_dim};
  const auto one = [&](std::int64_t row, std::int64_t n, std::int64_t start, float* keys, float* values,
                       std::int64_t capacity) {
    const std::int64_t slot = call.tree ? start + call.tree->first : start;
    store_kv(k + row * c.kv_size(), n, slot, c.num_kv_heads, c.head_dim, capacity, keys);
    store_kv(v + row * c.kv_size(), n, slot, c.num_kv_heads, c.head_dim, capacity, values);
    if (call.tree) {
      attention_tree(q + row * c.q_size(), call.tree->first, n, start, call.tree->parents, keys, values, capacity, dims,
                     out + row * c.q_size(), call.alibi, c.sliding_window);
    } else {
      attention_causal(q + row * c.q_size(), n, start, keys, values, capacity, dims, out + row * c.q_size(), call.alibi,
                       c.sliding_window);
    }
  };
  if (call.segments.empty()) return one(0, call.n, call.start, call.keys, call.values, call.capacity);
  for (const RowSegment& seg : call.segments) one(seg.row, seg.n, seg.start, seg.keys, seg.values, seg.capacity);
}

}  // namespace sepal

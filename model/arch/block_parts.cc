#include "model/arch/block_parts.h"

#include <algorithm>

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
  if (!call.adapters) return;
  if (const auto adapter = call.adapters->of(call.config, call.weights.layer, p)) {
    apply_adapter(*adapter, projection_weight(call.weights, p), x, call.n, y);
  }
}

}  // namespace sepal

#include "model/arch/block_parts.h"

#include <algorithm>

#include "kernels/attention.h"
#include "kernels/gradients.h"
#include "kernels/parallel.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

namespace sepal {

void block_products(const float* x, std::int64_t n, bool alone, std::span<const WeightView> ws,
                    std::span<float* const> ys) {
  if (alone) {
    matmul_many_alone(x, n, ws, ys);
  } else {
    matmul_many(x, n, ws, ys);
  }
}

void family_norm(const ModelConfig& c, const float* x, std::int64_t n, std::int64_t dim, const float* weight, float* y) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (c.layer_norms) {
    layernorm(x, n, dim, weight, nullptr, eps, y);
  } else {
    rmsnorm(x, n, dim, weight, eps, y);
  }
}

void family_norm_input_grad(const ModelConfig& c, const float* x, std::int64_t n, std::int64_t dim, const float* weight,
                            const float* dy, float* dx) {
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (c.layer_norms) {
    layernorm_input_grad(x, n, dim, weight, eps, dy, dx);
  } else {
    rmsnorm_input_grad(x, n, dim, weight, eps, dy, dx);
  }
}

namespace {

// The norms of `rows` rows of `heads` heads (x: the inputs, as the norms read them), each head with
// its own weights [heads, head_dim] (Cohere), or every group of `width` values with one set.
template <typename Op>
void each_norm(const ModelConfig& c, std::int64_t rows, std::int64_t heads, std::int64_t width, bool per_head, Op&& op) {
  if (!per_head) return op(0, rows * heads * c.head_dim / width, width, 0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t h = 0; h < heads; ++h) op((r * heads + h) * c.head_dim, 1, c.head_dim, h * c.head_dim);
}

}  // namespace

void qk_norms(const ModelConfig& c, const BlockWeights& w, std::int64_t rows, float* q, float* k) {
  const bool per_head = c.qk_norm_per_head_weights;
  each_norm(c, rows, c.num_heads, c.q_norm_width(), per_head, [&](std::int64_t at, std::int64_t n, std::int64_t dim, std::int64_t weight) {
    family_norm(c, q + at, n, dim, w.q_norm.data + weight, q + at);
  });
  each_norm(c, rows, c.num_kv_heads, c.k_norm_width(), per_head, [&](std::int64_t at, std::int64_t n, std::int64_t dim, std::int64_t weight) {
    family_norm(c, k + at, n, dim, w.k_norm.data + weight, k + at);
  });
}

void qk_norms_input_grad(const ModelConfig& c, const BlockWeights& w, std::int64_t rows, const float* q_raw,
                         const float* k_raw, float* dq, float* dk) {
  const bool per_head = c.qk_norm_per_head_weights;
  each_norm(c, rows, c.num_heads, c.q_norm_width(), per_head, [&](std::int64_t at, std::int64_t n, std::int64_t dim, std::int64_t weight) {
    family_norm_input_grad(c, q_raw + at, n, dim, w.q_norm.data + weight, dq + at, dq + at);
  });
  each_norm(c, rows, c.num_kv_heads, c.k_norm_width(), per_head, [&](std::int64_t at, std::int64_t n, std::int64_t dim, std::int64_t weight) {
    family_norm_input_grad(c, k_raw + at, n, dim, w.k_norm.data + weight, dk + at, dk + at);
  });
}

void rotate_heads(const ModelConfig& c, float* x, std::int64_t n, std::int64_t heads, const std::int64_t* positions,
                  const double* inv_freq, double magnitude) {
  if (c.rope_adjacent_pairs) {
    rope_rotate_adjacent(x, n, heads, c.head_dim, c.rope_dims(), positions, inv_freq, magnitude);
  } else {
    rope_rotate_half(x, n, heads, c.head_dim, c.rope_dims(), positions, inv_freq, magnitude);
  }
}

void rotate_heads_input_grad(const ModelConfig& c, float* dx, std::int64_t n, std::int64_t heads,
                             const std::int64_t* positions, const double* inv_freq, double magnitude) {
  if (c.rope_adjacent_pairs) {
    rope_rotate_adjacent_input_grad(dx, n, heads, c.head_dim, c.rope_dims(), positions, inv_freq, magnitude);
  } else {
    rope_rotate_half_input_grad(dx, n, heads, c.head_dim, c.rope_dims(), positions, inv_freq, magnitude);
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
  const AttentionDims dims = block_attention_dims(c, call.weights);
  const std::int64_t window = c.window_of(call.weights.layer);
  const auto one = [&](std::int64_t row, std::int64_t n, std::int64_t start, KvArray keys, KvArray values,
                       std::int64_t capacity, std::int64_t held_from) {
    const std::int64_t slot = (call.tree ? start + call.tree->first : start) - held_from;
    store_kv(k + row * c.kv_size(), n, slot, c.num_kv_heads, c.head_dim, capacity, keys);
    store_kv(v + row * c.kv_size(), n, slot, c.num_kv_heads, c.head_dim, capacity, values);
    if (call.tree) {
      attention_tree(q + row * c.q_size(), call.tree->first, n, start, call.tree->parents, keys, values, capacity, dims,
                     out + row * c.q_size(), call.alibi, window, held_from);
    } else {
      attention_causal(q + row * c.q_size(), n, start, keys, values, capacity, dims, out + row * c.q_size(), call.alibi,
                       window, held_from);
    }
  };
  if (call.segments.empty()) return one(0, call.n, call.start, call.keys, call.values, call.capacity, call.held_from);
  // Many sessions: in parallel (each one's heads then run inline in its task), one fork and join
  // for the batch instead of one per session. Few (a batch of one is a host's usual decode step):
  // one after another, each with its heads in parallel; sessions in parallel would leave all but
  // one thread idle (measured: a host's 4 int8 blocks at 900 positions spent 0.12 ms per block in
  // attention on one core). A row's attention is the same computed either way.
  const auto sessions = static_cast<std::int64_t>(call.segments.size());
  const auto segment = [&](std::int64_t i) {
    const RowSegment& seg = call.segments[static_cast<std::size_t>(i)];
    one(seg.row, seg.n, seg.start, seg.keys, seg.values, seg.capacity, seg.held_from);
  };
  if (sessions < 2 * static_cast<std::int64_t>(compute_threads())) {
    for (std::int64_t i = 0; i < sessions; ++i) segment(i);
  } else {
    parallel_for(sessions, segment);
  }
}

}  // namespace sepal

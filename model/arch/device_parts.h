#pragma once
// The arguments of one block's forward on a device (model/device_blocks.h): every pointer is the
// backend's memory. Each architecture's device_block.cc runs its block with the backend's ops, in
// the order of its CPU block.cc.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>
#include <span>

#include "kernels/backend.h"
#include "model/block_adapters.h"
#include "model/device_blocks.h"
#include "model/model_config.h"

namespace sepal {

/// A session's adapters (model/block_adapters.h) with their values copied into a backend's memory.
struct DeviceAdapters {
  const BlockAdapters* host = nullptr;  ///< shape and block range (its values are host memory)
  const float* values = nullptr;        ///< host->values' copy in the backend's memory
};

/// One session's rows in a batched call (DeviceBlockStack::forward_batch): rows [row, row + n) at
/// slots [start, start + n) of its own cache.
struct DeviceSegment {
  std::int64_t row = 0, n = 0, start = 0, capacity = 0;
  std::int64_t held_from = 0;  ///< the position at slot 0 of its arrays (KvCache::held_from)
  float* keys = nullptr;
  float* values = nullptr;
  const double* inv_freq = nullptr;  ///< RoPE: the session's table on the device (model/rope_tables.h)
  const DeviceAdapters* adapters = nullptr;  ///< the session's, or null
};

struct DeviceBlockCall {
  const ModelConfig& config;
  const DeviceBlockWeights& weights;
  Backend& backend;
  const double* inv_freq;  ///< RoPE (Llama)
  const float* alibi;      ///< ALiBi slopes (BLOOM)
  float* hidden;           ///< [n, hidden_size], in place
  std::int64_t n;
  std::int64_t start;      ///< the rows' first cache slot and position
  float* keys;
  float* values;
  std::int64_t capacity;
  std::int64_t held_from;  ///< the position at slot 0 of keys and values
  const DeviceScratch& scratch;
  /// With segments, the rows are the steps of several sessions (start, keys, values, capacity and
  /// adapters are then each segment's), every row's products as it gets them alone.
  std::span<const DeviceSegment> segments = {};
  const DeviceAdapters* adapters = nullptr;  ///< the rows' adapters (without segments), or null
  /// A token tree's step: the nodes' parents [tree_first + n] in the backend's memory (null: no
  /// tree), its rows nodes [tree_first, tree_first + n) at slots start + node (attention_tree).
  const std::int32_t* tree_parents = nullptr;
  std::int64_t tree_first = 0;
};

/// The config's norm (block_parts.h: family_norm; Cohere's LayerNorm without a bias, else RMSNorm)
/// of rows [n, dim] on a device, and its input gradient; y (dx) may be x (dy).
void device_family_norm(Backend& b, const ModelConfig& c, const float* x, std::int64_t n, std::int64_t dim,
                        const float* weight, float* y);
void device_family_norm_input_grad(Backend& b, const ModelConfig& c, const float* x, std::int64_t n, std::int64_t dim,
                                   const float* weight, const float* dy, float* dx);
/// block_parts.h's qk_norms of q [rows, q_size] and k [rows, kv_size] in place, and their input
/// gradient (dq and dk in place; q_raw and k_raw what the norms read).
void device_qk_norms(Backend& b, const ModelConfig& c, const DeviceBlockWeights& w, std::int64_t rows, float* q, float* k);
void device_qk_norms_input_grad(Backend& b, const ModelConfig& c, const DeviceBlockWeights& w, std::int64_t rows,
                                const float* q_raw, const float* k_raw, float* dq, float* dk);

/// Projection p's weights in a block on a device.
const DeviceMatrix& device_projection(const DeviceBlockWeights& w, Projection p);

/// model/block_adapters.h's apply_adapter and adapter_backward in a backend's ops, so that the CPU
/// backend gives their bits: `adapter` as BlockAdapters::of gives it (its values in host memory),
/// `values` their copy in the backend's memory, and scratch there: u and g [n, rank], wide [n,
/// w.rows or w.cols].
void device_apply_adapter(Backend& b, const ProjectionAdapter& adapter, const float* values, const WeightView& w,
                          const float* x, std::int64_t n, float* y, float* u, float* wide);
/// dy is scratch (PEQA rescales it); the input gradient is added to dx and the adapter's
/// gradients to grads (the backend's memory). `base` [n, w.rows] is scratch for PEQA's recomputed
/// product.
void device_adapter_backward(Backend& b, const ProjectionAdapter& adapter, const float* values, const DeviceMatrix& w,
                             const float* x, std::int64_t n, float* dy, float* dx, float* grads, float* u, float* g,
                             float* wide, float* base);
/// Projection p's adapter in block `layer` and its values in the backend's memory, or nullopt.
std::optional<std::pair<ProjectionAdapter, const float*>> device_adapter_of(const DeviceAdapters* adapters,
                                                                            const ModelConfig& config,
                                                                            std::int64_t layer, Projection p);

/// y (the product x · wᵀ of projection p over the call's rows) becomes the adapted product, with
/// the call's or each segment's adapters (as block_parts.h's adapt_product).
void device_adapt_product(const DeviceBlockCall& call, Projection p, const float* x, float* y);

/// y = x · wᵀ over the call's rows; the rows of several sessions, or of a token tree, go in calls
/// of at most kStreamingMaxTokens rows, in which every backend gives each row the bits it gets alone.
inline void device_products(const DeviceBlockCall& call, const float* x, const DeviceMatrix& w, float* y) {
  if (call.segments.empty() && !call.tree_parents) return call.backend.matmul(x, call.n, w, y);
  for (std::int64_t r = 0; r < call.n; r += kStreamingMaxTokens) {
    call.backend.matmul(x + r * w.view.cols, std::min(kStreamingMaxTokens, call.n - r), w, y + r * w.view.rows);
  }
}

/// Stores the call's keys and values in its cache and writes the attention of s.q to s.attn.
inline void device_store_and_attend(const DeviceBlockCall& call) {
  const ModelConfig& c = call.config;
  const DeviceScratch& s = call.scratch;
  Backend& b = call.backend;
  const auto one = [&](const DeviceSegment& seg) {
    const std::int64_t slot = seg.start + (call.tree_parents ? call.tree_first : 0) - seg.held_from;
    b.store_kv(s.k + seg.row * c.kv_size(), seg.n, slot, c.num_kv_heads, c.head_dim, seg.capacity, seg.keys);
    b.store_kv(s.v + seg.row * c.kv_size(), seg.n, slot, c.num_kv_heads, c.head_dim, seg.capacity, seg.values);
    if (call.tree_parents) {
      return b.attention_tree(s.q, call.tree_first, seg.n, seg.start, call.tree_parents, seg.keys, seg.values,
                              seg.capacity, c.attention_dims(), s.attn, call.alibi, c.window_of(call.weights.layer),
                              seg.held_from);
    }
    b.attention_causal(s.q + seg.row * c.q_size(), seg.n, seg.start, seg.keys, seg.values, seg.capacity,
                       c.attention_dims(), s.attn + seg.row * c.q_size(), call.alibi, c.window_of(call.weights.layer),
                       seg.held_from);
  };
  if (call.segments.empty()) {
    return one(DeviceSegment{0, call.n, call.start, call.capacity, call.held_from, call.keys, call.values});
  }
  for (const DeviceSegment& seg : call.segments) one(seg);
}

}  // namespace sepal

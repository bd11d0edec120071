#pragma once
// The arguments of one block's forward on a device (model/device_blocks.h): every pointer is the
// backend's memory. Each architecture's device_block.cc runs its block with the backend's ops, in
// the order of its CPU block.cc.

#include <cstdint>

#include "kernels/backend.h"
#include "model/device_blocks.h"
#include "model/model_config.h"

namespace sepal {

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
  const DeviceScratch& scratch;
};

/// Stores the call's keys and values in its cache and writes the attention of s.q to s.attn.
inline void device_store_and_attend(const DeviceBlockCall& call) {
  const ModelConfig& c = call.config;
  const DeviceScratch& s = call.scratch;
  call.backend.store_kv(s.k, call.n, call.start, c.num_kv_heads, c.head_dim, call.capacity, call.keys);
  call.backend.store_kv(s.v, call.n, call.start, c.num_kv_heads, c.head_dim, call.capacity, call.values);
  call.backend.attention_causal(s.q, call.n, call.start, call.keys, call.values, call.capacity,
                                AttentionDims{c.num_heads, c.num_kv_heads, c.head_dim}, s.attn, call.alibi,
                                c.sliding_window);
}

}  // namespace sepal

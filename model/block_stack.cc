#include "model/block_stack.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/error.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

namespace sepal {
namespace {

// Scratch buffers of one forward call, sized for n rows.
struct Scratch {
  std::vector<float> normed, q, k, v, attn, proj, gate, up;
  explicit Scratch(const ModelConfig& c, std::int64_t n)
      : normed(n * c.hidden_size), q(n * c.q_size()), k(n * c.kv_size()), v(n * c.kv_size()),
        attn(n * c.q_size()), proj(n * c.hidden_size), gate(n * c.intermediate_size),
        up(n * c.intermediate_size) {}
};

// Copies rows [n, kv_heads, head_dim] into the cache layout [kv_heads, capacity, head_dim].
void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads,
              std::int64_t head_dim, std::int64_t capacity, float* cache) {
  for (std::int64_t t = 0; t < n; ++t) {
    for (std::int64_t h = 0; h < kv_heads; ++h) {
      const float* src = rows + (t * kv_heads + h) * head_dim;
      std::copy(src, src + head_dim, cache + (h * capacity + start + t) * head_dim);
    }
  }
}

void block_forward(const ModelConfig& c, const BlockWeights& w, const double* inv_freq,
                   float* hidden, std::int64_t n, std::int64_t start, const std::int64_t* positions,
                   float* keys, float* values, std::int64_t capacity, Scratch& s) {
  const std::int64_t h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  rmsnorm(hidden, n, h, w.input_norm.data, eps, s.normed.data());
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {s.q.data(), s.k.data(), s.v.data()};
  matmul_many(s.normed.data(), n, qkv, qkv_out);
  rope_rotate_half(s.q.data(), n, c.num_heads, c.head_dim, positions, inv_freq);
  rope_rotate_half(s.k.data(), n, c.num_kv_heads, c.head_dim, positions, inv_freq);
  store_kv(s.k.data(), n, start, c.num_kv_heads, c.head_dim, capacity, keys);
  store_kv(s.v.data(), n, start, c.num_kv_heads, c.head_dim, capacity, values);
  attention_causal(s.q.data(), n, start, keys, values, capacity,
                   AttentionDims{c.num_heads, c.num_kv_heads, c.head_dim}, s.attn.data());
  matmul(s.attn.data(), n, w.o_proj.view, s.proj.data());
  add_in_place(hidden, s.proj.data(), n * h);

  rmsnorm(hidden, n, h, w.post_attention_norm.data, eps, s.normed.data());
  const WeightView gate_up[] = {w.gate_proj.view, w.up_proj.view};
  float* const gate_up_out[] = {s.gate.data(), s.up.data()};
  matmul_many(s.normed.data(), n, gate_up, gate_up_out);
  silu_mul(s.gate.data(), s.up.data(), n * c.intermediate_size);
  matmul(s.gate.data(), n, w.down_proj.view, s.proj.data());
  add_in_place(hidden, s.proj.data(), n * h);
}

}  // namespace

BlockStack BlockStack::load(const Checkpoint& checkpoint, const ModelConfig& config,
                            std::int64_t first, std::int64_t last,
                            const WeightLoading& loading) {
  if (first < 0 || last > config.num_layers || first >= last) {
    fail("block range [", first, ", ", last, ") is not within the model's ", config.num_layers,
         " blocks");
  }
  if (loading.dtype == DType::kF16) fail("weights can be held as f32, bf16 or int8, not f16");
  BlockStack stack;
  stack.config_ = config;
  stack.first_ = first;
  stack.last_ = last;
  for (std::int64_t layer = first; layer < last; ++layer) {
    stack.blocks_.push_back(load_block_weights(checkpoint, config, layer, loading));
  }
  stack.inv_freq_ = rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling);
  return stack;
}

std::int64_t BlockStack::weight_bytes() const {
  std::int64_t total = 0;
  for (const auto& b : blocks_) total += b.bytes();
  return total;
}

std::int64_t BlockStack::step_working_bytes(std::int64_t n) const {
  const ModelConfig& c = config_;
  const std::int64_t scratch = 2 * c.hidden_size + 2 * c.q_size() + 2 * c.kv_size() + 2 * c.intermediate_size;
  const std::int64_t step_io = 2 * c.hidden_size;                                         // decoded input, encoded output
  const std::int64_t int8_copies = 5 * std::max(c.hidden_size, c.intermediate_size) / 4;  // codes + inlier copy
  return n * (scratch + step_io + int8_copies) * static_cast<std::int64_t>(sizeof(float));
}

KvCache BlockStack::new_cache(std::int64_t capacity) const {
  if (capacity <= 0 || capacity > config_.max_position_embeddings) {
    fail("session length ", capacity, " must be between 1 and max_position_embeddings (",
         config_.max_position_embeddings, ")");
  }
  return new_cache(capacity, first_, last_);
}

KvCache BlockStack::new_cache(std::int64_t capacity, std::int64_t first, std::int64_t last) const {
  if (capacity <= 0 || capacity > config_.max_position_embeddings) {
    fail("session length ", capacity, " must be between 1 and max_position_embeddings (",
         config_.max_position_embeddings, ")");
  }
  if (first < first_ || last > last_ || first >= last) {
    fail("blocks [", first, ", ", last, ") are not a part of the served blocks [", first_, ", ", last_, ")");
  }
  return KvCache(last - first, config_.num_kv_heads, config_.head_dim, capacity);
}

void BlockStack::forward(float* hidden, std::int64_t n, KvCache& cache) const {
  forward(hidden, n, cache, first_);
}

void BlockStack::forward(float* hidden, std::int64_t n, KvCache& cache, std::int64_t first,
                         const DeepPrompts* prompts) const {
  SEPAL_CHECK(first >= first_ && first + cache.blocks() <= last_ && cache.blocks() > 0 &&
              cache.kv_heads() == config_.num_kv_heads && cache.head_dim() == config_.head_dim,
              "cache does not belong to this block range");
  if (n <= 0) return;
  const std::int64_t start = cache.length();
  if (start + n > cache.capacity()) {
    fail("positions [", start, ", ", start + n, ") pass the session's length of ",
         cache.capacity(), " positions");
  }
  std::vector<std::int64_t> positions(static_cast<std::size_t>(n));
  std::iota(positions.begin(), positions.end(), start);
  Scratch scratch(config_, n);
  // The deep prompts' rows that fall in this step: positions [from, to).
  const std::int64_t h = config_.hidden_size;
  const std::int64_t from = prompts ? std::max(start, prompts->offset) : 0;
  const std::int64_t to = prompts ? std::min(start + n, prompts->offset + prompts->count) : 0;
  for (std::int64_t i = 0; i < cache.blocks(); ++i) {
    if (from < to) {
      add_in_place(hidden + (from - start) * h, prompts->values + (i * prompts->count + from - prompts->offset) * h,
                   (to - from) * h);
    }
    block_forward(config_, blocks_[static_cast<std::size_t>(first - first_ + i)], inv_freq_.data(), hidden, n, start,
                  positions.data(), cache.keys(i), cache.values(i), cache.capacity(), scratch);
  }
  cache.set_length(start + n);
}

}  // namespace sepal

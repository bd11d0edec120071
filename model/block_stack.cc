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

// A tree step, for block_forward: the nodes' parents (attention_tree) and the first new node.
struct TreeRows {
  const std::int32_t* parents = nullptr;
  std::int64_t first = 0;
};

// The products of a block: a tree's rows in pieces that give each row the bits it gets decoded
// alone (kernels/matmul.h: prompts and decode round differently; int8 picks outlier columns per
// call), the rows of a step or prompt at once.
void block_products(const float* x, std::int64_t n, bool tree, std::span<const WeightView> ws, std::span<float* const> ys) {
  std::int64_t piece = n;
  if (tree) {
    for (const WeightView& v : ws) piece = std::min(piece, alone_exact_tokens(v));
  }
  std::vector<float*> at(ys.size());
  for (std::int64_t r = 0; r < n; r += piece) {
    for (std::size_t i = 0; i < ys.size(); ++i) at[i] = ys[i] + r * ws[i].rows;
    matmul_many(x + r * ws[0].cols, std::min(piece, n - r), ws, at);
  }
}

// A BLOOM block (Hugging Face's BloomBlock with apply_residual_connection_post_layernorm false):
// x += dense(attention_alibi(qkv(ln1(x)))) + bias; x += 4h_to_h(gelu(h_to_4h(ln2(x)))) + bias.
void bloom_block_forward(const ModelConfig& c, const BlockWeights& w, const float* alibi, float* hidden, std::int64_t n,
                         std::int64_t start, float* keys, float* values, std::int64_t capacity, Scratch& s,
                         const TreeRows* tree) {
  const std::int64_t h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  layernorm(hidden, n, h, w.input_norm.data, w.input_norm_bias.data, eps, s.normed.data());
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {s.q.data(), s.k.data(), s.v.data()};
  block_products(s.normed.data(), n, tree != nullptr, qkv, qkv_out);
  add_bias(s.q.data(), n, c.q_size(), w.q_bias.data);
  add_bias(s.k.data(), n, c.kv_size(), w.k_bias.data);
  add_bias(s.v.data(), n, c.kv_size(), w.v_bias.data);
  const std::int64_t slot = tree ? start + tree->first : start;
  store_kv(s.k.data(), n, slot, c.num_kv_heads, c.head_dim, capacity, keys);
  store_kv(s.v.data(), n, slot, c.num_kv_heads, c.head_dim, capacity, values);
  const AttentionDims dims{c.num_heads, c.num_kv_heads, c.head_dim};
  if (tree) {
    attention_tree(s.q.data(), tree->first, n, start, tree->parents, keys, values, capacity, dims, s.attn.data(), alibi);
  } else {
    attention_causal(s.q.data(), n, start, keys, values, capacity, dims, s.attn.data(), alibi);
  }
  float* const proj_out[] = {s.proj.data()};
  block_products(s.attn.data(), n, tree != nullptr, std::span(&w.o_proj.view, 1), proj_out);
  add_bias(s.proj.data(), n, h, w.o_bias.data);
  add_in_place(hidden, s.proj.data(), n * h);
  layernorm(hidden, n, h, w.post_attention_norm.data, w.post_attention_norm_bias.data, eps, s.normed.data());
  float* const up_out[] = {s.up.data()};
  block_products(s.normed.data(), n, tree != nullptr, std::span(&w.up_proj.view, 1), up_out);
  add_bias(s.up.data(), n, c.intermediate_size, w.up_bias.data);
  gelu_tanh(s.up.data(), n * c.intermediate_size);
  block_products(s.up.data(), n, tree != nullptr, std::span(&w.down_proj.view, 1), proj_out);
  add_bias(s.proj.data(), n, h, w.down_bias.data);
  add_in_place(hidden, s.proj.data(), n * h);
}

// Rows [n] at cache slots [start, start + n) (start + tree->first with a tree, whose rows then
// attend along their paths), rotated by `positions` (Llama) or biased by `alibi` (BLOOM).
void block_forward(const ModelConfig& c, const BlockWeights& w, const double* inv_freq, const float* alibi,
                   float* hidden, std::int64_t n, std::int64_t start, const std::int64_t* positions,
                   float* keys, float* values, std::int64_t capacity, Scratch& s, const TreeRows* tree = nullptr) {
  if (c.family == ModelFamily::kBloom) {
    return bloom_block_forward(c, w, alibi, hidden, n, start, keys, values, capacity, s, tree);
  }
  const std::int64_t h = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  auto products = [&](const float* x, std::span<const WeightView> ws, std::span<float* const> ys) {
    block_products(x, n, tree != nullptr, ws, ys);
  };
  rmsnorm(hidden, n, h, w.input_norm.data, eps, s.normed.data());
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {s.q.data(), s.k.data(), s.v.data()};
  products(s.normed.data(), qkv, qkv_out);
  if (c.attention_bias) {
    add_bias(s.q.data(), n, c.q_size(), w.q_bias.data);
    add_bias(s.k.data(), n, c.kv_size(), w.k_bias.data);
    add_bias(s.v.data(), n, c.kv_size(), w.v_bias.data);
  }
  rope_rotate_half(s.q.data(), n, c.num_heads, c.head_dim, positions, inv_freq);
  rope_rotate_half(s.k.data(), n, c.num_kv_heads, c.head_dim, positions, inv_freq);
  const std::int64_t slot = tree ? start + tree->first : start;
  store_kv(s.k.data(), n, slot, c.num_kv_heads, c.head_dim, capacity, keys);
  store_kv(s.v.data(), n, slot, c.num_kv_heads, c.head_dim, capacity, values);
  const AttentionDims dims{c.num_heads, c.num_kv_heads, c.head_dim};
  if (tree) {
    attention_tree(s.q.data(), tree->first, n, start, tree->parents, keys, values, capacity, dims, s.attn.data(), nullptr,
                   c.sliding_window);
  } else {
    attention_causal(s.q.data(), n, start, keys, values, capacity, dims, s.attn.data(), nullptr, c.sliding_window);
  }
  float* const proj_out[] = {s.proj.data()};
  products(s.attn.data(), std::span(&w.o_proj.view, 1), proj_out);
  add_in_place(hidden, s.proj.data(), n * h);

  rmsnorm(hidden, n, h, w.post_attention_norm.data, eps, s.normed.data());
  const WeightView gate_up[] = {w.gate_proj.view, w.up_proj.view};
  float* const gate_up_out[] = {s.gate.data(), s.up.data()};
  products(s.normed.data(), gate_up, gate_up_out);
  silu_mul(s.gate.data(), s.up.data(), n * c.intermediate_size);
  products(s.gate.data(), std::span(&w.down_proj.view, 1), proj_out);
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
  if (config.family == ModelFamily::kBloom) stack.alibi_ = alibi_slopes(config.num_heads);
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
    block_forward(config_, blocks_[static_cast<std::size_t>(first - first_ + i)], inv_freq_.data(), alibi_.empty() ? nullptr : alibi_.data(), hidden, n, start,
                  positions.data(), cache.keys(i), cache.values(i), cache.capacity(), scratch);
  }
  cache.set_length(start + n);
}

void BlockStack::forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents, KvCache& cache,
                              std::int64_t first_block) const {
  SEPAL_CHECK(first_block >= first_ && first_block + cache.blocks() <= last_ && cache.blocks() > 0 &&
              cache.kv_heads() == config_.num_kv_heads && cache.head_dim() == config_.head_dim,
              "cache does not belong to this block range");
  const auto nodes = static_cast<std::int64_t>(parents.size());
  const std::int64_t first = nodes - n;
  if (n <= 0) return;
  if (first < 0) fail("a tree step of ", n, " nodes has ", nodes, " parents");
  const std::int64_t start = cache.length();
  std::vector<std::int64_t> depth(static_cast<std::size_t>(nodes));
  for (std::int64_t i = 0; i < nodes; ++i) {
    const std::int32_t parent = parents[static_cast<std::size_t>(i)];
    if (parent < -1 || parent >= i) fail("tree node ", i, " has parent ", parent, ", not an earlier node");
    depth[i] = parent < 0 ? 0 : depth[parent] + 1;
  }
  if (start + nodes > cache.capacity()) {
    fail("a tree of ", nodes, " nodes after position ", start, " passes the session's ", cache.capacity(), " slots");
  }
  std::vector<std::int64_t> positions(static_cast<std::size_t>(n));
  for (std::int64_t t = 0; t < n; ++t) positions[t] = start + depth[first + t];
  Scratch scratch(config_, n);
  const TreeRows tree{parents.data(), first};
  for (std::int64_t i = 0; i < cache.blocks(); ++i) {
    block_forward(config_, blocks_[static_cast<std::size_t>(first_block - first_ + i)], inv_freq_.data(), alibi_.empty() ? nullptr : alibi_.data(), hidden, n, start,
                  positions.data(), cache.keys(i), cache.values(i), cache.capacity(), scratch, &tree);
  }
}

}  // namespace sepal

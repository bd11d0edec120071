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
#include "model/arch/architectures.h"
#include "model/block_adapters.h"
#include "model/device_blocks.h"

namespace sepal {
namespace {

void block_forward(const ModelConfig& c, const BlockWeights& w, const double* inv_freq, const float* alibi,
                   float* hidden, std::int64_t n, std::int64_t start, const std::int64_t* positions,
                   KvCache& cache, std::int64_t block, Scratch& s, const TreeRows* tree, const BlockAdapters* adapters) {
  const BlockCall call{c, w, inv_freq, alibi, hidden, n, start, positions, cache.keys(block), cache.values(block),
                       cache.capacity(block), cache.held_from(block), s, tree, adapters};
  if (c.family == ModelFamily::kBloom) return bloom_block_forward(call);
  llama_block_forward(call);
}

}  // namespace

void BlockStack::check_adapters(const BlockAdapters* adapters, std::int64_t first, std::int64_t count) const {
  if (!adapters) return;
  if (first < adapters->first || first + count > adapters->first + adapters->blocks) {
    fail("adapters for blocks [", adapters->first, ", ", adapters->first + adapters->blocks, ") do not cover blocks [", first,
         ", ", first + count, ")");
  }
  validate(adapters->shape, config_);
}

BlockStack BlockStack::load(const Checkpoint& checkpoint, const ModelConfig& config,
                            std::int64_t first, std::int64_t last,
                            const WeightLoading& loading) {
  if (first < 0 || last > config.num_layers || first >= last) {
    fail("block range [", first, ", ", last, ") is not within the model's ", config.num_layers,
         " blocks");
  }
  if (loading.dtype == DType::kF16) fail("weights can be held as f32, bf16 or int8, not f16");
  if (!kv_dtype_supported(loading.kv_dtype)) fail("key/value caches can be held as f32 or bf16, not ", dtype_name(loading.kv_dtype));
  BlockStack stack;
  stack.kv_dtype_ = loading.kv_dtype;
  stack.config_ = config;
  stack.first_ = first;
  stack.last_ = last;
  for (std::int64_t layer = first; layer < last; ++layer) {
    stack.blocks_.push_back(load_block_weights(checkpoint, config, layer, loading));
  }
  stack.inv_freq_ = rope_tables(config);
  if (config.family == ModelFamily::kBloom) stack.alibi_ = alibi_slopes(config.num_heads);
  return stack;
}

void BlockStack::place_on(std::shared_ptr<Backend> backend) {
  SEPAL_CHECK(backend && !device_, "blocks placed twice");
  if (kv_dtype_ != DType::kF32) fail("key/value caches on a device are f32; ", dtype_name(kv_dtype_), " caches are CPU only");
  if (config_.mixture_of_experts()) {
    fail("a mixture of experts (", config_.architecture, ") runs on the CPU only; its blocks cannot go on ",
         device_name(backend->info().device));
  }
  device_ = std::make_shared<const DeviceBlockStack>(config_, first_, blocks_, inv_freq_, alibi_, std::move(backend));
  blocks_.clear();
  blocks_.shrink_to_fit();
}

Device BlockStack::device() const { return device_ ? device_->backend().info().device : Device{}; }

Backend* BlockStack::backend() const { return device_ ? &device_->backend() : nullptr; }

void BlockStack::check_on_cpu(const char* what) const {
  if (device_) fail(what, " run on the CPU only; these blocks are on ", device_name(device()));
}

const BlockWeights& BlockStack::block_weights(std::int64_t layer) const {
  check_on_cpu("reading the weights back");
  SEPAL_CHECK(layer >= first_ && layer < last_, "block ", layer, " is not held here");
  return blocks_[static_cast<std::size_t>(layer - first_)];
}

std::int64_t BlockStack::weight_bytes() const {
  if (device_) return device_->weight_bytes();
  std::int64_t total = 0;
  for (const auto& b : blocks_) total += b.bytes();
  return total;
}

std::int64_t BlockStack::step_working_bytes(std::int64_t n) const {
  const ModelConfig& c = config_;
  const std::int64_t dense = c.any_dense_block() ? 2 * c.intermediate_size : 0;
  const std::int64_t experts = c.mixture_of_experts() ? c.num_experts + 2 * c.hidden_size + 2 * c.moe_intermediate_size : 0;
  const std::int64_t scratch = 2 * c.hidden_size + 2 * c.q_size() + 2 * c.kv_size() + dense + experts;
  const std::int64_t step_io = 2 * c.hidden_size;                                    // decoded input, encoded output
  const std::int64_t int8_copies = 5 * std::max(c.hidden_size, c.widest_mlp()) / 4;  // codes + inlier copy
  return n * (scratch + step_io + int8_copies) * static_cast<std::int64_t>(sizeof(float));
}

KvCache BlockStack::new_cache(std::int64_t capacity) const {
  if (capacity <= 0 || capacity > config_.max_position_embeddings) {
    fail("session length ", capacity, " must be between 1 and max_position_embeddings (",
         config_.max_position_embeddings, ")");
  }
  return new_cache(capacity, first_, last_);
}

KvCache BlockStack::new_cache(std::int64_t capacity, std::int64_t first, std::int64_t last, KvKeep keep) const {
  if (capacity <= 0 || capacity > config_.max_position_embeddings) {
    fail("session length ", capacity, " must be between 1 and max_position_embeddings (",
         config_.max_position_embeddings, ")");
  }
  if (first < first_ || last > last_ || first >= last) {
    fail("blocks [", first, ", ", last, ") are not a part of the served blocks [", first_, ", ", last_, ")");
  }
  if (device_) return device_->new_cache(capacity, first, last, keep == KvKeep::kWindow ? windows(first, last) : std::vector<std::int64_t>{});
  return KvCache(last - first, config_.num_kv_heads, config_.head_dim, capacity, kv_dtype_, windows(first, last), keep);
}

std::vector<std::int64_t> BlockStack::windows(std::int64_t first, std::int64_t last) const {
  std::vector<std::int64_t> windows;
  for (std::int64_t layer = first; layer < last; ++layer) windows.push_back(config_.window_of(layer));
  return windows;
}

void BlockStack::forward(float* hidden, std::int64_t n, KvCache& cache) const {
  forward(hidden, n, cache, first_);
}

void BlockStack::forward(float* hidden, std::int64_t n, KvCache& cache, std::int64_t first,
                         const DeepPrompts* prompts, const BlockAdapters* adapters) const {
  SEPAL_CHECK(first >= first_ && first + cache.blocks() <= last_ && cache.blocks() > 0 &&
              cache.kv_heads() == config_.num_kv_heads && cache.head_dim() == config_.head_dim,
              "cache does not belong to this block range");
  SEPAL_CHECK(cache.on_device() == (device_ != nullptr), "a cache of another device");
  if (n <= 0) return;
  check_adapters(adapters, first, cache.blocks());
  const std::int64_t start = cache.length();
  if (start + n > cache.max_positions()) {
    fail("positions [", start, ", ", start + n, ") pass the session's length of ",
         cache.max_positions(), " positions");
  }
  if (device_) return device_->forward(hidden, n, cache, first, prompts, adapters);  // reserves a part at a time
  cache.reserve(start + n);
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
    block_forward(config_, blocks_[static_cast<std::size_t>(first - first_ + i)], inv_freq_of(first + i, cache.max_positions()),
                  alibi_.empty() ? nullptr : alibi_.data(), hidden, n, start, positions.data(), cache, i, scratch, nullptr,
                  adapters);
  }
  cache.set_length(start + n);
}

void BlockStack::forward_batch(std::span<const BatchedStep> steps, std::int64_t first, std::int64_t blocks) const {
  if (first < first_ || first + blocks > last_ || blocks <= 0) {
    fail("blocks [", first, ", ", first + blocks, ") are not a part of the served blocks [", first_, ", ", last_, ")");
  }
  const std::int64_t h = config_.hidden_size;
  std::int64_t rows = 0;
  std::vector<RowSegment> segments;
  for (std::size_t j = 0; j < steps.size(); ++j) {
    const BatchedStep& step = steps[j];
    SEPAL_CHECK(step.cache && step.hidden, "a batched step without rows or cache");
    KvCache& cache = *step.cache;
    if (cache.blocks() != blocks || cache.kv_heads() != config_.num_kv_heads || cache.head_dim() != config_.head_dim) {
      fail("batched step ", j, ": its cache does not belong to blocks [", first, ", ", first + blocks, ")");
    }
    if (step.n < 1 || step.n > kStreamingMaxTokens) {
      fail("batched step ", j, " has ", step.n, " rows; a batched step has 1 to ", kStreamingMaxTokens);
    }
    if (cache.length() + step.n > cache.max_positions()) {
      fail("batched step ", j, ": positions [", cache.length(), ", ", cache.length() + step.n, ") pass the session's length of ",
           cache.max_positions(), " positions");
    }
    for (std::size_t i = 0; i < j; ++i) {
      if (steps[i].cache == step.cache) fail("batched steps ", i, " and ", j, " share a cache");
    }
    SEPAL_CHECK(cache.on_device() == (device_ != nullptr), "a cache of another device");
    check_adapters(step.adapters, first, blocks);
    cache.reserve(cache.length() + step.n);
    segments.push_back(RowSegment{rows, step.n, cache.length(), {}, {}, 0, 0, step.adapters, nullptr});
    rows += step.n;
  }
  if (rows == 0) return;
  if (device_) return device_->forward_batch(steps, first);
  std::vector<float> hidden(static_cast<std::size_t>(rows * h));
  std::vector<std::int64_t> positions(static_cast<std::size_t>(rows));
  for (std::size_t j = 0; j < steps.size(); ++j) {
    const RowSegment& seg = segments[j];
    std::copy(steps[j].hidden, steps[j].hidden + seg.n * h, hidden.begin() + seg.row * h);
    std::iota(positions.begin() + seg.row, positions.begin() + seg.row + seg.n, seg.start);
  }
  Scratch scratch(config_, rows);
  for (std::int64_t i = 0; i < blocks; ++i) {
    for (std::size_t j = 0; j < steps.size(); ++j) {
      RowSegment& seg = segments[j];
      seg.keys = steps[j].cache->keys(i);
      seg.values = steps[j].cache->values(i);
      seg.capacity = steps[j].cache->capacity(i);
      seg.held_from = steps[j].cache->held_from(i);
      seg.inv_freq = inv_freq_of(first + i, steps[j].cache->max_positions());
      // The deep prompts' rows that fall in this step, as forward() adds them.
      if (const DeepPrompts* p = steps[j].prompts) {
        const std::int64_t from = std::max(seg.start, p->offset), to = std::min(seg.start + seg.n, p->offset + p->count);
        if (from < to) {
          add_in_place(hidden.data() + (seg.row + from - seg.start) * h, p->values + (i * p->count + from - p->offset) * h,
                       (to - from) * h);
        }
      }
    }
    // Each segment rotates with its session's table (seg.inv_freq).
    const BlockCall call{config_, blocks_[static_cast<std::size_t>(first - first_ + i)], nullptr,
                         alibi_.empty() ? nullptr : alibi_.data(), hidden.data(), rows, 0, positions.data(), {}, {}, 0,
                         0, scratch, nullptr, nullptr, segments};
    if (config_.family == ModelFamily::kBloom) bloom_block_forward(call);
    else llama_block_forward(call);
  }
  for (std::size_t j = 0; j < steps.size(); ++j) {
    const RowSegment& seg = segments[j];
    std::copy(hidden.begin() + seg.row * h, hidden.begin() + (seg.row + seg.n) * h, steps[j].hidden);
    steps[j].cache->set_length(seg.start + seg.n);
  }
}

void BlockStack::forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents, KvCache& cache,
                              std::int64_t first_block, const BlockAdapters* adapters) const {
  SEPAL_CHECK(first_block >= first_ && first_block + cache.blocks() <= last_ && cache.blocks() > 0 &&
              cache.kv_heads() == config_.num_kv_heads && cache.head_dim() == config_.head_dim,
              "cache does not belong to this block range");
  const auto nodes = static_cast<std::int64_t>(parents.size());
  const std::int64_t first = nodes - n;
  if (n <= 0) return;
  if (first < 0) fail("a tree step of ", n, " nodes has ", nodes, " parents");
  check_adapters(adapters, first_block, cache.blocks());
  const std::int64_t start = cache.length();
  std::vector<std::int64_t> depth(static_cast<std::size_t>(nodes));
  for (std::int64_t i = 0; i < nodes; ++i) {
    const std::int32_t parent = parents[static_cast<std::size_t>(i)];
    if (parent < -1 || parent >= i) fail("tree node ", i, " has parent ", parent, ", not an earlier node");
    depth[i] = parent < 0 ? 0 : depth[parent] + 1;
  }
  if (start + nodes > cache.max_positions()) {
    fail("a tree of ", nodes, " nodes after position ", start, " passes the session's ", cache.max_positions(), " slots");
  }
  if (device_ && nodes > KvCache::kDeviceStepRows) {
    fail("a tree of ", nodes, " nodes; on a device a tree has at most ", KvCache::kDeviceStepRows);
  }
  cache.reserve(start + nodes);
  std::vector<std::int64_t> positions(static_cast<std::size_t>(n));
  for (std::int64_t t = 0; t < n; ++t) positions[t] = start + depth[first + t];
  if (device_) return device_->forward_tree(hidden, n, parents, positions, cache, first_block, adapters);
  Scratch scratch(config_, n);
  const TreeRows tree{parents.data(), first};
  for (std::int64_t i = 0; i < cache.blocks(); ++i) {
    block_forward(config_, blocks_[static_cast<std::size_t>(first_block - first_ + i)],
                  inv_freq_of(first_block + i, cache.max_positions()), alibi_.empty() ? nullptr : alibi_.data(), hidden, n,
                  start, positions.data(), cache, i, scratch, &tree, adapters);
  }
}

}  // namespace sepal

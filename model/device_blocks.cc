#include "model/device_blocks.h"

#include <algorithm>
#include <numeric>

#include "kernels/error.h"
#include "model/arch/architectures.h"
#include "model/arch/device_parts.h"
#include "model/rope_tables.h"

namespace sepal {
namespace {

// Long prompts run in calls of at most this many rows, so that a session's working memory stays
// bounded (generation and hosts already send prompts in chunks of this size), and its cache's
// windows take steps of as many.
constexpr std::int64_t kMaxRowsPerCall = KvCache::kDeviceStepRows;

DeviceVector upload_vector(Backend& backend, const HeldVector& v) {
  if (!v.data) return {};
  DeviceVector out;
  out.storage = backend.upload(v.data, v.size);
  out.data = static_cast<const float*>(out.storage.get());
  return out;
}

DeviceMatrix upload_matrix(Backend& backend, const HeldMatrix& m) {
  if (!m.view.data) return {};
  return backend.upload_matrix(m.view);
}

void device_block_forward(const DeviceBlockCall& call) {
  if (call.config.family == ModelFamily::kBloom) return bloom_device_block_forward(call);
  llama_device_block_forward(call);
}

}  // namespace

const double* DeviceBlockStack::inv_freq_of(std::int64_t layer, std::int64_t session_positions) const {
  return static_cast<const double*>(inv_freq_.get()) + rope_table_offset(config_, layer, session_positions);
}

DeviceBlockStack::DeviceBlockStack(const ModelConfig& config, std::int64_t first, const std::vector<BlockWeights>& weights,
                                   std::span<const double> inv_freq, std::span<const float> alibi,
                                   std::shared_ptr<Backend> backend)
    : config_(config), first_(first), last_(first + static_cast<std::int64_t>(weights.size())), backend_(std::move(backend)) {
  SEPAL_CHECK(backend_ != nullptr);
  Backend& b = *backend_;
  for (const BlockWeights& w : weights) {
    DeviceBlockWeights d;
    d.layer = w.layer;
    d.input_norm = upload_vector(b, w.input_norm);
    d.post_attention_norm = upload_vector(b, w.post_attention_norm);
    d.input_norm_bias = upload_vector(b, w.input_norm_bias);
    d.post_attention_norm_bias = upload_vector(b, w.post_attention_norm_bias);
    d.q_proj = upload_matrix(b, w.q_proj);
    d.k_proj = upload_matrix(b, w.k_proj);
    d.v_proj = upload_matrix(b, w.v_proj);
    d.o_proj = upload_matrix(b, w.o_proj);
    d.gate_proj = upload_matrix(b, w.gate_proj);
    d.up_proj = upload_matrix(b, w.up_proj);
    d.down_proj = upload_matrix(b, w.down_proj);
    d.q_bias = upload_vector(b, w.q_bias);
    d.k_bias = upload_vector(b, w.k_bias);
    d.v_bias = upload_vector(b, w.v_bias);
    d.o_bias = upload_vector(b, w.o_bias);
    d.up_bias = upload_vector(b, w.up_bias);
    d.down_bias = upload_vector(b, w.down_bias);
    d.q_norm = upload_vector(b, w.q_norm);
    d.k_norm = upload_vector(b, w.k_norm);
    d.attention_out_norm = upload_vector(b, w.attention_out_norm);
    d.mlp_out_norm = upload_vector(b, w.mlp_out_norm);
    weight_bytes_ += w.bytes();
    blocks_.push_back(std::move(d));
  }
  inv_freq_ = b.upload(inv_freq.data(), static_cast<std::int64_t>(inv_freq.size()));
  if (!alibi.empty()) alibi_ = b.upload(alibi.data(), static_cast<std::int64_t>(alibi.size()));
}

KvCache DeviceBlockStack::new_cache(std::int64_t capacity, std::int64_t first, std::int64_t last,
                                    std::vector<std::int64_t> windows) const {
  SEPAL_CHECK(first >= first_ && last <= last_ && first < last && capacity > 0);
  return KvCache(last - first, config_.num_kv_heads, config_.head_dim, capacity, backend_, std::move(windows));
}

void DeviceBlockStack::ensure_scratch(std::int64_t rows, std::int64_t rank) const {
  DeviceScratch& s = scratch_;
  if (s.rows >= rows && s.rank >= rank) return;
  rows = std::max(rows, s.rows);
  rank = std::max(rank, s.rank);
  const ModelConfig& c = config_;
  const std::int64_t widest = std::max({c.hidden_size, c.q_size(), c.kv_size(), c.intermediate_size});
  const std::int64_t sizes[] = {c.hidden_size, c.hidden_size, c.q_size(), c.kv_size(), c.kv_size(), c.q_size(),
                                c.hidden_size, c.intermediate_size, c.intermediate_size, rank, rank > 0 ? widest : 0};
  std::int64_t floats = 0;
  for (const std::int64_t size : sizes) floats += (rows * size + 63) / 64 * 64;  // each buffer 256-byte aligned
  s = DeviceScratch{};
  s.storage = backend_->allocate(floats * 4 + rows * 8);
  float* next = static_cast<float*>(s.storage.get());
  float** buffers[] = {&s.hidden, &s.normed, &s.q, &s.k, &s.v, &s.attn, &s.proj, &s.gate, &s.up, &s.lora_u, &s.lora_v};
  for (std::size_t i = 0; i < std::size(buffers); ++i) {
    *buffers[i] = next;
    next += (rows * sizes[i] + 63) / 64 * 64;
  }
  s.positions = reinterpret_cast<std::int64_t*>(next);
  s.rows = rows;
  s.rank = rank;
}

float* DeviceBlockStack::staging(std::int64_t floats) const {
  if (floats > staging_floats_) {
    staging_.reset();  // the old buffer goes first
    staging_ = backend_->allocate(floats * 4);
    staging_floats_ = floats;
  }
  return static_cast<float*>(staging_.get());
}

namespace {

// The largest LoRA rank of `adapters` (0 for none, or PEQA).
std::int64_t lora_rank(const BlockAdapters* adapters) {
  return adapters && adapters->shape.method == AdapterMethod::kLora ? adapters->shape.rank : 0;
}

// A session's deep prompts (where the call's positions [start, end) meet them) and adapters,
// copied for one call into the stack's staging memory on the device (no allocation per step).
struct SessionOnDevice {
  const float* prompt_values = nullptr;  // in the backend's memory; null where the call needs none
  DeviceAdapters adapters;

  static bool wants_prompts(std::int64_t start, std::int64_t end, const DeepPrompts* prompts) {
    return prompts && prompts->count > 0 && start < prompts->offset + prompts->count && end > prompts->offset;
  }
  static std::int64_t aligned(std::int64_t floats) { return (floats + 63) / 64 * 64; }
  // Staging floats the call needs: the prompts', then the adapters'.
  static std::int64_t floats(const ModelConfig& c, std::int64_t blocks, std::int64_t start, std::int64_t end,
                             const DeepPrompts* prompts, const BlockAdapters* host) {
    return (wants_prompts(start, end, prompts) ? aligned(blocks * prompts->count * c.hidden_size) : 0) +
           (host ? aligned(host->blocks * host->shape.values_per_block(c)) : 0);
  }
  // Copies them to `at` (floats() of the backend's memory).
  SessionOnDevice(Backend& b, const ModelConfig& c, std::int64_t blocks, std::int64_t start, std::int64_t end,
                  const DeepPrompts* prompts, const BlockAdapters* host, float* at) {
    if (wants_prompts(start, end, prompts)) {
      const std::int64_t count = blocks * prompts->count * c.hidden_size;
      b.copy_in(at, prompts->values, count * 4);
      prompt_values = at;
      at += aligned(count);
    }
    if (host) {
      b.copy_in(at, host->values, host->blocks * host->shape.values_per_block(c) * 4);
      adapters = DeviceAdapters{host, at};
    }
  }
  const DeviceAdapters* adapters_or_null() const { return adapters.host ? &adapters : nullptr; }
  // Adds block i's prompt rows that fall in positions [start, start + n) of rows `hidden` (in the
  // backend's memory), as BlockStack::forward adds them.
  void add_prompt(Backend& b, const ModelConfig& c, const DeepPrompts* prompts, std::int64_t i, std::int64_t start,
                  std::int64_t n, float* hidden) const {
    if (!prompt_values) return;
    const std::int64_t from = std::max(start, prompts->offset), to = std::min(start + n, prompts->offset + prompts->count);
    if (from >= to) return;
    const std::int64_t h = c.hidden_size;
    b.add_in_place(hidden + (from - start) * h, prompt_values + (i * prompts->count + from - prompts->offset) * h,
                   (to - from) * h);
  }
};

}  // namespace

void DeviceBlockStack::forward(float* hidden, std::int64_t n, KvCache& cache, std::int64_t first, const DeepPrompts* prompts,
                               const BlockAdapters* adapters) const {
  SEPAL_CHECK(cache.on_device() && first >= first_ && first + cache.blocks() <= last_ &&
                  cache.length() + n <= cache.max_positions(),
              "the cache does not belong to these blocks on the device");
  if (n <= 0) return;
  const std::int64_t h = config_.hidden_size;
  const std::lock_guard lock(backend_->turn());
  const std::int64_t start_all = cache.length();
  float* staged = staging(SessionOnDevice::floats(config_, cache.blocks(), start_all, start_all + n, prompts, adapters));
  const SessionOnDevice session(*backend_, config_, cache.blocks(), start_all, start_all + n, prompts, adapters, staged);
  for (std::int64_t done = 0; done < n;) {
    const std::int64_t rows = std::min(kMaxRowsPerCall, n - done);
    ensure_scratch(std::max(rows, std::min(n, kMaxRowsPerCall)), lora_rank(adapters));
    const DeviceScratch& s = scratch_;
    const std::int64_t start = cache.length();
    cache.reserve(start + rows);  // a window's positions move down within its arrays
    std::vector<std::int64_t> positions(static_cast<std::size_t>(rows));
    std::iota(positions.begin(), positions.end(), start);
    backend_->copy_in(s.positions, positions.data(), rows * 8);
    backend_->copy_in(s.hidden, hidden + done * h, rows * h * 4);
    for (std::int64_t i = 0; i < cache.blocks(); ++i) {
      session.add_prompt(*backend_, config_, prompts, i, start, rows, s.hidden);
      const DeviceBlockCall call{config_,
                                 blocks_[static_cast<std::size_t>(first - first_ + i)],
                                 *backend_,
                                 inv_freq_of(first + i, cache.max_positions()),
                                 static_cast<const float*>(alibi_.get()),
                                 s.hidden,
                                 rows,
                                 start,
                                 cache.keys_f32(i),
                                 cache.values_f32(i),
                                 cache.capacity(i),
                                 cache.held_from(i),
                                 s,
                                 {},
                                 session.adapters_or_null()};
      device_block_forward(call);
    }
    backend_->copy_out(hidden + done * h, s.hidden, rows * h * 4);
    cache.set_length(start + rows);
    done += rows;
  }
}

void DeviceBlockStack::forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents,
                                    std::span<const std::int64_t> positions, KvCache& cache, std::int64_t first,
                                    const BlockAdapters* adapters) const {
  SEPAL_CHECK(cache.on_device() && first >= first_ && first + cache.blocks() <= last_ &&
                  static_cast<std::int64_t>(positions.size()) == n && n <= kMaxRowsPerCall,
              "a tree step's cache does not belong to these blocks on the device");
  if (n <= 0) return;
  const std::int64_t h = config_.hidden_size, nodes = static_cast<std::int64_t>(parents.size());
  const std::lock_guard lock(backend_->turn());
  // The parents, then the adapters' values, in the staging memory.
  const std::int64_t parent_floats = (nodes + 63) / 64 * 64;
  float* staged = staging(parent_floats + SessionOnDevice::floats(config_, cache.blocks(), 0, 0, nullptr, adapters));
  backend_->copy_in(staged, parents.data(), nodes * 4);
  const auto* device_parents = reinterpret_cast<const std::int32_t*>(staged);
  const SessionOnDevice session(*backend_, config_, cache.blocks(), 0, 0, nullptr, adapters, staged + parent_floats);
  ensure_scratch(n, lora_rank(adapters));
  const DeviceScratch& s = scratch_;
  backend_->copy_in(s.positions, positions.data(), n * 8);
  backend_->copy_in(s.hidden, hidden, n * h * 4);
  const std::int64_t start = cache.length();
  for (std::int64_t i = 0; i < cache.blocks(); ++i) {
    DeviceBlockCall call{config_,
                         blocks_[static_cast<std::size_t>(first - first_ + i)],
                         *backend_,
                         inv_freq_of(first + i, cache.max_positions()),
                         static_cast<const float*>(alibi_.get()),
                         s.hidden,
                         n,
                         start,
                         cache.keys_f32(i),
                         cache.values_f32(i),
                         cache.capacity(i),
                         cache.held_from(i),
                         s,
                         {},
                         session.adapters_or_null()};
    call.tree_parents = device_parents;
    call.tree_first = nodes - n;
    device_block_forward(call);
  }
  backend_->copy_out(hidden, s.hidden, n * h * 4);
}

void DeviceBlockStack::forward_batch(std::span<const BatchedStep> steps, std::int64_t first) const {
  const std::int64_t h = config_.hidden_size;
  std::int64_t rows = 0;
  for (const BatchedStep& step : steps) rows += step.n;
  if (rows == 0) return;
  const std::int64_t blocks = steps.front().cache->blocks();
  std::vector<float> hidden(static_cast<std::size_t>(rows * h));
  std::vector<std::int64_t> positions(static_cast<std::size_t>(rows));
  std::vector<DeviceSegment> segments;
  std::int64_t rank = 0;
  for (const BatchedStep& step : steps) {
    rank = std::max(rank, lora_rank(step.adapters));
    SEPAL_CHECK(step.cache->on_device() && step.cache->blocks() == blocks && first >= first_ && first + blocks <= last_ &&
                    step.cache->length() + step.n <= step.cache->max_positions(),
                "a batched step's cache does not belong to these blocks on the device");
    step.cache->reserve(step.cache->length() + step.n);
    const DeviceSegment seg{segments.empty() ? 0 : segments.back().row + segments.back().n, step.n, step.cache->length()};
    std::copy(step.hidden, step.hidden + step.n * h, hidden.begin() + seg.row * h);
    std::iota(positions.begin() + seg.row, positions.begin() + seg.row + seg.n, seg.start);
    segments.push_back(seg);
  }
  const std::lock_guard lock(backend_->turn());
  std::int64_t staged_floats = 0;
  for (const BatchedStep& step : steps) {
    staged_floats += SessionOnDevice::floats(config_, blocks, step.cache->length(), step.cache->length() + step.n,
                                             step.prompts, step.adapters);
  }
  float* staged = staging(staged_floats);
  std::vector<SessionOnDevice> sessions;
  sessions.reserve(steps.size());
  for (const BatchedStep& step : steps) {
    const std::int64_t start = step.cache->length(), end = start + step.n;
    sessions.emplace_back(*backend_, config_, blocks, start, end, step.prompts, step.adapters, staged);
    staged += SessionOnDevice::floats(config_, blocks, start, end, step.prompts, step.adapters);
  }
  for (std::size_t j = 0; j < steps.size(); ++j) segments[j].adapters = sessions[j].adapters_or_null();
  ensure_scratch(rows, rank);
  const DeviceScratch& s = scratch_;
  backend_->copy_in(s.positions, positions.data(), rows * 8);
  backend_->copy_in(s.hidden, hidden.data(), rows * h * 4);
  for (std::int64_t i = 0; i < blocks; ++i) {
    for (std::size_t j = 0; j < steps.size(); ++j) {
      segments[j].keys = steps[j].cache->keys_f32(i);
      segments[j].values = steps[j].cache->values_f32(i);
      segments[j].capacity = steps[j].cache->capacity(i);
      segments[j].held_from = steps[j].cache->held_from(i);
      segments[j].inv_freq = inv_freq_of(first + i, steps[j].cache->max_positions());
      sessions[j].add_prompt(*backend_, config_, steps[j].prompts, i, segments[j].start, segments[j].n,
                             s.hidden + segments[j].row * h);
    }
    const DeviceBlockCall call{config_,
                               blocks_[static_cast<std::size_t>(first - first_ + i)],
                               *backend_,
                               nullptr,  // each segment rotates with its session's table
                               static_cast<const float*>(alibi_.get()),
                               s.hidden,
                               rows,
                               0,
                               nullptr,
                               nullptr,
                               0,
                               0,
                               s,
                               segments};
    device_block_forward(call);
  }
  backend_->copy_out(hidden.data(), s.hidden, rows * h * 4);
  for (std::size_t j = 0; j < steps.size(); ++j) {
    const DeviceSegment& seg = segments[j];
    std::copy(hidden.begin() + seg.row * h, hidden.begin() + (seg.row + seg.n) * h, steps[j].hidden);
    steps[j].cache->set_length(seg.start + seg.n);
  }
}

}  // namespace sepal

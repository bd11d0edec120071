#include "model/device_blocks.h"

#include <numeric>

#include "kernels/error.h"
#include "model/arch/architectures.h"
#include "model/arch/device_parts.h"

namespace sepal {
namespace {

// Long prompts run in calls of at most this many rows, so that a session's working memory stays
// bounded (generation and hosts already send prompts in chunks of this size).
constexpr std::int64_t kMaxRowsPerCall = 512;

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

DeviceBlockStack::DeviceBlockStack(const BlockStack& blocks, std::shared_ptr<Backend> backend)
    : config_(blocks.config()), first_(blocks.first()), last_(blocks.last()), backend_(std::move(backend)) {
  SEPAL_CHECK(backend_ != nullptr);
  Backend& b = *backend_;
  for (std::int64_t layer = first_; layer < last_; ++layer) {
    const BlockWeights& w = blocks.block_weights(layer);
    DeviceBlockWeights d;
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
    weight_bytes_ += w.bytes();
    blocks_.push_back(std::move(d));
  }
  const auto inv_freq = blocks.inverse_frequencies();
  inv_freq_ = b.upload(inv_freq.data(), static_cast<std::int64_t>(inv_freq.size()));
  const auto alibi = blocks.alibi();
  if (!alibi.empty()) alibi_ = b.upload(alibi.data(), static_cast<std::int64_t>(alibi.size()));
}

std::int64_t DeviceBlockStack::session_bytes(std::int64_t capacity) const {
  return 2 * (last_ - first_) * config_.num_kv_heads * capacity * config_.head_dim *
         static_cast<std::int64_t>(sizeof(float));
}

DeviceSession DeviceBlockStack::new_session(std::int64_t capacity) const {
  if (capacity <= 0 || capacity > config_.max_position_embeddings) {
    fail("session length ", capacity, " must be between 1 and max_position_embeddings (",
         config_.max_position_embeddings, ")");
  }
  DeviceSession session;
  session.capacity_ = capacity;
  session.blocks_ = last_ - first_;
  session.block_stride_ = config_.num_kv_heads * capacity * config_.head_dim;
  session.bytes_ = session_bytes(capacity);
  session.cache_ = backend_->allocate(session.bytes_);
  return session;
}

void DeviceBlockStack::ensure_scratch(DeviceSession& session, std::int64_t rows) const {
  DeviceScratch& s = session.scratch_;
  if (s.rows >= rows) return;
  const ModelConfig& c = config_;
  const std::int64_t sizes[] = {c.hidden_size, c.hidden_size, c.q_size(), c.kv_size(), c.kv_size(),
                                c.q_size(), c.hidden_size, c.intermediate_size, c.intermediate_size};
  std::int64_t floats = 0;
  for (const std::int64_t size : sizes) floats += (rows * size + 63) / 64 * 64;  // each buffer 256-byte aligned
  s = DeviceScratch{};
  s.storage = backend_->allocate(floats * 4 + rows * 8);
  float* next = static_cast<float*>(s.storage.get());
  float** buffers[] = {&s.hidden, &s.normed, &s.q, &s.k, &s.v, &s.attn, &s.proj, &s.gate, &s.up};
  for (std::size_t i = 0; i < std::size(buffers); ++i) {
    *buffers[i] = next;
    next += (rows * sizes[i] + 63) / 64 * 64;
  }
  s.positions = reinterpret_cast<std::int64_t*>(next);
  s.rows = rows;
}

void DeviceBlockStack::forward(float* hidden, std::int64_t n, DeviceSession& session) const {
  SEPAL_CHECK(session.blocks_ == last_ - first_ && session.cache_, "the session does not belong to these blocks");
  if (n <= 0) return;
  if (session.length_ + n > session.capacity_) {
    fail("positions [", session.length_, ", ", session.length_ + n, ") pass the session's length of ",
         session.capacity_, " positions");
  }
  const std::int64_t h = config_.hidden_size;
  const std::lock_guard lock(turn_);
  for (std::int64_t done = 0; done < n;) {
    const std::int64_t rows = std::min(kMaxRowsPerCall, n - done);
    ensure_scratch(session, rows);
    const DeviceScratch& s = session.scratch_;
    const std::int64_t start = session.length_;
    std::vector<std::int64_t> positions(static_cast<std::size_t>(rows));
    std::iota(positions.begin(), positions.end(), start);
    backend_->copy_in(s.positions, positions.data(), rows * 8);
    backend_->copy_in(s.hidden, hidden + done * h, rows * h * 4);
    auto* cache = static_cast<float*>(session.cache_.get());
    const std::int64_t blocks = last_ - first_;
    for (std::int64_t i = 0; i < blocks; ++i) {
      const DeviceBlockCall call{config_,
                                 blocks_[static_cast<std::size_t>(i)],
                                 *backend_,
                                 static_cast<const double*>(inv_freq_.get()),
                                 static_cast<const float*>(alibi_.get()),
                                 s.hidden,
                                 rows,
                                 start,
                                 cache + i * session.block_stride_,
                                 cache + (blocks + i) * session.block_stride_,
                                 session.capacity_,
                                 s};
      device_block_forward(call);
    }
    backend_->copy_out(hidden + done * h, s.hidden, rows * h * 4);
    session.length_ = start + rows;
    done += rows;
  }
}

DevicePipeline::DevicePipeline(const DeviceBlockStack& blocks, std::int64_t capacity)
    : blocks_(blocks), session_(blocks.new_session(capacity)) {
  SEPAL_CHECK(blocks.first() == 0 && blocks.last() == blocks.config().num_layers,
              "a pipeline needs every block of the model");
}

}  // namespace sepal

#include "actors/block_host.h"

#include <chrono>
#include <cstring>

#include "kernels/error.h"

namespace sepal {

BlockHost::BlockHost(std::shared_ptr<const BlockStack> blocks, BlockHostOptions options)
    : blocks_(std::move(blocks)), options_(std::move(options)) {}

std::int64_t BlockHost::cache_bytes_used() const {
  std::int64_t total = 0;
  for (const auto& [key, s] : sessions_) total += s.cache.bytes();
  return total;
}

void BlockHost::expire_idle(Scheduler::Clock::time_point now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.last_used > options_.idle_timeout) it = sessions_.erase(it);
    else ++it;
  }
}

Result<BlockHost::Session*> BlockHost::find(const ActorContext& ctx, std::uint64_t session) {
  expire_idle(ctx.system().scheduler().now());
  auto it = sessions_.find({ctx.sender().peer, session});
  if (it == sessions_.end()) {
    return error(StatusCode::kNotFound, "no session ", session, " from peer ", ctx.sender().peer,
                 " (never opened, closed, or idle for longer than the timeout)");
  }
  it->second.last_used = ctx.system().scheduler().now();
  return &it->second;
}

Result<HostInfoReply> BlockHost::handle(ActorContext& ctx, const HostInfo&) {
  expire_idle(ctx.system().scheduler().now());
  return HostInfoReply{options_.model_name, blocks_->first(), blocks_->last(), blocks_->config().hidden_size,
                       tokens_per_second_, static_cast<std::int64_t>(sessions_.size()),
                       options_.cache_budget_bytes - cache_bytes_used()};
}

Result<SessionOpened> BlockHost::handle(ActorContext& ctx, const OpenSession& m) {
  expire_idle(ctx.system().scheduler().now());
  const ModelConfig& c = blocks_->config();
  if (m.max_length <= 0 || m.max_length > c.max_position_embeddings) {
    return error(StatusCode::kInvalidArgument, "session length ", m.max_length,
                 " must be between 1 and max_position_embeddings (", c.max_position_embeddings, ")");
  }
  if (sessions_.count({ctx.sender().peer, m.session})) {
    return error(StatusCode::kInvalidArgument, "session ", m.session, " is already open");
  }
  const std::int64_t needed = 2 * (blocks_->last() - blocks_->first()) * c.num_kv_heads * c.head_dim * m.max_length *
                              static_cast<std::int64_t>(sizeof(float));
  const std::int64_t free = options_.cache_budget_bytes - cache_bytes_used();
  if (needed > free) {
    return error(StatusCode::kResourceExhausted, "a session of ", m.max_length, " positions needs ", needed,
                 " bytes of cache; ", free, " of the host's ", options_.cache_budget_bytes, " are free");
  }
  Session s{blocks_->new_cache(m.max_length), ctx.system().scheduler().now()};
  const std::int64_t bytes = s.cache.bytes();
  sessions_.emplace(SessionKey{ctx.sender().peer, m.session}, std::move(s));
  return SessionOpened{m.session, bytes};
}

Result<StepResult> BlockHost::handle(ActorContext& ctx, const Step& m) {
  auto found = find(ctx, m.session);
  if (!found.is_ok()) return found.status();
  Session& s = *found.value();
  const std::int64_t hidden_size = blocks_->config().hidden_size;
  if (m.hidden.type != ElementType::kF32) {
    return error(StatusCode::kInvalidArgument, "hidden states must be f32, got ", element_type_name(m.hidden.type));
  }
  if (m.hidden.shape.size() != 2 || m.hidden.shape[1] != hidden_size || m.hidden.shape[0] <= 0) {
    std::string shape;
    for (auto d : m.hidden.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    return error(StatusCode::kInvalidArgument, "hidden states must be [n, ", hidden_size, "], got [", shape, "]");
  }
  const std::int64_t n = m.hidden.shape[0];
  if (m.position != s.cache.length()) {
    return error(StatusCode::kInvalidArgument, "step at position ", m.position, " but session ", m.session,
                 " holds ", s.cache.length(), " positions");
  }
  if (m.position + n > s.cache.capacity()) {
    return error(StatusCode::kInvalidArgument, "positions [", m.position, ", ", m.position + n,
                 ") pass the session's length of ", s.cache.capacity());
  }
  // The result is computed in a buffer that the reply shares without another copy.
  auto out = std::make_shared<std::vector<float>>(static_cast<std::size_t>(n * hidden_size));
  std::memcpy(out->data(), m.hidden.data, m.hidden.bytes);
  const auto start = std::chrono::steady_clock::now();
  try {
    blocks_->forward(out->data(), n, s.cache);
  } catch (const Error& e) {
    return error(StatusCode::kInvalidArgument, e.what());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (seconds > 0) {
    const double rate = static_cast<double>(n) / seconds;
    tokens_per_second_ = tokens_per_second_ == 0 ? rate : 0.9 * tokens_per_second_ + 0.1 * rate;
  }
  return StepResult{s.cache.length(),
                    share_vector<float>(ElementType::kF32, {n, hidden_size}, std::shared_ptr<const std::vector<float>>(out))};
}

Result<SessionState> BlockHost::handle(ActorContext& ctx, const Rollback& m) {
  auto found = find(ctx, m.session);
  if (!found.is_ok()) return found.status();
  Session& s = *found.value();
  if (m.length < 0 || m.length > s.cache.length()) {
    return error(StatusCode::kInvalidArgument, "cannot roll session ", m.session, " back to ", m.length,
                 ": it holds ", s.cache.length(), " positions");
  }
  s.cache.truncate(m.length);
  return SessionState{m.session, m.length};
}

Result<SessionState> BlockHost::handle(ActorContext& ctx, const CloseSession& m) {
  auto found = find(ctx, m.session);
  if (!found.is_ok()) return found.status();
  const std::int64_t length = found.value()->cache.length();
  sessions_.erase({ctx.sender().peer, m.session});
  return SessionState{m.session, length};
}

void BlockHost::handle(ActorContext&, const Shutdown& m) {
  sessions_.clear();
  if (options_.on_shutdown) options_.on_shutdown(m.reason);
}

void BlockHost::on_peer_failed(ActorSystem&, PeerId peer, const Status&) {
  // A dead client's sessions would only hold memory until their idle timeout.
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (it->first.first == peer) it = sessions_.erase(it);
    else ++it;
  }
}

}  // namespace sepal

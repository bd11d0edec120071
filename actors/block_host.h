#pragma once
// The block host actor: serves blocks [first, last) of a model to clients' inference sessions.
// Each session owns a KV cache; the caches together stay within a memory budget, and a session
// idle for longer than the idle timeout is freed. Every request that is wrong (unknown session,
// wrong shape or type, positions out of order or past the session's length, a session over
// budget) is answered with an error and the host goes on serving the others.
//
// Thread-safety: an actor; its handlers run one at a time.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "actors/protocol/block_host.h"
#include "model/block_stack.h"
#include "runtime/actor_system.h"

namespace sepal {

/// How a block host runs.
struct BlockHostOptions {
  std::int64_t cache_budget_bytes = std::int64_t{2} << 30;
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
  std::string model_name;
  /// Called (on the actor's thread) when a Shutdown message arrives.
  std::function<void(const std::string& reason)> on_shutdown;
};

/// Serves a BlockStack.
class BlockHost final : public TypedActor<BlockHost, BlockHostProtocol> {
 public:
  BlockHost(std::shared_ptr<const BlockStack> blocks, BlockHostOptions options);
  std::string name() const override { return "block host"; }

  Result<HostInfoReply> handle(ActorContext& ctx, const HostInfo& m);
  Result<SessionOpened> handle(ActorContext& ctx, const OpenSession& m);
  Result<StepResult> handle(ActorContext& ctx, const Step& m);
  Result<SessionState> handle(ActorContext& ctx, const Rollback& m);
  Result<SessionState> handle(ActorContext& ctx, const CloseSession& m);
  void handle(ActorContext& ctx, const Shutdown& m);
  void on_peer_failed(ActorSystem& system, PeerId peer, const Status& why) override;

 private:
  // Sessions are keyed by the client's process and its session id, so clients cannot collide.
  using SessionKey = std::pair<PeerId, std::uint64_t>;
  struct Session {
    KvCache cache;
    Scheduler::Clock::time_point last_used;
  };

  Result<Session*> find(const ActorContext& ctx, std::uint64_t session);
  void expire_idle(Scheduler::Clock::time_point now);
  std::int64_t cache_bytes_used() const;

  std::shared_ptr<const BlockStack> blocks_;
  BlockHostOptions options_;
  std::map<SessionKey, Session> sessions_;
  double tokens_per_second_ = 0;  // exponential average of measured step throughput
};

}  // namespace sepal

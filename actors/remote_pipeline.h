#pragma once
// The client's side of a route: a BlockPipeline whose blocks live in block hosts, stepped in
// order (client relay: hidden states come back to the client between hosts). The same
// generation loop (model/generation.h) then drives one process or a swarm.
//
// Thread-safety: one generation at a time; blocks in request_sync, so not from a handler.

#include <chrono>
#include <vector>

#include "actors/protocol/block_host.h"
#include "model/generation.h"
#include "runtime/actor_system.h"

namespace sepal {

/// One hop of a route: the blocks it runs, the host serving them, and replicas of that host
/// (other hosts with the same blocks) to fail over to.
struct RouteHop {
  ActorRef<BlockHostProtocol> host;
  std::int64_t first = 0;
  std::int64_t last = 0;
  std::vector<ActorRef<BlockHostProtocol>> replicas;
};

/// A session through a chain of hosts that together cover every block once, in order. When a
/// host fails (transport failure, timeout, or its session vanished), the hop moves to a replica:
/// the inputs the hop has seen are replayed there to rebuild its cache, and the step is retried,
/// so the output does not change.
class RemotePipeline final : public BlockPipeline {
 public:
  /// Opens a session of `capacity` positions on every hop. Throws sepal::Error naming the host
  /// and its reason when one refuses.
  RemotePipeline(ActorSystem& system, std::vector<RouteHop> route, std::int64_t capacity, std::uint64_t session,
                 std::chrono::milliseconds timeout = std::chrono::seconds(60));
  ~RemotePipeline() override;
  void forward(float* hidden, std::int64_t n) override;
  std::int64_t length() const override { return length_; }
  /// How many times a hop moved to a replica.
  int failovers() const { return failovers_; }

 private:
  // Opens the session on `host`; the host's range must be the hop's.
  Status open_on(const ActorRef<BlockHostProtocol>& host, const RouteHop& hop);
  // Steps hop `i`, failing over to its replicas as needed.
  Result<TensorPayload> step_hop(std::size_t i, const TensorPayload& input);

  ActorSystem& system_;
  std::vector<RouteHop> route_;
  std::uint64_t session_;
  std::chrono::milliseconds timeout_;
  std::int64_t capacity_;
  std::int64_t length_ = 0;
  std::int64_t hidden_size_ = 0;
  int failovers_ = 0;
  std::vector<std::vector<float>> inputs_;  ///< every input each hop has seen, for replay
};

}  // namespace sepal

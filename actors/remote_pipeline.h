#pragma once
// The client's side of a route: a BlockPipeline whose blocks live in block hosts, so that the same
// generation loop (model/generation.h) drives one process or a swarm. Two modes:
//   - client relay: the client steps each hop in turn and gets each hop's output back;
//   - host-to-host push: the client sends the step to the first host, the hosts forward it along
//     the route, and each also reports its output to the client (kept for replay).
// When a host fails (transport failure, missed heartbeats, timeout, or it left or moved and its
// session vanished), the planner is told (it avoids the host for a while) and gives a new route
// for that hop's blocks; the inputs the hop has seen are replayed there to rebuild the caches and
// the step goes on. Replay sends the very payloads the old hop received, step by step in the
// shapes decoding used (pipelined, not one batch): every kernel then sees the batch it saw
// before (int8 outlier columns and float summation orders depend on the batch), so the rebuilt
// cache is the one decoding built, bit for bit, and the output does not change.
//
// Thread-safety: one generation at a time; blocks in request_sync, so not from a handler.

#include <chrono>
#include <memory>
#include <vector>

#include "actors/protocol/block_host.h"
#include "actors/push_receiver.h"
#include "model/generation.h"
#include "runtime/actor_system.h"

namespace sepal {

/// One hop of a route: blocks [first, last), a part of what `host` serves. A route may use one
/// host for several hops, each with its own session there.
struct RouteHop {
  ActorRef<BlockHostProtocol> host;
  std::int64_t first = 0;
  std::int64_t last = 0;
  std::uint64_t session = 0;  ///< set by the pipeline when it opens the hop
};

/// Where routes come from, and where host failures go.
class RoutePlanner {
 public:
  virtual ~RoutePlanner() = default;
  /// Hops covering blocks [first, last) in order over hosts believed usable (may wait for one).
  /// An error means none appeared within the planner's own bound: final, the step fails with it.
  virtual Result<std::vector<RouteHop>> route(std::int64_t first, std::int64_t last) = 0;
  /// `peer` failed a request: avoid it for a while.
  virtual void report_failure(PeerId peer) = 0;
};

struct RemotePipelineOptions {
  std::chrono::milliseconds timeout{60000};  ///< per request
  /// Non-null: host-to-host push, with outputs arriving here (a PushReceiver feeds it).
  std::shared_ptr<PushInbox> push_inbox;
  int max_failovers = 16;  ///< per step, before giving up
  /// Send hidden states 8-bit blockwise compressed (actors/hidden_codec.h); hosts answer alike.
  bool wire_compression = true;
};

class RemotePipeline final : public BlockPipeline {
 public:
  /// Routes blocks [0, num_blocks) and opens a session of `capacity` positions on every hop.
  /// `session` must be unique among this process's pipelines; the hops' session ids derive from
  /// it. Throws sepal::Error naming the host and its reason when no route can be opened.
  RemotePipeline(ActorSystem& system, RoutePlanner& planner, std::int64_t num_blocks, std::int64_t capacity,
                 std::uint64_t session, RemotePipelineOptions options = {});
  ~RemotePipeline() override;
  void forward(float* hidden, std::int64_t n) override;
  std::int64_t length() const override { return length_; }
  /// How many times a hop moved to other hosts.
  int failovers() const { return failovers_; }
  /// Mean bytes of hidden states a hop sent back per token (each hop's output reaches the client,
  /// in push mode as a copy); 0 before any step.
  double wire_bytes_per_token_hop() const {
    return received_token_hops_ > 0 ? static_cast<double>(received_bytes_) / static_cast<double>(received_token_hops_) : 0.0;
  }
  /// The current route.
  const std::vector<RouteHop>& route() const { return route_; }

 private:
  Status open_on(RouteHop& hop);
  // Replaces hop i by a new route for its blocks, replaying its inputs there. `retryable` is false
  // when there was no route at all (the planner has waited already), true when a host of the new
  // route failed.
  Status replace_hop(std::size_t i, bool& retryable);
  // Sends `steps` to `hop` in order (a few in flight), from position 0; its outputs, one per step.
  Result<std::vector<TensorPayload>> replay(const RouteHop& hop, const std::vector<TensorPayload>& steps);
  // Steps hops i.. in relay mode from `input`; `rollback` first resets them to length_ (after a
  // failed push, when some may have advanced).
  // Hidden states as sent and as the receiver sees them, each payload decoded once.
  struct Hidden {
    TensorPayload payload;
    std::vector<float> values;
  };
  Result<Hidden> relay_from(std::size_t i, Hidden input, bool rollback);
  // The output of hop i for `input` (recording the input), failing over as needed.
  Result<Hidden> step_hop(std::size_t i, const Hidden& input, bool rollback);
  // The values of a payload of n tokens; throws sepal::Error when it is malformed.
  std::vector<float> values(const TensorPayload& t, std::int64_t n) const;
  // A hop's output, checked, decoded and counted.
  Hidden received(const TensorPayload& t, std::int64_t n);
  // The client's input to the first hop (payload only; its values are not needed).
  Hidden encode(const float* hidden, std::int64_t n) const;

  ActorSystem& system_;
  RoutePlanner& planner_;
  RemotePipelineOptions options_;
  std::uint64_t session_;
  std::int64_t capacity_;
  std::int64_t length_ = 0;
  std::int64_t hidden_size_ = 0;
  std::uint64_t tag_ = 0;
  std::uint64_t next_hop_session_ = 0;
  int failovers_ = 0;
  std::int64_t received_bytes_ = 0;
  std::int64_t received_token_hops_ = 0;
  std::vector<RouteHop> route_;
  std::int64_t steps_ = 0;  ///< forward() calls completed
  /// Every input each hop has seen, one payload per completed step, for replay.
  std::vector<std::vector<TensorPayload>> inputs_;
};

}  // namespace sepal

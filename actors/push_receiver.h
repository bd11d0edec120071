#pragma once
// The client's end of host-to-host push: every host of a pushed step sends its output (or its
// error) to the client's PushReceiver actor, which hands it to the PushInbox a RemotePipeline
// waits on. The inbox also learns of failed peers, so a wait ends as soon as a host of the route
// is known dead.
//
// Thread-safety: PushInbox is thread-safe; the actor forwards to it from its handler.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "actors/protocol/block_host.h"
#include "runtime/actor_system.h"

namespace sepal {

class PushInbox {
 public:
  /// What a wait saw: the outputs of hops 0..k-1 that arrived in order, and, when not all did,
  /// why (an error a host reported, a failed host, or a timeout).
  struct Outcome {
    std::vector<TensorPayload> outputs;
    Status status;
    PeerId culprit = 0;  ///< the host that failed or reported the error (0: unknown)
  };

  /// Starts waiting for attempt `tag` of pushed step `request` through hosts `peers` (hop order).
  void begin(std::uint64_t request, std::uint64_t tag, std::vector<PeerId> peers);
  /// Waits until every hop's output arrived, a hop failed, or `timeout` passed; ends the attempt.
  Outcome wait(std::uint64_t request, std::chrono::milliseconds timeout);

  void deliver(const PushedOutput& output);
  void peer_failed(PeerId peer);

 private:
  struct Attempt {
    std::uint64_t tag = 0;
    std::vector<PeerId> peers;
    std::vector<std::optional<TensorPayload>> outputs;
    std::optional<std::pair<PeerId, Status>> failure;
    /// Every hop answered, or one failed: a wait can return.
    bool settled() const {
      return failure.has_value() || std::all_of(outputs.begin(), outputs.end(), [](const auto& o) { return o.has_value(); });
    }
  };
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint64_t, Attempt> attempts_;
  std::set<PeerId> failed_;
};

/// Receives PushedOutput messages into an inbox.
class PushReceiver final : public TypedActor<PushReceiver, PushReceiverProtocol> {
 public:
  explicit PushReceiver(std::shared_ptr<PushInbox> inbox) : inbox_(std::move(inbox)) {}
  std::string name() const override { return "push receiver"; }
  void handle(ActorContext& ctx, const PushedOutput& m);
  void on_peer_failed(ActorSystem& system, PeerId peer, const Status& why) override;

 private:
  std::shared_ptr<PushInbox> inbox_;
};

}  // namespace sepal

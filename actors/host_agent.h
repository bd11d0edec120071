#pragma once
// A block host's dealings with the balancer, as an actor: it announces the host when joining,
// loads the blocks the balancer assigns, then re-announces every period (throughput, sessions,
// blocks served) and follows the balancer's moves by loading the new range and swapping it in.
// Leaving gracefully refuses new work, tells the balancer, and stops announcing. A host that
// cannot load the blocks the balancer moves it to (out of memory, a damaged shard) leaves the same
// way and reports why (`on_failure`), so that the balancer places the blocks elsewhere instead of
// waiting for a move that will not come. Every wait is a timer or a request answered in the
// agent's turn; loading blocks (seconds of reading weights) runs on a thread of its own, whose
// result comes back in the agent's turn.
//
// Thread-safety: an actor (actors/protocol/host_agent.h); the blocking facade
// (actors/blocking_facade.h) offers join and leave to a thread that can wait.

#include <chrono>
#include <functional>
#include <memory>
#include <thread>

#include "actors/block_host.h"
#include "actors/block_placement.h"
#include "actors/protocol/balancer.h"
#include "actors/protocol/host_agent.h"

namespace sepal {

struct HostAgentOptions {
  std::string model;
  std::int64_t num_blocks = 0;
  std::int64_t max_blocks = 0;  ///< how many blocks this host can hold
  double throughput = 0;        ///< declared tokens/s per block, announced as is; 0: measured
  std::chrono::milliseconds announce_period{1000};
  std::chrono::milliseconds request_timeout{10000};
  std::chrono::milliseconds join_retry{100};  ///< between announcements the balancer did not answer
  /// Loads blocks [first, last) (throws sepal::Error on failure); runs on the loading thread.
  std::function<std::shared_ptr<const BlockStack>(BlockRange)> load;
  /// Called in the agent's turn when the host left the swarm because the blocks of a move would
  /// not load (the host serves nothing more); null: nothing is told.
  std::function<void(const Status&)> on_failure;
};

class HostAgent final : public TypedActor<HostAgent, HostAgentProtocol> {
 public:
  /// The agent of `host` (an actor of `system` that outlives it), to be added to `system` under
  /// kHostAgentActorId.
  HostAgent(ActorSystem& system, BlockHost& host, ActorRef<BalancerProtocol> balancer, HostAgentOptions options);
  ~HostAgent() override;

  std::string name() const override { return "host agent"; }
  Result<HostJoined> handle(ActorContext& ctx, const JoinSwarm& m);
  Result<HostLeft> handle(ActorContext& ctx, const LeaveSwarm& m);
  void handle(ActorContext& ctx, const StopAnnouncing& m);

 private:
  using Done = std::function<void(Status)>;
  Announce announcement(bool leaving) const;
  // One announcement; loads and swaps in a new range when the answer asks for one.
  void announce(Done done);
  // Loads `range` on the loading thread and serves it.
  void serve(BlockRange range, Done done);
  void try_join(std::shared_ptr<ReplyHandle<HostJoined>> reply, Scheduler::Clock::time_point deadline, Status last);
  void tick();
  // A move's blocks would not load: leaves the swarm, then tells on_failure.
  void give_up(const Status& why);

  ActorSystem& system_;
  BlockHost& host_;
  ActorRef<BalancerProtocol> balancer_;
  HostAgentOptions options_;
  BlockRange serving_;
  bool busy_ = false;        ///< an announcement (or a load) is under way
  bool announcing_ = false;  ///< periodic announcements run
  bool stopping_ = false;
  bool load_failed_ = false;  ///< the blocks of an assignment would not load
  std::thread loader_;
};

/// Adds an agent for `host` to `system` under kHostAgentActorId.
ActorRef<HostAgentProtocol> add_host_agent(ActorSystem& system, BlockHost& host, ActorRef<BalancerProtocol> balancer,
                                           HostAgentOptions options);

}  // namespace sepal

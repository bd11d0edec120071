#pragma once
// The client driver's route planner over a live swarm: asks the balancer for the block map, asks
// every host it may use for its current blocks and throughput (timing that request as the host's
// round trip), and plans the cheapest route (actors/route_planning.h). A host that failed is
// avoided for a while, twice as long after each repeated failure, unless a block has no other
// host; a host slow to answer is not awaited past a grace once the others make a route. When no
// route exists yet (a block's only host died and the balancer is moving another one there), it
// tries again on a timer with backoff until its deadline. Every wait is a timer of the driver's
// turn; nothing blocks.
//
// Thread-safety: used from the driver's turn only (actors/route_planner.h).

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "actors/protocol/balancer.h"
#include "actors/route_planner.h"
#include "runtime/actor_system.h"

namespace sepal {

struct BalancerRoutePlannerOptions {
  std::chrono::milliseconds request_timeout{10000};
  std::chrono::milliseconds avoid_first{2000};  ///< first failure: avoided this long
  std::chrono::milliseconds avoid_max{60000};
  std::chrono::milliseconds route_wait{30000};  ///< how long route() waits for a route to exist
  std::chrono::milliseconds retry_first{100};
  std::chrono::milliseconds retry_max{2000};
  std::chrono::milliseconds ready_poll{50};     ///< await_ready asks the balancer this often
  /// How long after the first host's answer the others are awaited while those that answered
  /// already make a route.
  std::chrono::milliseconds probe_grace{500};
};

class BalancerRoutePlanner final : public RoutePlanner {
 public:
  /// Plans for the actor `driver` of `system` (its answers run in that actor's turn).
  BalancerRoutePlanner(ActorSystem& system, std::uint32_t driver, ActorRef<BalancerProtocol> balancer,
                       BalancerRoutePlannerOptions options = {});

  void route(std::int64_t first, std::int64_t last, const std::string& numerics, RouteDone done) override;
  void report_failure(PeerId peer) override;
  void await_ready(std::int64_t min_hosts, std::chrono::milliseconds timeout, ReadyDone done) override;

 private:
  using Clock = Scheduler::Clock;
  // One planning attempt over the hosts' current answers; then `done`.
  void try_route(std::int64_t first, std::int64_t last, const std::string& numerics, RouteDone done);
  void retry_route(std::int64_t first, std::int64_t last, const std::string& numerics, Clock::time_point deadline,
                   std::chrono::milliseconds pause, RouteDone done);
  void poll_ready(std::int64_t min_hosts, Clock::time_point deadline, std::chrono::milliseconds timeout, ReadyDone done);
  // The hosts avoided now, the soonest to be forgiven first.
  std::vector<PeerId> avoided() const;

  ActorSystem& system_;
  std::uint32_t driver_;
  ActorRef<BalancerProtocol> balancer_;
  BalancerRoutePlannerOptions options_;
  struct Avoid {
    int failures = 0;
    Clock::time_point until;
  };
  std::map<PeerId, Avoid> avoid_;
};

}  // namespace sepal

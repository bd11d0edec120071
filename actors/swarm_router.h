#pragma once
// The client driver's route planner over a live swarm: asks the balancer for the block map, asks
// every host it may use for its current blocks and throughput (timing that request as the host's
// round trip), and plans the cheapest route (actors/route_planning.h). A host that failed is
// avoided for a while, twice as long after each repeated failure. When no route exists yet (a
// block's only host died and the balancer is moving another one there), it retries with backoff
// until a deadline.
//
// Thread-safety: thread-safe; blocks in requests, so not from a handler.

#include <chrono>
#include <map>
#include <mutex>

#include "actors/protocol/balancer.h"
#include "actors/remote_pipeline.h"
#include "actors/route_planning.h"

namespace sepal {

struct SwarmRouterOptions {
  std::chrono::milliseconds request_timeout{10000};
  std::chrono::milliseconds avoid_first{2000};   ///< first failure: avoided this long
  std::chrono::milliseconds avoid_max{60000};
  std::chrono::milliseconds route_wait{30000};   ///< how long route() waits for a route to exist
  std::chrono::milliseconds retry_first{100};
  std::chrono::milliseconds retry_max{2000};
};

class SwarmRouter final : public RoutePlanner {
 public:
  SwarmRouter(ActorSystem& system, ActorRef<BalancerProtocol> balancer, SwarmRouterOptions options = {});

  Result<std::vector<RouteHop>> route(std::int64_t first, std::int64_t last) override;
  void report_failure(PeerId peer) override;

  /// The balancer's block map.
  Result<BlockMapReply> block_map();
  /// Waits until the swarm is ready to serve: every block has a host, at least `min_hosts` hosts
  /// have announced a throughput, and no move the balancer ordered is still under way (kTimeout
  /// if not). A swarm launched together thus starts generating on its settled placement rather
  /// than replaying a session when the balancer moves a host a moment later.
  Status wait_until_ready(std::int64_t min_hosts, std::chrono::milliseconds timeout);

 private:
  // One planning attempt over the hosts' current answers.
  Result<std::vector<RouteHop>> try_route(std::int64_t first, std::int64_t last);
  std::set<PeerId> avoided();

  ActorSystem& system_;
  ActorRef<BalancerProtocol> balancer_;
  SwarmRouterOptions options_;
  std::mutex mutex_;
  struct Avoid {
    int failures = 0;
    Scheduler::Clock::time_point until;
  };
  std::map<PeerId, Avoid> avoid_;
};

}  // namespace sepal

#pragma once
// Where the client driver's routes come from, and where host failures go. The driver calls a
// planner from its own turn and the planner answers there too (actors/client_driver.h), so a
// planner needs no locks; BalancerRoutePlanner (actors/balancer_route_planner.h) plans over a
// live swarm, tests use fixed routes.
//
// Thread-safety: called from one actor's turn only.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "actors/protocol/balancer.h"
#include "actors/protocol/block_host.h"
#include "runtime/status.h"

namespace sepal {

/// One hop of a route: blocks [first, last), a part of what `host` serves. A route may use one
/// host for several hops.
struct RouteHop {
  ActorRef<BlockHostProtocol> host;
  std::int64_t first = 0;
  std::int64_t last = 0;
  std::string numerics;  ///< as the host answered (HostInfoReply); empty: not known
};

/// "host P [first, last)", for messages.
inline std::string describe_hop(const RouteHop& hop) {
  return "host " + std::to_string(hop.host.address.peer) + " [" + std::to_string(hop.first) + ", " +
         std::to_string(hop.last) + ")";
}

class RoutePlanner {
 public:
  using RouteDone = std::function<void(Result<std::vector<RouteHop>>)>;
  using ReadyDone = std::function<void(Result<BlockMapReply>)>;
  virtual ~RoutePlanner() = default;
  /// Hops covering blocks [first, last) in order over hosts believed usable (the planner may wait
  /// for one to appear). `numerics` (empty: any): a route over hosts that announce these numerics
  /// where one exists (plan_route_like), so that a replacement for a failed hop gives its bits.
  /// `done` runs exactly once, in the driver's turn, possibly before route() returns. An error
  /// means no route appeared within the planner's own bound: it is final.
  virtual void route(std::int64_t first, std::int64_t last, const std::string& numerics, RouteDone done) = 0;
  /// `peer` failed a request: avoid it for a while.
  virtual void report_failure(PeerId peer) = 0;
  /// `done` (once, in the driver's turn) when the swarm can serve: every block has a host, at least
  /// `min_hosts` hosts measured their throughput, no move under way; kTimeout after `timeout`.
  /// A planner with nothing to wait for answers at once with an empty map.
  virtual void await_ready(std::int64_t min_hosts, std::chrono::milliseconds timeout, ReadyDone done) {
    done(BlockMapReply{});
  }
};

}  // namespace sepal

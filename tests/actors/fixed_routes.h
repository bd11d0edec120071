#pragma once
// A route planner with no balancer behind it, for tests: a fixed list of hosts and their blocks.
// It plans over them with plan_route (so replicas are alternatives) and never uses a host that
// failed again, so a host with no replica cannot be replaced (its blocks then have no route).

#include <set>
#include <vector>

#include "actors/route_planner.h"
#include "actors/route_planning.h"

namespace sepal::test {

class FixedRoutes final : public RoutePlanner {
 public:
  /// Each hop names a host and the blocks it serves.
  explicit FixedRoutes(std::vector<RouteHop> hosts) : hosts_(std::move(hosts)) {}
  void route(std::int64_t first, std::int64_t last, const std::string& numerics, RouteDone done) override {
    std::vector<RouteCandidate> candidates;
    for (const auto& h : hosts_) candidates.push_back({h.host.address.peer, {h.first, h.last}, 10.0, 0.001, h.numerics});
    auto planned = plan_route_like(candidates, first, last, numerics, failed_);
    if (!planned.is_ok()) return done(planned.status());
    std::vector<RouteHop> hops;
    for (const auto& p : planned.value()) {
      std::string announced;
      for (const auto& h : hosts_) {
        if (h.host.address.peer == p.peer) announced = h.numerics;
      }
      hops.push_back(RouteHop{ActorRef<BlockHostProtocol>{{p.peer, kBlockHostActorId}}, p.blocks.first, p.blocks.last,
                              announced});
    }
    done(std::move(hops));
  }
  void report_failure(PeerId peer) override { failed_.insert(peer); }
  /// Host `peer` serves [first, last) from now on (a balancer's map after it moved the host).
  void move(PeerId peer, std::int64_t first, std::int64_t last) {
    for (auto& h : hosts_) {
      if (h.host.address.peer == peer) h.first = first, h.last = last;
    }
  }
  const std::set<PeerId>& failed() const { return failed_; }

 private:
  std::vector<RouteHop> hosts_;
  std::set<PeerId> failed_;
};

}  // namespace sepal::test

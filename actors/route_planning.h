#pragma once
// The cheapest chain of hosts through blocks [first, last), as Petals' Dijkstra routing does: a
// hop runs a contiguous part of one host's blocks and costs the host's round-trip time plus the
// time its blocks take (blocks / per-block throughput). Pure functions; the client's router feeds
// them measurements.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "actors/block_placement.h"
#include "runtime/status.h"

namespace sepal {

/// A host as the client sees it.
struct RouteCandidate {
  PeerId peer = 0;
  BlockRange serving;
  double throughput = 0;   ///< tokens/s through one block (<= 0: unknown)
  double rtt_seconds = 0;  ///< measured round trip from the client
  std::string numerics;    ///< what decides its bits besides the model (model/weights.h: describe_numerics)
};

/// One hop of a planned route.
struct PlannedHop {
  PeerId peer = 0;
  BlockRange blocks;
  bool operator==(const PlannedHop&) const = default;
};

/// The cheapest hops covering [first, last) in order, avoiding `avoid`. kNotFound (naming the
/// first block nobody serves) when no chain exists. Hosts of unknown throughput count at the mean
/// of the known ones. Equal costs prefer fewer hops, then lower peer ids.
Result<std::vector<PlannedHop>> plan_route(const std::vector<RouteCandidate>& hosts, std::int64_t first, std::int64_t last,
                                           const std::set<PeerId>& avoid = {});

/// plan_route over the hosts whose numerics are `numerics` when they cover [first, last) (a
/// failed hop's replacement then gives the failed host's bits, and the session its text), over
/// every host otherwise or when `numerics` is empty.
Result<std::vector<PlannedHop>> plan_route_like(const std::vector<RouteCandidate>& hosts, std::int64_t first,
                                                std::int64_t last, const std::string& numerics,
                                                const std::set<PeerId>& avoid = {});

/// The cost plan_route minimises, in seconds, for `route` (used to compare routes in tests).
double route_cost(const std::vector<RouteCandidate>& hosts, const std::vector<PlannedHop>& route);

}  // namespace sepal

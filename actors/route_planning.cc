#include "actors/route_planning.h"

#include <algorithm>
#include <limits>
#include <queue>

namespace sepal {
namespace {

double mean_known_throughput(const std::vector<RouteCandidate>& hosts) {
  double sum = 0;
  int n = 0;
  for (const auto& h : hosts) {
    if (h.throughput > 0) {
      sum += h.throughput;
      ++n;
    }
  }
  return n > 0 ? sum / n : 1.0;
}

double hop_cost(const RouteCandidate& h, std::int64_t blocks, double fallback) {
  const double throughput = h.throughput > 0 ? h.throughput : fallback;
  return std::max(h.rtt_seconds, 0.0) + static_cast<double>(blocks) / throughput;
}

}  // namespace

Result<std::vector<PlannedHop>> plan_route(const std::vector<RouteCandidate>& hosts, std::int64_t first, std::int64_t last,
                                           const std::set<PeerId>& avoid) {
  if (first < 0 || last <= first) return error(StatusCode::kInvalidArgument, "cannot route blocks [", first, ", ", last, ")");
  const double fallback = mean_known_throughput(hosts);
  const auto nodes = static_cast<std::size_t>(last - first + 1);
  // Dijkstra over block boundaries; the key orders by cost, then hop count.
  using Key = std::pair<double, int>;
  std::vector<Key> best(nodes, {std::numeric_limits<double>::infinity(), 0});
  struct Via {
    std::size_t from = 0;
    std::size_t host = 0;
    bool set = false;
  };
  std::vector<Via> via(nodes);
  std::vector<bool> done(nodes, false);
  std::priority_queue<std::pair<Key, std::size_t>, std::vector<std::pair<Key, std::size_t>>, std::greater<>> queue;
  best[0] = {0.0, 0};
  queue.push({best[0], 0});
  while (!queue.empty()) {
    const auto [key, node] = queue.top();
    queue.pop();
    if (done[node]) continue;
    done[node] = true;
    const std::int64_t block = first + static_cast<std::int64_t>(node);
    for (std::size_t h = 0; h < hosts.size(); ++h) {
      const RouteCandidate& c = hosts[h];
      if (avoid.count(c.peer) || c.serving.first > block || c.serving.last <= block) continue;
      for (std::int64_t end = block + 1; end <= std::min(c.serving.last, last); ++end) {
        const auto to = static_cast<std::size_t>(end - first);
        const Key next{key.first + hop_cost(c, end - block, fallback), key.second + 1};
        const bool better = next < best[to] ||
                            (next == best[to] && via[to].set && c.peer < hosts[via[to].host].peer);
        if (better) {
          best[to] = next;
          via[to] = {node, h, true};
          queue.push({next, to});
        }
      }
    }
  }
  if (!via[nodes - 1].set) {
    std::int64_t reach = first;  // the first block no usable host serves from where routes get
    for (std::size_t n = 0; n < nodes; ++n) {
      if (done[n]) reach = std::max(reach, first + static_cast<std::int64_t>(n));
    }
    return error(StatusCode::kNotFound, "no host serves block ", reach, " (blocks [", first, ", ", last, ") wanted)");
  }
  std::vector<PlannedHop> route;
  for (std::size_t n = nodes - 1; n != 0; n = via[n].from) {
    route.push_back({hosts[via[n].host].peer, {first + static_cast<std::int64_t>(via[n].from), first + static_cast<std::int64_t>(n)}});
  }
  std::reverse(route.begin(), route.end());
  return route;
}

Result<std::vector<PlannedHop>> plan_route_like(const std::vector<RouteCandidate>& hosts, std::int64_t first,
                                                std::int64_t last, const std::string& numerics,
                                                const std::set<PeerId>& avoid) {
  if (!numerics.empty()) {
    std::vector<RouteCandidate> alike;
    for (const RouteCandidate& h : hosts) {
      if (h.numerics == numerics) alike.push_back(h);
    }
    if (auto route = plan_route(alike, first, last, avoid); route.is_ok()) return route;
  }
  return plan_route(hosts, first, last, avoid);
}

double route_cost(const std::vector<RouteCandidate>& hosts, const std::vector<PlannedHop>& route) {
  const double fallback = mean_known_throughput(hosts);
  double cost = 0;
  for (const auto& hop : route) {
    for (const auto& h : hosts) {
      if (h.peer == hop.peer) cost += hop_cost(h, hop.blocks.size(), fallback);
    }
  }
  return cost;
}

}  // namespace sepal

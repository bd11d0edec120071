#include "actors/balancer_route_planner.h"

#include <algorithm>

#include "actors/route_planning.h"
#include "runtime/log.h"

namespace sepal {

namespace {

// Why a block map is not ready to serve yet; empty when it is.
std::string not_ready(const Result<BlockMapReply>& map, std::int64_t min_hosts) {
  if (!map.is_ok()) return "no answer from the balancer: " + map.status().to_string();
  if (map->num_blocks <= 0) return "no host has announced itself";
  std::vector<bool> served(static_cast<std::size_t>(map->num_blocks), false);
  std::int64_t measured = 0;
  for (const auto& h : map->hosts) {
    if (h.serving_first != h.first || h.serving_last != h.last) {
      return "host " + std::to_string(h.peer) + " is moving to blocks [" + std::to_string(h.first) + ", " +
             std::to_string(h.last) + ")";
    }
    if (h.throughput > 0) ++measured;
    for (auto b = std::max<std::int64_t>(h.serving_first, 0); b < std::min(h.serving_last, map->num_blocks); ++b) {
      served[static_cast<std::size_t>(b)] = true;
    }
  }
  for (std::size_t b = 0; b < served.size(); ++b) {
    if (!served[b]) return "block " + std::to_string(b) + " of " + std::to_string(map->num_blocks) + " has no host yet";
  }
  if (measured < min_hosts) {
    return std::to_string(measured) + " of " + std::to_string(min_hosts) + " hosts have measured their throughput";
  }
  return {};
}

// The probes of one planning attempt: every usable host's answer and round trip.
struct Probes {
  std::size_t waiting = 0;
  std::size_t answered = 0;
  std::vector<RouteCandidate> candidates;
  std::vector<PeerId> failed;
  bool grace_over = false;  // the first answer came probe_grace ago: stragglers are not awaited
  bool finished = false;
};

// The route over the hosts not avoided where one exists, else with one of them (the soonest to be
// forgiven that makes a route: `avoid` is in that order), else over every host: an avoided host is
// a last resort, not refused while it is the only one serving a block.
Result<std::vector<PlannedHop>> plan_preferring(const std::vector<RouteCandidate>& candidates, std::int64_t first,
                                                std::int64_t last, const std::string& numerics,
                                                const std::vector<PeerId>& avoid) {
  const std::set<PeerId> all(avoid.begin(), avoid.end());
  auto planned = plan_route_like(candidates, first, last, numerics, all);
  if (planned.is_ok() || avoid.empty()) return planned;
  for (PeerId peer : avoid) {
    std::set<PeerId> others = all;
    others.erase(peer);
    if (auto with_one = plan_route_like(candidates, first, last, numerics, others); with_one.is_ok()) return with_one;
  }
  return plan_route_like(candidates, first, last, numerics);
}

}  // namespace

BalancerRoutePlanner::BalancerRoutePlanner(ActorSystem& system, std::uint32_t driver, ActorRef<BalancerProtocol> balancer,
                                           BalancerRoutePlannerOptions options)
    : system_(system), driver_(driver), balancer_(balancer), options_(options) {}

void BalancerRoutePlanner::report_failure(PeerId peer) {
  Avoid& a = avoid_[peer];
  ++a.failures;
  auto span = options_.avoid_first * (1 << std::min(a.failures - 1, 16));
  if (span > options_.avoid_max) span = options_.avoid_max;
  a.until = system_.scheduler().now() + span;
  log(LogLevel::kInfo, "avoiding host ", peer, " for ", span.count(), " ms (failure ", a.failures, ")");
}

std::vector<PeerId> BalancerRoutePlanner::avoided() const {
  std::vector<std::pair<Clock::time_point, PeerId>> until;
  const auto now = system_.scheduler().now();
  for (const auto& [peer, a] : avoid_) {
    if (now < a.until) until.emplace_back(a.until, peer);
  }
  std::sort(until.begin(), until.end());
  std::vector<PeerId> out;
  for (const auto& [when, peer] : until) out.push_back(peer);
  return out;
}

void BalancerRoutePlanner::try_route(std::int64_t first, std::int64_t last, const std::string& numerics, RouteDone done) {
  system_.request_in_turn(driver_, balancer_, GetBlockMap{}, options_.request_timeout,
                          [this, first, last, numerics, done](Result<BlockMapReply> map) {
    if (!map.is_ok()) return done(error(map.status().code(), "the balancer did not answer: ", map.status().to_string()));
    const std::vector<PeerId> avoid = avoided();
    // Ask every host of these blocks at once; the answer's delay is its round trip.
    auto probes = std::make_shared<Probes>();
    std::vector<PeerId> asked;
    for (const HostRecord& h : map->hosts) {
      if (h.serving_first >= h.serving_last || h.serving_last <= first || h.serving_first >= last) continue;
      asked.push_back(h.peer);
    }
    probes->waiting = asked.size();
    auto finish = [this, first, last, numerics, avoid, probes, done] {
      if (probes->finished) return;
      probes->finished = true;
      for (PeerId peer : probes->failed) report_failure(peer);
      auto planned = plan_preferring(probes->candidates, first, last, numerics, avoid);
      if (!planned.is_ok()) return done(planned.status());
      std::vector<RouteHop> hops;
      for (const auto& h : planned.value()) {
        std::string announced;
        for (const RouteCandidate& c : probes->candidates) {
          if (c.peer == h.peer) announced = c.numerics;
        }
        hops.push_back(RouteHop{ActorRef<BlockHostProtocol>{{h.peer, kBlockHostActorId}}, h.blocks.first, h.blocks.last,
                                announced});
      }
      done(std::move(hops));
    };
    // Past the grace, a route over the hosts that answered is taken without awaiting the others: a
    // host that is alive but slow to answer (starved, or stalled) must not hold a failover up.
    auto enough = [first, last, numerics, probes] {
      return probes->grace_over && plan_route_like(probes->candidates, first, last, numerics).is_ok();
    };
    if (asked.empty()) return finish();
    ActorSystem* system = &system_;  // outlives its requests; this planner may not
    const std::uint32_t driver = driver_;
    const auto grace = options_.probe_grace;
    for (PeerId peer : asked) {
      const auto sent = system_.scheduler().now();
      // Timed where the answer arrives, not where the driver gets to it.
      system_.request(ActorRef<BlockHostProtocol>{{peer, kBlockHostActorId}}, HostInfo{}, options_.request_timeout,
                      [system, driver, peer, sent, grace, probes, finish, enough](Result<HostInfoReply> info) {
        const double rtt = std::chrono::duration<double>(system->scheduler().now() - sent).count();
        system->run_in_turn(driver, [system, driver, peer, rtt, grace, probes, finish, enough, info = std::move(info)] {
          if (probes->finished) return;
          const bool first_answer = probes->answered++ == 0;
          if (!info.is_ok()) {
            probes->failed.push_back(peer);
          } else if (!info->leaving && info->first < info->last) {
            probes->candidates.push_back(
                RouteCandidate{peer, {info->first, info->last}, info->tokens_per_second, rtt, info->numerics});
          }
          if (--probes->waiting == 0 || enough()) return finish();
          if (first_answer) {
            system->after_in_turn(driver, grace, [probes, finish, enough] {
              probes->grace_over = true;
              if (!probes->finished && enough()) finish();
            });
          }
        });
      }, driver_);
    }
  });
}

void BalancerRoutePlanner::route(std::int64_t first, std::int64_t last, const std::string& numerics, RouteDone done) {
  retry_route(first, last, numerics, system_.scheduler().now() + options_.route_wait, options_.retry_first, std::move(done));
}

void BalancerRoutePlanner::retry_route(std::int64_t first, std::int64_t last, const std::string& numerics,
                                       Clock::time_point deadline, std::chrono::milliseconds pause, RouteDone done) {
  try_route(first, last, numerics, [this, first, last, numerics, deadline, pause, done](Result<std::vector<RouteHop>> hops) {
    if (hops.is_ok()) return done(std::move(hops));
    if (system_.scheduler().now() + pause > deadline) {
      return done(error(hops.status().code(), hops.status().message(), " (waited ",
                        std::chrono::duration_cast<std::chrono::seconds>(options_.route_wait).count(), " s for a host)"));
    }
    log(LogLevel::kInfo, "no route yet (", hops.status().message(), "); retrying in ", pause.count(), " ms");
    system_.after_in_turn(driver_, pause, [this, first, last, numerics, deadline, pause, done] {
      retry_route(first, last, numerics, deadline, std::min(pause * 2, options_.retry_max), done);
    });
  });
}

void BalancerRoutePlanner::await_ready(std::int64_t min_hosts, std::chrono::milliseconds timeout, ReadyDone done) {
  poll_ready(min_hosts, system_.scheduler().now() + timeout, timeout, std::move(done));
}

void BalancerRoutePlanner::poll_ready(std::int64_t min_hosts, Clock::time_point deadline, std::chrono::milliseconds timeout,
                                      ReadyDone done) {
  system_.request_in_turn(driver_, balancer_, GetBlockMap{}, options_.request_timeout,
                          [this, min_hosts, deadline, timeout, done](Result<BlockMapReply> map) {
    const std::string missing = not_ready(map, min_hosts);
    if (missing.empty()) return done(std::move(map));
    if (system_.scheduler().now() >= deadline) {
      return done(error(StatusCode::kTimeout, "the swarm was not ready in ", timeout.count(), " ms: ", missing));
    }
    system_.after_in_turn(driver_, options_.ready_poll,
                          [this, min_hosts, deadline, timeout, done] { poll_ready(min_hosts, deadline, timeout, done); });
  });
}

}  // namespace sepal

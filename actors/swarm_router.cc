#include "actors/swarm_router.h"

#include <future>
#include <thread>

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

}  // namespace

SwarmRouter::SwarmRouter(ActorSystem& system, ActorRef<BalancerProtocol> balancer, SwarmRouterOptions options)
    : system_(system), balancer_(balancer), options_(options) {}

Result<BlockMapReply> SwarmRouter::block_map() {
  return system_.request_sync(balancer_, GetBlockMap{}, options_.request_timeout);
}

void SwarmRouter::report_failure(PeerId peer) {
  std::lock_guard lock(mutex_);
  Avoid& a = avoid_[peer];
  ++a.failures;
  auto span = options_.avoid_first * (1 << std::min(a.failures - 1, 16));
  if (span > options_.avoid_max) span = options_.avoid_max;
  a.until = system_.scheduler().now() + span;
  log(LogLevel::kInfo, "avoiding host ", peer, " for ", span.count(), " ms (failure ", a.failures, ")");
}

std::set<PeerId> SwarmRouter::avoided() {
  std::lock_guard lock(mutex_);
  std::set<PeerId> out;
  const auto now = system_.scheduler().now();
  for (const auto& [peer, a] : avoid_) {
    if (now < a.until) out.insert(peer);
  }
  return out;
}

Result<std::vector<RouteHop>> SwarmRouter::try_route(std::int64_t first, std::int64_t last) {
  auto map = block_map();
  if (!map.is_ok()) return error(map.status().code(), "the balancer did not answer: ", map.status().to_string());
  const std::set<PeerId> avoid = avoided();
  // Ask every usable host at once; the answer's delay is its round trip.
  struct Probe {
    PeerId peer;
    std::chrono::steady_clock::time_point sent;
    std::future<std::pair<Result<HostInfoReply>, double>> answer;
  };
  std::vector<Probe> probes;
  for (const HostRecord& h : map->hosts) {
    if (avoid.count(h.peer) || h.serving_first >= h.serving_last || h.serving_last <= first || h.serving_first >= last) continue;
    auto promise = std::make_shared<std::promise<std::pair<Result<HostInfoReply>, double>>>();
    Probe p{h.peer, std::chrono::steady_clock::now(), promise->get_future()};
    const auto sent = p.sent;
    system_.request(ActorRef<BlockHostProtocol>{{h.peer, kBlockHostActorId}}, HostInfo{}, options_.request_timeout,
                    [promise, sent](Result<HostInfoReply> r) {
                      const double rtt = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
                      promise->set_value({std::move(r), rtt});
                    });
    probes.push_back(std::move(p));
  }
  std::vector<RouteCandidate> candidates;
  for (auto& p : probes) {
    auto [info, rtt] = p.answer.get();
    if (!info.is_ok()) {
      report_failure(p.peer);
      continue;
    }
    if (info->leaving || info->first >= info->last) continue;
    candidates.push_back(RouteCandidate{p.peer, {info->first, info->last}, info->tokens_per_second, rtt});
  }
  auto planned = plan_route(candidates, first, last);
  if (!planned.is_ok()) return planned.status();
  std::vector<RouteHop> hops;
  for (const auto& h : planned.value()) {
    hops.push_back(RouteHop{ActorRef<BlockHostProtocol>{{h.peer, kBlockHostActorId}}, h.blocks.first, h.blocks.last});
  }
  return hops;
}

Result<std::vector<RouteHop>> SwarmRouter::route(std::int64_t first, std::int64_t last) {
  const auto deadline = std::chrono::steady_clock::now() + options_.route_wait;
  auto pause = options_.retry_first;
  while (true) {
    auto hops = try_route(first, last);
    if (hops.is_ok()) return hops;
    if (std::chrono::steady_clock::now() + pause > deadline) {
      return error(hops.status().code(), hops.status().message(), " (waited ",
                   std::chrono::duration_cast<std::chrono::seconds>(options_.route_wait).count(), " s for a host)");
    }
    log(LogLevel::kInfo, "no route yet (", hops.status().message(), "); retrying in ", pause.count(), " ms");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, options_.retry_max);
  }
}

Status SwarmRouter::wait_until_ready(std::int64_t min_hosts, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string missing = "no answer from the balancer";
  while (std::chrono::steady_clock::now() < deadline) {
    missing = not_ready(block_map(), min_hosts);
    if (missing.empty()) return Status::ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return error(StatusCode::kTimeout, "the swarm was not ready in ", timeout.count(), " ms: ", missing);
}

}  // namespace sepal

#include "actors/balancer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace sepal {

Balancer::Balancer(BalancerOptions options) : options_(std::move(options)) {}

BlockMap Balancer::placement_map() const {
  double sum = 0;
  int measured = 0;
  for (const auto& [peer, h] : hosts_) {
    if (h.throughput > 0) {
      sum += h.throughput;
      ++measured;
    }
  }
  const double fallback = measured > 0 ? sum / measured : 1.0;
  BlockMap map;
  map.num_blocks = num_blocks_;
  for (const auto& [peer, h] : hosts_) {
    map.hosts.push_back(HostPlacement{peer, h.throughput > 0 ? h.throughput : fallback, h.overdue ? h.serving : h.assigned});
  }
  return map;
}

std::string Balancer::note_overdue_moves(Clock::time_point now) {
  std::string event;
  for (auto& [peer, h] : hosts_) {
    if (h.overdue || !moving(h) || now - h.assigned_at < options_.move_timeout) continue;
    h.overdue = true;
    char within[32];
    std::snprintf(within, sizeof within, "%.1f s", static_cast<double>(options_.move_timeout.count()) / 1e3);
    const std::string what = "host " + std::to_string(peer) + " has not served [" + std::to_string(h.assigned.first) +
                             ", " + std::to_string(h.assigned.last) + ") within " + within;
    log(LogLevel::kWarn, "balancer: ", what, "; other hosts may move to cover its blocks");
    event += (event.empty() ? "" : "; ") + what;
  }
  return event;
}

void Balancer::rebalance(std::string& event) {
  for (const auto& [peer, h] : hosts_) {
    if (moving(h) && !h.overdue) return;  // one move at a time: wait until it is done
  }
  const BlockMap map = placement_map();
  std::optional<std::pair<PeerId, BlockRange>> best;
  double best_weakest = map.weakest();
  for (const auto& [peer, h] : hosts_) {
    if (moving(h)) continue;  // an overdue host: still loading (or stuck); its move stands
    auto candidate = better_range(map, peer, options_.min_gain);
    if (!candidate) continue;
    BlockMap moved = map;
    for (auto& p : moved.hosts) {
      if (p.peer == peer) p.range = *candidate;
    }
    // Among the helpful moves, the one that leaves the weakest block strongest.
    if (!best || moved.weakest() > best_weakest) {
      best = {peer, *candidate};
      best_weakest = moved.weakest();
    }
  }
  if (!best) return;
  Host& h = hosts_.at(best->first);
  event += "; move " + std::to_string(best->first) + " from [" + std::to_string(h.assigned.first) + ", " +
           std::to_string(h.assigned.last) + ") to [" + std::to_string(best->second.first) + ", " +
           std::to_string(best->second.last) + ")";
  h.assigned = best->second;
  h.assigned_at = Clock::now();
  h.overdue = false;
}

BlockMapReply Balancer::snapshot() const {
  BlockMapReply r{model_, num_blocks_, version_, {}};
  for (const auto& [peer, h] : hosts_) {
    r.hosts.push_back(HostRecord{peer, h.assigned.first, h.assigned.last, h.serving.first, h.serving.last,
                                 h.throughput, h.sessions, h.cache_bytes_free, h.numerics});
  }
  return r;
}

void Balancer::changed(const std::string& event) {
  ++version_;
  log(LogLevel::kInfo, "balancer: ", event);
  if (options_.on_change) options_.on_change(snapshot(), event);
}

Result<Assignment> Balancer::handle(ActorContext& ctx, const Announce& m) {
  const PeerId peer = ctx.sender().peer;
  if (options_.may_host && !options_.may_host(peer)) {
    return error(StatusCode::kRefused, "peer ", peer, " was not admitted as a block host");
  }
  if (m.num_blocks <= 0 || m.max_blocks <= 0) {
    return error(StatusCode::kInvalidArgument, "an announcement needs num_blocks and max_blocks above 0, got ",
                 m.num_blocks, " and ", m.max_blocks);
  }
  if (!std::isfinite(m.throughput) || m.throughput < 0) {
    return error(StatusCode::kInvalidArgument, "throughput must be a finite number >= 0");
  }
  if (m.numerics.size() > kMaxNumericsLength ||
      !std::all_of(m.numerics.begin(), m.numerics.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
    return error(StatusCode::kInvalidArgument, "numerics must be at most ", kMaxNumericsLength,
                 " printable ASCII characters");
  }
  if (m.first < 0 || m.last < m.first || m.last > m.num_blocks) {
    return error(StatusCode::kInvalidArgument, "served blocks [", m.first, ", ", m.last, ") are not within the model's ",
                 m.num_blocks, " blocks");
  }
  if (!model_.empty() && (m.model != model_ || m.num_blocks != num_blocks_)) {
    return error(StatusCode::kRefused, "this swarm serves ", model_, " (", num_blocks_, " blocks), not ", m.model, " (",
                 m.num_blocks, " blocks)");
  }
  if (model_.empty()) {
    model_ = m.model;
    num_blocks_ = m.num_blocks;
  }
  const BlockRange serving{m.first, m.last};
  if (m.leaving) {
    if (hosts_.erase(peer) == 0) return Assignment{};
    std::string event = "leave " + std::to_string(peer);
    rebalance(event);
    changed(event);
    return Assignment{};
  }
  auto it = hosts_.find(peer);
  if (it == hosts_.end()) {
    Host h{m.max_blocks, m.throughput, serving, serving, m.sessions, m.cache_bytes_free, m.numerics, Clock::now(), false};
    std::string event;
    if (serving.size() > 0) {
      event = "rejoin " + std::to_string(peer);  // a restarted balancer learns what hosts serve
    } else {
      h.assigned = choose_range(placement_map(), m.max_blocks);
      event = "join " + std::to_string(peer);
    }
    it = hosts_.emplace(peer, h).first;
    rebalance(event);
    changed(event);
    return Assignment{it->second.assigned.first, it->second.assigned.last};
  }
  Host& h = it->second;
  const bool moved = !(h.serving == serving);
  const bool measured = h.throughput == 0 && m.throughput > 0;
  h.max_blocks = m.max_blocks;
  h.throughput = m.throughput;
  h.serving = serving;
  h.sessions = m.sessions;
  h.cache_bytes_free = m.cache_bytes_free;
  h.numerics = m.numerics;
  if (!moving(h)) h.overdue = false;
  // Announcements come every second or so from every host: they are the balancer's clock.
  const std::string overdue = note_overdue_moves(Clock::now());
  if (moved || measured || !overdue.empty()) {
    std::string event = moved ? "host " + std::to_string(peer) + " serves [" + std::to_string(serving.first) + ", " +
                                    std::to_string(serving.last) + ")"
                              : measured ? "host " + std::to_string(peer) + " measured" : "";
    if (!overdue.empty()) event += (event.empty() ? "" : "; ") + overdue;
    rebalance(event);
    changed(event);
  }
  return Assignment{h.assigned.first, h.assigned.last};
}

Result<BlockMapReply> Balancer::handle(ActorContext&, const GetBlockMap&) { return snapshot(); }

void Balancer::on_peer_failed(ActorSystem&, PeerId peer, const Status&) {
  if (hosts_.erase(peer) == 0) return;
  std::string event = "failure " + std::to_string(peer);
  rebalance(event);
  changed(event);
}

}  // namespace sepal

#include "runtime/peer_liveness.h"

#include <algorithm>

#include "runtime/log.h"

namespace sepal {

std::vector<PeerId> PeerLiveness::keepalives_due(Clock::time_point now) {
  std::vector<PeerId> due;
  for (auto& [peer, t] : peers_) {
    if (now - t.pinged >= options_.keepalive_period) {
      t.pinged = now;
      due.push_back(peer);
    }
  }
  return due;
}

std::vector<PeerId> PeerLiveness::overdue(Clock::time_point now) {
  if (last_look_ != Clock::time_point{} && now - last_look_ > options_.failure_timeout / 4) {
    const auto away = now - last_look_;
    for (auto& [peer, t] : peers_) t.heard = std::min(now, t.heard + away);
    log(LogLevel::kInfo, "this process's progress thread did not run for ",
        std::chrono::duration_cast<std::chrono::milliseconds>(away).count(),
        " ms (a paused or starved process): its peers are not blamed for that time");
  }
  last_look_ = now;
  std::vector<PeerId> late;
  for (const auto& [peer, t] : peers_) {
    if (now - t.heard > options_.failure_timeout) late.push_back(peer);
  }
  return late;
}

std::chrono::milliseconds PeerLiveness::silent_for(PeerId peer, Clock::time_point now) const {
  const auto it = peers_.find(peer);
  if (it == peers_.end()) return std::chrono::milliseconds(0);
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second.heard);
}

}  // namespace sepal

#include "runtime/peer_liveness.h"

#include <algorithm>

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
  }
  last_look_ = now;
  std::vector<PeerId> late;
  for (const auto& [peer, t] : peers_) {
    if (now - t.heard > options_.failure_timeout) late.push_back(peer);
  }
  return late;
}

}  // namespace sepal

#include "runtime/peer_liveness.h"

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

std::vector<PeerId> PeerLiveness::overdue(Clock::time_point now) const {
  std::vector<PeerId> late;
  for (const auto& [peer, t] : peers_) {
    if (now - t.heard > options_.failure_timeout) late.push_back(peer);
  }
  return late;
}

}  // namespace sepal

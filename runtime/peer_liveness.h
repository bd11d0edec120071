#pragma once
// Keepalive bookkeeping shared by the MPI and UCX transports: without ULFM a dead MPI peer is
// silent, so silence past a timeout is what declares it dead (see docs/runtime.md).
//
// Thread-safety: used only by the owning transport's progress thread.

#include <chrono>
#include <map>
#include <vector>

#include "runtime/transport.h"

namespace sepal {

/// Last time each peer was heard from and last time a keepalive went to it.
class PeerLiveness {
 public:
  using Clock = std::chrono::steady_clock;
  explicit PeerLiveness(LivenessOptions options) : options_(options) {}

  /// The periods this bookkeeping uses.
  const LivenessOptions& options() const { return options_; }

  /// Starts watching `peer` as of `now`.
  void watch(PeerId peer, Clock::time_point now) { peers_[peer] = {now, now}; }
  /// Stops watching (the peer left or was declared failed).
  void forget(PeerId peer) { peers_.erase(peer); }
  /// Anything arrived from `peer`.
  void heard(PeerId peer, Clock::time_point now) {
    if (auto it = peers_.find(peer); it != peers_.end()) it->second.heard = now;
  }
  /// Peers that need a keepalive now; marks them as sent.
  std::vector<PeerId> keepalives_due(Clock::time_point now);
  /// Peers silent for longer than the failure timeout. The owner calls it every pass of its loop
  /// (a few milliseconds apart at most): a gap of more than a quarter of the failure timeout since
  /// the last call means this thread did not run (the process or the whole machine was paused or
  /// starved, as a loaded 2-core machine starves it), and the peers, paused too or unheard by a
  /// thread that was not there, are not blamed for that gap: it is added to their time.
  std::vector<PeerId> overdue(Clock::time_point now);
  /// How long `peer` has been silent as of `now` (after overdue()'s allowance), for messages.
  std::chrono::milliseconds silent_for(PeerId peer, Clock::time_point now) const;

 private:
  struct Times {
    Clock::time_point heard, pinged;
  };
  LivenessOptions options_;
  std::map<PeerId, Times> peers_;
  Clock::time_point last_look_{};
};

}  // namespace sepal

#pragma once
// An in-process network for deterministic actor tests: every send is recorded, and delivering it
// is one task on a ManualScheduler, so a test decides when each frame arrives and can assert the
// exact traffic. Failures are injected with kill().
//
// Thread-safety: meant for one test thread; sends from scheduler tasks are fine.

#include <memory>
#include <mutex>
#include <vector>

#include "runtime/scheduler.h"
#include "runtime/transport.h"

namespace sepal {

/// Endpoints connected through a ManualScheduler.
class DeterministicNetwork : public std::enable_shared_from_this<DeterministicNetwork> {
 public:
  /// One frame as it was sent.
  struct Sent {
    PeerId from;
    PeerId to;
    Envelope envelope;
  };

  static std::shared_ptr<DeterministicNetwork> create(ManualScheduler& scheduler);
  /// A new endpoint with the next id (0, 1, ...).
  std::unique_ptr<Transport> endpoint();
  /// Frames sent since the last call, in order.
  std::vector<Sent> take_log();
  /// Kills endpoint `id`: frames to and from it vanish and every other endpoint is told (as one
  /// scheduler task each).
  void kill(PeerId id);

 private:
  friend class DeterministicEndpoint;
  explicit DeterministicNetwork(ManualScheduler& scheduler) : scheduler_(scheduler) {}
  ManualScheduler& scheduler_;
  std::mutex mutex_;
  std::vector<TransportHandler*> handlers_;
  std::vector<bool> alive_;
  std::vector<Sent> log_;
};

}  // namespace sepal

#pragma once
// How a progress thread waits when there is nothing to do: spin briefly (low latency while a
// conversation is active), then yield, then sleep in growing steps up to a cap (low CPU when idle;
// on an oversubscribed node spinning threads would starve the ones doing work).
//
// Thread-safety: one per progress thread.

#include <chrono>
#include <thread>

namespace sepal {

/// Idle backoff for a polling loop.
class ProgressBackoff {
 public:
  /// Call after a pass that did work.
  void busy() { idle_passes_ = 0; }
  /// Call after a pass that found nothing to do; waits according to how long it has been idle.
  void idle() {
    ++idle_passes_;
    if (idle_passes_ < 200) return;
    if (idle_passes_ < 400) {
      std::this_thread::yield();
      return;
    }
    const auto step = std::chrono::microseconds(std::min<long>(20 * ((idle_passes_ - 400) / 50 + 1), 500));
    std::this_thread::sleep_for(step);
  }

 private:
  long idle_passes_ = 0;
};

}  // namespace sepal

#pragma once
// How long a progress thread drains events in one pass (kProgressStretch), and how it waits
// when there is nothing to do: spin for a few tens of microseconds
// (a reply to a small message often comes that soon), then block. A transport that can wait for
// an event (UCX's wakeup file descriptor) blocks on it; one that cannot (MPI) sleeps in growing
// steps. Never sched_yield: on a node with more busy threads than cores each yield is a context
// switch that takes a core from a rank that computes (measured: a block host's forward pass took
// 84 ms beside two yielding progress threads, 73 ms beside blocking ones).
// A UCX pass that handed frames to the process's actors does not spin (handed_off()): the thread
// it woke is often queued on this very core, and waited out the spin there while the other core
// idled (measured with `perf sched` on 3 hosts and a client on 2 cores: 60 to 125 µs a hop); a
// frame that comes next wakes the blocked thread at once. The MPI transport keeps spinning: it
// has no event to wake it, and sleeping after each hand-off took an 8-byte round trip from 3 µs
// to 400 (the actor's reply waited for the sleep to end, and timer slack stretches short sleeps).
//
// Thread-safety: one per progress thread.

#include <algorithm>
#include <chrono>

namespace sepal {

/// The longest a pass of a progress loop drains its library's events back to back (a flood of
/// small frames, a long transfer on a starved machine keep them coming) before it delivers what
/// arrived, sends keepalives and checks its peers' liveness.
inline constexpr std::chrono::milliseconds kProgressStretch{5};

/// Idle policy for a polling loop.
class ProgressBackoff {
 public:
  using Clock = std::chrono::steady_clock;
  /// How long a loop keeps polling after its last useful pass.
  static constexpr auto kSpin = std::chrono::microseconds(50);

  /// Call after a pass that did work.
  void busy() { idle_ = false; }

  /// Call after a pass that handed frames to other threads of this process: keep_polling() is
  /// false from now until the next busy(), and sleep_step() starts at its shortest.
  void handed_off() {
    idle_ = true;
    idle_since_ = Clock::now() - kSpin;
  }

  /// Call after a pass that found nothing to do: true while the loop should poll again at once,
  /// false when it should block (wait for an event, or sleep for sleep_step()).
  bool keep_polling() {
    const auto now = Clock::now();
    if (!idle_) {
      idle_ = true;
      idle_since_ = now;
    }
    return now - idle_since_ < kSpin;
  }

  /// For a loop without an event to wait for: how long to sleep now. Grows with the idle stretch
  /// from 20 µs to 500 µs, so a long-idle rank wakes 2000 times a second at most.
  std::chrono::microseconds sleep_step() const {
    if (!idle_) return std::chrono::microseconds(0);
    const auto idle = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - idle_since_);
    return std::clamp(idle / 10, std::chrono::microseconds(20), std::chrono::microseconds(500));
  }

 private:
  // Since when passes have found nothing to do (a plain pair: GCC 12 takes an optional time
  // point here for uninitialised once inlined).
  bool idle_ = false;
  Clock::time_point idle_since_{};
};

}  // namespace sepal

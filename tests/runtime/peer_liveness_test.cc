// PeerLiveness: silence past the failure timeout declares a peer dead, keepalives go out on time,
// and a gap in the owner's own loop (its thread did not run) is not counted as the peers' silence.
#include "runtime/peer_liveness.h"

#include <gtest/gtest.h>

namespace sepal {
namespace {

using namespace std::chrono_literals;
using Clock = PeerLiveness::Clock;

constexpr LivenessOptions kOptions{100ms, 2000ms};

// Looks every `step` from `from` to `to` (as a transport's loop does) and returns the first time
// a peer was overdue, or Clock::time_point{} if none was.
Clock::time_point first_overdue(PeerLiveness& l, Clock::time_point from, Clock::time_point to, Clock::duration step) {
  for (auto t = from; t <= to; t += step) {
    if (!l.overdue(t).empty()) return t;
  }
  return {};
}

TEST(PeerLiveness, ASilentPeerIsOverdueAfterTheFailureTimeout) {
  PeerLiveness l(kOptions);
  const auto t0 = Clock::now();
  l.watch(7, t0);
  const auto late = first_overdue(l, t0, t0 + 5s, 10ms);
  ASSERT_NE(late, Clock::time_point{});
  EXPECT_GT(late - t0, 2000ms);
  EXPECT_LE(late - t0, 2010ms);
}

TEST(PeerLiveness, APeerHeardFromIsNotOverdue) {
  PeerLiveness l(kOptions);
  const auto t0 = Clock::now();
  l.watch(7, t0);
  for (auto t = t0; t < t0 + 10s; t += 10ms) {
    if ((t - t0) % 500ms == 0ms) l.heard(7, t);
    ASSERT_TRUE(l.overdue(t).empty()) << "at " << std::chrono::duration_cast<std::chrono::milliseconds>(t - t0).count() << " ms";
  }
}

TEST(PeerLiveness, KeepalivesAreDueEveryPeriod) {
  PeerLiveness l(kOptions);
  const auto t0 = Clock::now();
  l.watch(7, t0);
  EXPECT_TRUE(l.keepalives_due(t0 + 50ms).empty());
  EXPECT_EQ(l.keepalives_due(t0 + 100ms), std::vector<PeerId>{7});
  EXPECT_TRUE(l.keepalives_due(t0 + 150ms).empty());
  EXPECT_EQ(l.keepalives_due(t0 + 200ms), std::vector<PeerId>{7});
}

TEST(PeerLiveness, TimeTheOwnerDidNotRunIsNotThePeersSilence) {
  PeerLiveness l(kOptions);
  const auto t0 = Clock::now();
  l.watch(7, t0);
  EXPECT_TRUE(l.overdue(t0 + 100ms).empty());
  // The owner's loop is away for 3 s (paused, starved): on its return the peer, last heard 3.1 s
  // ago, is not overdue, and gets the full timeout from there to be heard.
  EXPECT_TRUE(l.overdue(t0 + 3100ms).empty());
  const auto late = first_overdue(l, t0 + 3100ms, t0 + 8s, 10ms);
  ASSERT_NE(late, Clock::time_point{});
  EXPECT_GT(late - t0, 5000ms);
  EXPECT_LE(late - t0, 5010ms);
  // A peer heard just after the owner's return is fine.
  PeerLiveness m(kOptions);
  m.watch(7, t0);
  EXPECT_TRUE(m.overdue(t0 + 100ms).empty());
  EXPECT_TRUE(m.overdue(t0 + 4s).empty());
  m.heard(7, t0 + 4010ms);
  EXPECT_TRUE(first_overdue(m, t0 + 4s, t0 + 6s, 10ms) == Clock::time_point{});
}

TEST(PeerLiveness, AForgottenPeerIsNeverOverdue) {
  PeerLiveness l(kOptions);
  const auto t0 = Clock::now();
  l.watch(7, t0);
  l.forget(7);
  EXPECT_EQ(first_overdue(l, t0, t0 + 5s, 10ms), Clock::time_point{});
}

}  // namespace
}  // namespace sepal

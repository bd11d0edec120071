// The transport conformance suite on in-process endpoints: one thread per rank.
#include <barrier>

#include "runtime/inproc_transport.h"
#include "tests/transport_conformance.h"

namespace sepal::test {
namespace {

// Runs `scenario` on `world` endpoints of one hub, each on its own thread.
void run_inproc(int world, const std::function<void(RankContext&)>& scenario) {
  auto hub = InprocHub::create(std::chrono::milliseconds(100));
  std::vector<std::unique_ptr<InprocTransport>> endpoints;
  std::vector<std::unique_ptr<Inbox>> inboxes;
  for (int r = 0; r < world; ++r) {
    endpoints.push_back(hub->endpoint());
    inboxes.push_back(std::make_unique<Inbox>());
    ASSERT_TRUE(endpoints.back()->start(inboxes.back().get()).is_ok());
  }
  std::barrier sync(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      RankContext c{*endpoints[r], *inboxes[r], r, world, [&] { sync.arrive_and_wait(); },
                    [&, r] { hub->kill(static_cast<PeerId>(r)); }};
      scenario(c);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(InprocTransport, OrderingWithManyPeers) { run_inproc(6, scenario_ordering_many_peers); }
TEST(InprocTransport, OneByteTo256MiB) { run_inproc(2, scenario_sizes); }
TEST(InprocTransport, ConcurrentSenders) { run_inproc(2, scenario_concurrent_senders); }
TEST(InprocTransport, DeadPeerIsReported) {
  run_inproc(3, [](RankContext& c) {
    // The dying thread leaves the barrier for good, so survivors only sync among themselves.
    scenario_peer_death(c);
  });
}

}  // namespace
}  // namespace sepal::test

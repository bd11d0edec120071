// The transport conformance suite on in-process endpoints: one thread per rank.
#include <barrier>

#include "runtime/faulty_transport.h"
#include "runtime/inproc_transport.h"
#include "runtime/wan_transport.h"
#include "tests/runtime/transport_conformance.h"

namespace sepal::test {
namespace {

using Wrap = std::function<std::unique_ptr<Transport>(std::unique_ptr<Transport>)>;

// Runs `scenario` on `world` endpoints of one hub, each on its own thread, each endpoint wrapped
// by `wrap` (WAN emulation, fault injection) when given.
void run_inproc(int world, const std::function<void(RankContext&)>& scenario, const Wrap& wrap = {}) {
  auto hub = InprocHub::create(std::chrono::milliseconds(100));
  std::vector<std::unique_ptr<Transport>> endpoints;
  std::vector<std::unique_ptr<Inbox>> inboxes;
  for (int r = 0; r < world; ++r) {
    std::unique_ptr<Transport> t = hub->endpoint();
    endpoints.push_back(wrap ? wrap(std::move(t)) : std::move(t));
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
  for (auto& e : endpoints) e->stop();
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

// The wrappers pass the same suite: WAN emulation (latency, jitter, bandwidth, loss) keeps order
// and reports failures; a fault wrapper with no faults set is transparent.
std::unique_ptr<Transport> wan(std::unique_ptr<Transport> inner) {
  return std::make_unique<WanTransport>(std::move(inner),
                                        parse_wan_config("rtt_ms=2,jitter_ms=0.5,bandwidth_mbps=20000,loss=0.0001").value());
}
std::unique_ptr<Transport> faulty(std::unique_ptr<Transport> inner) {
  return std::make_unique<FaultyTransport>(std::move(inner));
}

TEST(WanTransport, OrderingWithManyPeers) { run_inproc(4, scenario_ordering_many_peers, wan); }
TEST(WanTransport, OneByteTo256MiB) { run_inproc(2, scenario_sizes, wan); }
TEST(WanTransport, ConcurrentSenders) { run_inproc(2, scenario_concurrent_senders, wan); }
TEST(WanTransport, DeadPeerIsReported) { run_inproc(3, scenario_peer_death, wan); }
TEST(FaultyTransport, OrderingWithManyPeers) { run_inproc(4, scenario_ordering_many_peers, faulty); }
TEST(FaultyTransport, ConcurrentSenders) { run_inproc(2, scenario_concurrent_senders, faulty); }
TEST(FaultyTransport, DeadPeerIsReported) { run_inproc(3, scenario_peer_death, faulty); }

}  // namespace
}  // namespace sepal::test

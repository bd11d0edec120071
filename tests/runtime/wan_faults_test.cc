// The WAN link model on a fake clock, WAN settings parsing, and each injected fault.
#include <gtest/gtest.h>

#include <chrono>

#include "runtime/faulty_transport.h"
#include "runtime/inproc_transport.h"
#include "runtime/wan_link.h"
#include "runtime/wan_transport.h"
#include "tests/runtime/transport_conformance.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;
using Ns = std::chrono::nanoseconds;
using test::Inbox;
using test::Sequence;

double ms(Ns d) { return std::chrono::duration<double, std::milli>(d).count(); }

TEST(WanLink, LatencyIsHalfTheRoundTrip) {
  WanLink link(parse_wan_config("rtt_ms=100").value(), 1);
  EXPECT_DOUBLE_EQ(ms(link.delivery_time(Ns{0}, 10)), 50.0);
  EXPECT_DOUBLE_EQ(ms(link.delivery_time(Ns(std::chrono::milliseconds(7)), 10)), 57.0);
}

TEST(WanLink, FramesShareTheBandwidth) {
  // 100 Mbit/s: 1,000,000 bytes take 80 ms to serialise; a second frame waits for the first.
  WanLink link(parse_wan_config("rtt_ms=10,bandwidth_mbps=100").value(), 1);
  EXPECT_NEAR(ms(link.delivery_time(Ns{0}, 1000000)), 80.0 + 5.0, 1e-6);
  EXPECT_NEAR(ms(link.delivery_time(Ns{0}, 1000000)), 160.0 + 5.0, 1e-6);
  // After the link drained, a frame goes at once again.
  EXPECT_NEAR(ms(link.delivery_time(Ns(std::chrono::milliseconds(500)), 1000)), 500.0 + 0.08 + 5.0, 1e-6);
}

TEST(WanLink, JitterNeverReorders) {
  WanLink link(parse_wan_config("rtt_ms=20,jitter_ms=5").value(), 3);
  Ns last{0};
  double min_gap = 1e9, max_gap = 0;
  for (int i = 0; i < 2000; ++i) {
    const Ns now{std::chrono::microseconds(i * 100)};
    const Ns at = link.delivery_time(now, 100);
    EXPECT_GE(at, last);
    min_gap = std::min(min_gap, ms(at - now));
    max_gap = std::max(max_gap, ms(at - now));
    last = at;
  }
  EXPECT_GE(min_gap, 5.0 - 1e-9);   // one-way 10 ms minus at most 5 ms of jitter
  EXPECT_LE(max_gap, 15.0 + 20.0);  // plus jitter, plus waiting behind an earlier frame
}

TEST(WanLink, LossCostsRoundTripsInProportion) {
  // One packet lost with probability 1/2: the expected number of retransmission rounds is
  // p / (1 - p) = 1, each costing one 40 ms round trip.
  WanLink link(parse_wan_config("rtt_ms=40,loss=0.5").value(), 7);
  double total = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const Ns now{std::chrono::seconds(i)};
    total += ms(link.delivery_time(now, 100) - now) - 20.0;
  }
  EXPECT_NEAR(total / n, 40.0, 2.0);
  WanLink lossless(parse_wan_config("rtt_ms=40").value(), 7);
  EXPECT_DOUBLE_EQ(ms(lossless.delivery_time(Ns{0}, 1 << 20)), 20.0);
}

TEST(WanConfig, ParsesAndRejects) {
  const auto c = parse_wan_config("rtt_ms=100, bandwidth_mbps=100\njitter_ms=2 loss=0.01");
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->rtt_ms, 100);
  EXPECT_EQ(c->bandwidth_mbps, 100);
  EXPECT_EQ(c->jitter_ms, 2);
  EXPECT_EQ(c->loss, 0.01);
  EXPECT_FALSE(parse_wan_config("").value().enabled());
  for (const char* bad : {"rtt_ms=abc", "rtt_ms=-5", "latency=3", "rtt_ms", "loss=1.5", "rtt_ms=2,jitter_ms=5",
                          "mss_bytes=2.3e32", "rtt_ms=1e300", "bandwidth_mbps=1e-300", "bandwidth_mbps=1e30"}) {
    const auto r = parse_wan_config(bad);
    EXPECT_FALSE(r.is_ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(WanTransport, RoundTripIsAtLeastTheConfiguredLatency) {
  auto hub = InprocHub::create();
  const WanConfig config = parse_wan_config("rtt_ms=30").value();
  WanTransport a(hub->endpoint(), config), b(hub->endpoint(), config);
  Inbox ia, ib;
  ASSERT_TRUE(a.start(&ia).is_ok());
  ASSERT_TRUE(b.start(&ib).is_ok());
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(a.send(1, encode(Envelope{}, Sequence{0, 0, static_cast<std::uint64_t>(i)})).is_ok());
    ASSERT_TRUE(ib.next(2000ms).has_value());
    ASSERT_TRUE(b.send(0, encode(Envelope{}, Sequence{1, 0, static_cast<std::uint64_t>(i)})).is_ok());
    ASSERT_TRUE(ia.next(2000ms).has_value());
    EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
  }
}

class Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    hub_ = InprocHub::create();
    a_ = std::make_unique<FaultyTransport>(hub_->endpoint());
    b_ = std::make_unique<FaultyTransport>(hub_->endpoint());
    ASSERT_TRUE(a_->start(&ia_).is_ok());
    ASSERT_TRUE(b_->start(&ib_).is_ok());
  }
  Status send(FaultyTransport& t, PeerId to, std::uint64_t i) {
    return t.send(to, encode(Envelope{}, Sequence{t.self(), 0, i}));
  }
  std::uint64_t index_of(const std::shared_ptr<const Buffer>& f) { return decode_message<Sequence>(f).value().index; }

  std::shared_ptr<InprocHub> hub_;
  std::unique_ptr<FaultyTransport> a_, b_;
  Inbox ia_, ib_;
};

TEST_F(Faults, DropsExactlyTheNextFrames) {
  a_->drop_next(1, 2);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(send(*a_, 1, i).is_ok());
  auto f = ib_.next(1000ms);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(index_of(f->second), 2u);
  EXPECT_EQ(index_of(ib_.next(1000ms)->second), 3u);
  EXPECT_FALSE(ib_.next(100ms).has_value());
}

TEST_F(Faults, DelayHoldsFrames) {
  a_->delay(1, 150ms);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(send(*a_, 1, 0).is_ok());
  ASSERT_TRUE(ib_.next(2000ms).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
}

TEST_F(Faults, PartitionBlocksBothDirectionsUntilHealed) {
  a_->partition(1);
  ASSERT_TRUE(send(*a_, 1, 0).is_ok());  // accepted, then lost
  ASSERT_TRUE(send(*b_, 0, 0).is_ok());  // arrives at a, which discards it
  EXPECT_FALSE(ib_.next(150ms).has_value());
  EXPECT_FALSE(ia_.next(150ms).has_value());
  a_->heal(1);
  ASSERT_TRUE(send(*a_, 1, 1).is_ok());
  auto f = ib_.next(1000ms);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(index_of(f->second), 1u);
}

TEST_F(Faults, KilledLinkIsReportedOnceAndRefused) {
  a_->kill_link(1);
  a_->kill_link(1);
  EXPECT_TRUE(ia_.wait_failed(1, 100ms));
  EXPECT_EQ(ia_.failure_reports(1), 1);
  EXPECT_EQ(send(*a_, 1, 0).code(), StatusCode::kPeerFailed);
  EXPECT_TRUE(a_->peers().empty());
}

}  // namespace
}  // namespace sepal

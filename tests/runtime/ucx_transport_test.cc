// The UCX transport's defences, in one process: two members A (peer 0) and B (peer 1) share a
// link key; an outsider E knows B's worker address but not the key. Whatever E sends, claiming to
// be A or anyone else, with tags under a wrong key or with no tags at all, never reaches B's
// handler, and A's frames still do. A frame over B's size limit is refused before B allocates it.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <fstream>
#include <string>
#include <thread>
#include <atomic>
#include <cstdio>

#include "runtime/membership.h"
#include "runtime/ucx_transport.h"
#include "tests/test_util.h"
#include "tests/runtime/transport_conformance.h"

namespace sepal::test {
namespace {

using namespace std::chrono_literals;

struct Endpoint {
  std::unique_ptr<UcxTransport> transport;
  Inbox inbox;
};

std::unique_ptr<Endpoint> make_endpoint(PeerId id, UcxOptions options = UcxOptions{test_liveness()}) {
  auto e = std::make_unique<Endpoint>();
  auto t = UcxTransport::create(id, options);
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  if (!t.is_ok()) return nullptr;
  e->transport = std::move(t).value();
  return e;
}

void link(Endpoint& from, PeerId to_id, const Endpoint& to, const LinkKey& key) {
  const auto address = to.transport->address();
  ASSERT_TRUE(from.transport->connect(to_id, address, key).is_ok());
}

OutgoingFrame sequence_frame(std::uint32_t sender, std::uint32_t stream, std::uint64_t index) {
  return encode(Envelope{}, Sequence{sender, stream, index});
}

class UcxDefences : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = make_endpoint(0);
    b_ = make_endpoint(1, b_options());
    ASSERT_TRUE(a_ && b_);
    link(*a_, 1, *b_, key_);
    link(*b_, 0, *a_, key_);
    ASSERT_TRUE(a_->transport->start(&a_->inbox).is_ok());
    ASSERT_TRUE(b_->transport->start(&b_->inbox).is_ok());
  }
  void TearDown() override {
    if (a_) a_->transport->stop();
    if (b_) b_->transport->stop();
  }
  virtual UcxOptions b_options() { return UcxOptions{test_liveness()}; }

  // A's frame reaches B (and only A's: every forged one was dropped before it).
  void expect_only_genuine_frame_arrives(std::chrono::milliseconds wait = 5000ms) {
    ASSERT_TRUE(a_->transport->send(1, sequence_frame(0, 1, 42)).is_ok());
    auto f = b_->inbox.next(wait);
    ASSERT_TRUE(f.has_value()) << "A's frame did not arrive";
    EXPECT_EQ(f->first, 0u);
    auto m = decode_message<Sequence>(f->second);
    ASSERT_TRUE(m.is_ok());
    EXPECT_EQ(m->stream, 1u) << "a forged frame reached B's handler";
    EXPECT_EQ(m->index, 42u);
    EXPECT_FALSE(b_->inbox.next(300ms).has_value()) << "more frames than A sent";
  }

  LinkKey key_ = random_link_key();
  std::unique_ptr<Endpoint> a_, b_;
};

TEST_F(UcxDefences, OutsiderFramesNeverReachTheHandler) {
  // Outsiders posing as A (with a wrong key, and without tags), and as a peer B never heard of.
  UcxOptions untagged{test_liveness()};
  untagged.authenticate = false;
  auto wrong_key = make_endpoint(0);
  auto no_tags = make_endpoint(0, untagged);
  auto stranger = make_endpoint(7);
  ASSERT_TRUE(wrong_key && no_tags && stranger);
  for (Endpoint* e : {wrong_key.get(), no_tags.get(), stranger.get()}) {
    link(*e, 1, *b_, random_link_key());
    ASSERT_TRUE(e->transport->start(&e->inbox).is_ok());
  }
  // What a swarm's control plane would act on: a member announcement and a goodbye for A, and
  // plain frames, small and chunked (3 MiB), each from every outsider.
  for (Endpoint* e : {wrong_key.get(), no_tags.get(), stranger.get()}) {
    ASSERT_TRUE(e->transport->send(1, encode(Envelope{}, MemberJoined{MemberInfo{9, "client", {1, 2, 3}}, {}})).is_ok());
    ASSERT_TRUE(e->transport->send(1, encode(Envelope{}, MemberLeaving{0})).is_ok());
    ASSERT_TRUE(e->transport->send(1, sequence_frame(0, 99, 1)).is_ok());
    const std::size_t size = 3u << 20;
    auto data = std::make_shared<const std::vector<std::uint8_t>>(pattern(size));
    ASSERT_TRUE(e->transport->send(1, encode(Envelope{}, Blob{size, false, share_vector<std::uint8_t>(ElementType::kU8, {static_cast<std::int64_t>(size)}, data)})).is_ok());
  }
  std::this_thread::sleep_for(scaled(500ms));
  // Stopping sends each outsider's goodbye: B must not take it as A leaving.
  for (Endpoint* e : {wrong_key.get(), no_tags.get(), stranger.get()}) e->transport->stop();
  std::this_thread::sleep_for(scaled(300ms));
  const auto peers = b_->transport->peers();
  EXPECT_NE(std::find(peers.begin(), peers.end(), 0u), peers.end()) << "a forged goodbye made B drop A";
  EXPECT_EQ(b_->inbox.failure_reports(0), 0) << "a forged message made B report A failed";
  expect_only_genuine_frame_arrives();
}

class UcxFrameLimit : public UcxDefences {
 protected:
  UcxOptions b_options() override {
    UcxOptions o{test_liveness()};
    o.max_frame_bytes = 1u << 20;
    return o;
  }
};

TEST_F(UcxFrameLimit, OversizedFrameIsRefusedBeforeAllocation) {
  // 64 MiB frames to a peer that takes at most 1 MiB: each is dropped chunk by chunk without
  // being allocated, and B's peak memory grows by far less than one of them.
  const std::size_t size = 64u << 20;
  auto data = std::make_shared<const std::vector<std::uint8_t>>(size, std::uint8_t{7});
  const std::size_t before = peak_rss_bytes();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(a_->transport->send(1, encode(Envelope{}, Blob{size, false, share_vector<std::uint8_t>(ElementType::kU8, {static_cast<std::int64_t>(size)}, data)})).is_ok());
  }
  expect_only_genuine_frame_arrives();  // queued after the big ones: they were all consumed
  const std::size_t growth = peak_rss_bytes() - before;
  EXPECT_LT(growth, std::size_t{32} << 20) << "B's peak memory grew by " << growth << " bytes";
}

// Resident memory of this process outside the mapping that starts at `excluded` (VmRSS minus
// that mapping's Rss in /proc/self/smaps).
std::size_t rss_outside(const void* excluded) {
  std::size_t rss = 0, mapping = 0;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stoull(line.substr(6)) * 1024;
  }
  std::ifstream smaps("/proc/self/smaps");
  char start[32];
  std::snprintf(start, sizeof(start), "%lx-", reinterpret_cast<unsigned long>(excluded));
  bool inside = false;
  while (std::getline(smaps, line)) {
    if (line.find('-') != std::string::npos && line.find(' ') != std::string::npos && std::isxdigit(line[0])) {
      inside = line.rfind(start, 0) == 0;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      mapping = std::stoull(line.substr(4)) * 1024;
    }
  }
  return rss > mapping ? rss - mapping : 0;
}

TEST_F(UcxDefences, AFrameOfFourGibibytesIsRefusedAtItsFirstChunk) {
  // A member sends a frame of 4 GiB (a read-only anonymous mapping) to a peer with the default
  // 1 GiB limit: the first chunk's header names the size, the peer refuses the frame there and
  // drops its other chunks unread. Memory is sampled while the sender works through the 4 GiB,
  // leaving out the sender's own mapping (its pages count once read, here).
  const std::size_t size = std::size_t{4} << 30;
  void* mapped = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(mapped, MAP_FAILED);
  TensorPayload zeros;
  zeros.type = ElementType::kU8;
  zeros.shape = {static_cast<std::int64_t>(size)};
  zeros.data = static_cast<const std::byte*>(mapped);
  zeros.bytes = size;
  zeros.owner = std::shared_ptr<const void>(mapped, [size](const void* p) { munmap(const_cast<void*>(p), size); });
  const std::size_t before = rss_outside(mapped);
  std::atomic<bool> sampling{true};
  std::atomic<std::size_t> peak{before};
  std::thread sampler([&] {
    while (sampling) {
      peak = std::max(peak.load(), rss_outside(mapped));
      std::this_thread::sleep_for(20ms);
    }
  });
  ASSERT_TRUE(a_->transport->send(1, encode(Envelope{}, Blob{size, false, zeros})).is_ok());
  // The sender reads and tags all 4 GiB first: minutes on a loaded machine where page faults are slow.
  expect_only_genuine_frame_arrives(scaled(240000ms));  // queued after the 4 GiB: all of it was consumed
  sampling = false;
  sampler.join();
  zeros = {};  // unmapped only now: a sample taken while it goes would miscount
  const std::size_t growth = peak - before;
  EXPECT_LT(growth, std::size_t{64} << 20) << "memory outside the sender's mapping grew by " << growth << " bytes";
}

}  // namespace
}  // namespace sepal::test

// The transport conformance suite across processes: run under mpirun with 3 or more ranks,
// `transport_mpi_test mpi` or `transport_mpi_test ucx`. The last test kills the last rank; the
// survivors end without MPI_Finalize, which could wait for the dead rank (no ULFM here).
#include <sys/resource.h>

#include <csignal>
#include <cstdlib>

#include "runtime/mpi_environment.h"
#include "runtime/mpi_transport.h"
#include "runtime/ucx_transport.h"
#include "tests/runtime/transport_conformance.h"

namespace sepal::test {
namespace {

std::string g_kind;
Transport* g_transport = nullptr;
Inbox* g_inbox = nullptr;

// A barrier that cannot hang: if the other ranks do not arrive within a minute, this rank says
// where it was and aborts.
void bounded_barrier() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  const auto deadline = std::chrono::steady_clock::now() + scaled(std::chrono::milliseconds(60000));
  int done = 0;
  while (!done) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (!done && std::chrono::steady_clock::now() > deadline) {
      const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
      std::printf("rank %d: FAILED: barrier timed out in %s\n", mpi_world_rank(), info ? info->name() : "?");
      std::fflush(stdout);
      std::_Exit(3);
    }
    if (!done) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

RankContext context() {
  return RankContext{*g_transport, *g_inbox, mpi_world_rank(), mpi_world_size(),
                     [] { bounded_barrier(); },
                     [] {
                       std::fflush(stdout);
                       std::raise(SIGKILL);
                     }};
}

class TransportConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    if (mpi_world_size() < 3) GTEST_SKIP() << "needs at least 3 ranks";
  }
};

TEST_F(TransportConformance, OrderingWithManyPeers) {
  auto c = context();
  scenario_ordering_many_peers(c);
}
TEST_F(TransportConformance, OneByteTo256MiB) {
  auto c = context();
  scenario_sizes(c);
}
TEST_F(TransportConformance, ConcurrentSenders) {
  auto c = context();
  scenario_concurrent_senders(c);
}
// An idle UCX progress thread sleeps until there is work: over half a second of silence the
// whole process switches context a few dozen times (keepalives, and the wait's timeout at a
// quarter keepalive period), not the thousand or more that a yielding or sleep-polling thread
// makes, each of which takes a core from a rank that computes.
TEST_F(TransportConformance, IdleUcxProgressThreadSleeps) {
  if (g_kind != "ucx") GTEST_SKIP() << "the MPI transport has no event to wait for";
  bounded_barrier();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past the polling after the barrier
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  getrusage(RUSAGE_SELF, &after);
  const long switches = (after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw);
  EXPECT_LT(switches, 200) << "context switches in 500 ms of idleness";
  bounded_barrier();
}
// A small frame sent while the UCX progress thread waits for events leaves from the sending
// thread: rank 0 sends 300 of them a millisecond apart, and its process switches context about
// once per send (the sender's own sleep), not twice (the progress thread woken for each).
TEST_F(TransportConformance, ASmallSendDoesNotWakeAnIdleUcxProgressThread) {
  if (g_kind != "ucx") GTEST_SKIP() << "the MPI transport's progress thread polls";
  constexpr int kSends = 300;
  bounded_barrier();
  if (mpi_world_rank() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past the polling after the barrier
    rusage before{}, after{};
    getrusage(RUSAGE_SELF, &before);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kSends; ++i) {
      ASSERT_TRUE(g_transport->send(1, encode(Envelope{}, Sequence{0, 11, static_cast<std::uint64_t>(i)})).is_ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    getrusage(RUSAGE_SELF, &after);
    // Voluntary switches only: a busy machine's preemptions are involuntary ones. Besides the
    // sender's sleeps, an idle process wakes about 70 times a second (keepalives, and the wait's
    // timeout at a quarter keepalive period): a slow machine's longer run is allowed 200.
    const long switches = after.ru_nvcsw - before.ru_nvcsw;
    const auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(switches, kSends + 50 + elapsed_ms / 5)
        << "voluntary context switches while sending " << kSends << " small frames in " << elapsed_ms << " ms";
  } else if (mpi_world_rank() == 1) {
    for (int i = 0; i < kSends; ++i) {
      auto f = g_inbox->next(scaled(std::chrono::milliseconds(10000)));
      ASSERT_TRUE(f.has_value()) << "got " << i << " of " << kSends;
      auto m = decode_message<Sequence>(f->second);
      ASSERT_TRUE(m.is_ok());
      EXPECT_EQ(m->index, static_cast<std::uint64_t>(i));
    }
  }
  bounded_barrier();
}
TEST_F(TransportConformance, DeadPeerIsReported) {
  auto c = context();
  scenario_peer_death(c);
}

}  // namespace
}  // namespace sepal::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using namespace sepal;
  if (Status s = mpi_init(&argc, &argv); !s.is_ok()) {
    std::fprintf(stderr, "transport_mpi_test: %s\n", s.to_string().c_str());
    return 1;
  }
  test::g_kind = argc > 1 ? argv[1] : "mpi";
  std::unique_ptr<Transport> transport;
  if (test::g_kind == "mpi") {
    auto t = MpiTransport::create(MPI_COMM_WORLD, test::test_liveness());
    if (!t.is_ok()) { std::fprintf(stderr, "%s\n", t.status().to_string().c_str()); return 1; }
    transport = std::move(t).value();
  } else if (test::g_kind == "ucx") {
    auto t = UcxTransport::create_over_mpi(MPI_COMM_WORLD, UcxOptions{test::test_liveness()});
    if (!t.is_ok()) { std::fprintf(stderr, "%s\n", t.status().to_string().c_str()); return 1; }
    transport = std::move(t).value();
  } else {
    std::fprintf(stderr, "transport_mpi_test: unknown transport '%s' (mpi or ucx)\n", test::g_kind.c_str());
    return 2;
  }
  test::Inbox inbox;
  if (Status s = transport->start(&inbox); !s.is_ok()) {
    std::fprintf(stderr, "%s\n", s.to_string().c_str());
    return 1;
  }
  test::g_transport = transport.get();
  test::g_inbox = &inbox;
  // Watchdog: a rank still running after four minutes prints where it is and aborts.
  std::thread([] {
    std::this_thread::sleep_for(test::scaled(std::chrono::milliseconds(240000)));
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::printf("rank %d: FAILED: watchdog fired in %s\n", mpi_world_rank(), info ? info->name() : "(after the tests)");
    std::fflush(stdout);
    std::_Exit(4);
  }).detach();
  const int result = RUN_ALL_TESTS();
  std::printf("rank %d: transport %s conformance %s\n", mpi_world_rank(), test::g_kind.c_str(),
              result == 0 ? "passed" : "FAILED");
  std::fflush(stdout);
  transport->stop();
  std::_Exit(result);  // no MPI_Finalize: a dead rank would make it wait
}

// The transport conformance suite across processes: run under mpirun with 3 or more ranks,
// `transport_mpi_test mpi` or `transport_mpi_test ucx`. The last test kills the last rank; the
// survivors end without MPI_Finalize, which could wait for the dead rank (no ULFM here).
#include <csignal>
#include <cstdlib>

#include "runtime/mpi_environment.h"
#include "runtime/mpi_transport.h"
#include "runtime/ucx_transport.h"
#include "tests/transport_conformance.h"

namespace sepal::test {
namespace {

std::string g_kind;
Transport* g_transport = nullptr;
Inbox* g_inbox = nullptr;

RankContext context() {
  return RankContext{*g_transport, *g_inbox, mpi_world_rank(), mpi_world_size(),
                     [] { MPI_Barrier(MPI_COMM_WORLD); },
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
    auto t = UcxTransport::create_over_mpi(MPI_COMM_WORLD, test::test_liveness());
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
  const int result = RUN_ALL_TESTS();
  std::printf("rank %d: transport %s conformance %s\n", mpi_world_rank(), test::g_kind.c_str(),
              result == 0 ? "passed" : "FAILED");
  std::fflush(stdout);
  transport->stop();
  std::_Exit(result);  // no MPI_Finalize: a dead rank would make it wait
}

// One client flooding a block host does not take it from the others, across processes over UCX:
//   rank 0: a block host serving tinystories-656K, with small mailbox bounds (16 messages,
//           16 MiB per sender) so the test can tell a bounded host from an unbounded one;
//   rank 1: a client generating the greedy reference through it;
//   rank 2: a client flooding the host with 64-token steps, thousands in flight, until rank 1 is
//           done.
// Rank 1 must get exactly the reference text; rank 2 must have been refused (kResourceExhausted,
// naming the limit); rank 0's peak memory must grow by less than 96 MiB over the flood. Each rank
// prints "rank R: passed" or "rank R: FAILED: why" (tests/run_mpi_test.sh counts them).
//   mpirun -np 3 flood_mpi_test MODELS_DIR
#include <atomic>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "actors/block_host.h"
#include "actors/client_driver.h"
#include "actors/blocking_facade.h"
#include "kernels/error.h"
#include "model/model_ends.h"
#include "model/safetensors.h"
#include "runtime/mpi_environment.h"
#include "runtime/ucx_transport.h"
#include "tests/actors/fixed_routes.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;

int verdict(int rank, const std::string& failure) {
  if (failure.empty()) std::printf("rank %d: passed\n", rank);
  else std::printf("rank %d: FAILED: %s\n", rank, failure.c_str());
  std::fflush(stdout);
  return failure.empty() ? 0 : 1;
}

int run(const std::string& models) {
  if (Status s = mpi_init(); !s.is_ok()) return verdict(-1, s.to_string());
  const int rank = mpi_world_rank();
  if (mpi_world_size() != 3) return verdict(rank, "run with mpirun -np 3");
  const auto model = std::filesystem::path(models) / "tinystories-656K";
  const ModelConfig config = read_model_config(model);
  const Checkpoint checkpoint = Checkpoint::open(model);
  auto transport = UcxTransport::create_over_mpi(MPI_COMM_WORLD, UcxOptions{LivenessOptions{200ms, 5000ms}});
  if (!transport.is_ok()) return verdict(rank, transport.status().to_string());
  ThreadPoolScheduler scheduler(2);
  // 16 messages: a flooder slowed by busy cores (the full suite beside CPU hogs sent half as many
  // steps as on an idle machine) must still outpace the host and be refused.
  const MailboxLimits limits = rank == 0 ? MailboxLimits{16, std::size_t{16} << 20} : MailboxLimits{};
  ActorSystem system(*transport.value(), scheduler, limits);
  if (rank == 0) {
    auto blocks = std::make_shared<const BlockStack>(BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32));
    system.adopt_with_id(kBlockHostActorId, std::make_unique<BlockHost>(blocks, BlockHostOptions{}));
  }
  if (Status s = system.start(); !s.is_ok()) return verdict(rank, s.to_string());
  MPI_Barrier(MPI_COMM_WORLD);  // the host serves
  const std::size_t rss_before = test::peak_rss_bytes();
  const ActorRef<BlockHostProtocol> host{{0, kBlockHostActorId}};
  std::string failure;
  MPI_Request done;
  if (rank == 1) {
    std::ifstream in(std::filesystem::path(models) / "reference" / "tinystories-656K.greedy.json");
    std::stringstream text;
    text << in.rdbuf();
    const auto ref = nlohmann::json::parse(text.str());
    GenerationRequest request;
    request.prompt_ids = ref["prompt_ids"].get<std::vector<std::int32_t>>();
    request.max_new_tokens = ref["max_new_tokens"].get<std::int64_t>();
    // The flood runs a few seconds first: its window (4000 steps of 32 KiB, 125 MiB) is more than
    // the bound, so a host that took in whatever a peer sends would show it (it did: 105 MiB
    // after 8 s, before the transport bounded what a peer may have being received).
    std::this_thread::sleep_for(4s);
    try {
      const ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
      ClientDriverOptions options;
      options.num_blocks = config.num_layers;
      options.wire_compression = false;
      const std::vector<RouteHop> one_host{RouteHop{ActorRef<BlockHostProtocol>{{0, kBlockHostActorId}}, 0, config.num_layers, {}}};
      const auto driver = add_client_driver(system, std::make_unique<test::FixedRoutes>(one_host), options);
      auto pipeline = DriverSession::open(system, driver, session_capacity(config, request));
      if (!pipeline.is_ok()) fail(pipeline.status().message());
      const auto result = generate(ends, *pipeline.value(), request, [](std::int32_t) {});
      if (result.generated_ids != ref["generated_ids"].get<std::vector<std::int32_t>>()) {
        failure = "the text differs from the reference";
      } else {
        std::printf("rank 1: generated the reference (%zu tokens) during the flood\n", result.generated_ids.size());
      }
    } catch (const Error& e) {
      failure = std::string("generation failed: ") + e.what();
    }
    MPI_Ibarrier(MPI_COMM_WORLD, &done);
    MPI_Wait(&done, MPI_STATUS_IGNORE);
  } else if (rank == 2) {
    // Sessions to step, 64 tokens a step, as many in flight as the window lets out.
    std::atomic<std::int64_t> answered{0}, refused{0}, outstanding{0};
    std::string refusal;
    std::mutex mutex;
    const std::int64_t h = config.hidden_size, n = 64;
    std::vector<float> rows(static_cast<std::size_t>(n * h), 0.25f);
    const TensorPayload payload = TensorPayload::copy_of(ElementType::kF32, {n, h}, rows.data(), rows.size());
    for (std::uint64_t s = 1; s <= 8; ++s) {
      (void)system.request_sync(host, OpenSession{s, config.max_position_embeddings, 0, 0, {}, 0, {}}, 10s);
    }
    MPI_Ibarrier(MPI_COMM_WORLD, &done);
    int finished = 0;
    std::int64_t sent = 0;
    while (!finished) {
      if (outstanding < 4000) {
        ++outstanding;
        const std::uint64_t session = 1 + static_cast<std::uint64_t>(sent % 8);
        const std::int64_t position = (sent / 8) * n % config.max_position_embeddings;
        system.request(host, Step{session, position, payload, 0, {}, {}}, 120s, [&](Result<StepResult> r) {
          --outstanding;
          ++answered;
          if (!r.is_ok() && r.status().code() == StatusCode::kResourceExhausted) {
            if (++refused == 1) {
              std::lock_guard lock(mutex);
              refusal = r.status().message();
            }
          }
        });
        ++sent;
      } else {
        std::this_thread::sleep_for(1ms);
      }
      MPI_Test(&done, &finished, MPI_STATUS_IGNORE);
    }
    std::printf("rank 2: sent %lld steps, %lld answered, %lld refused: %s\n", static_cast<long long>(sent),
                static_cast<long long>(answered.load()), static_cast<long long>(refused.load()), refusal.c_str());
    if (refused == 0) failure = "the flood was never refused";
    else if (refusal.find("the limit per sender") == std::string::npos) failure = "the refusal does not name the limit";
    while (outstanding > 0 && answered < sent) std::this_thread::sleep_for(10ms);  // the rest drain or time out
  } else {
    MPI_Ibarrier(MPI_COMM_WORLD, &done);
    MPI_Wait(&done, MPI_STATUS_IGNORE);
    const std::size_t growth = test::peak_rss_bytes() - rss_before;
    std::printf("rank 0: peak memory grew by %.1f MiB during the flood\n", static_cast<double>(growth) / (1 << 20));
    if (growth >= (std::size_t{96} << 20)) failure = "the host's memory grew by " + std::to_string(growth) + " bytes";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const int rc = verdict(rank, failure);
  system.stop();
  scheduler.shutdown();
  std::_Exit(rc);  // no MPI_Finalize, as the other MPI tests
}

}  // namespace
}  // namespace sepal

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: mpirun -np 3 flood_mpi_test MODELS_DIR\n");
    return 2;
  }
  return sepal::run(argv[1]);
}

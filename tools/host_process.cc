#include "tools/host_process.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <future>
#include <thread>

#include "actors/block_host.h"
#include "actors/host_agent.h"
#include "kernels/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace sepal::tools {
namespace {

std::atomic<bool> g_leave{false};
extern "C" void request_leave(int) { g_leave = true; }

}  // namespace

int run_host(SwarmProcess& swarm, const HostSettings& settings) {
  const ModelConfig config = read_model_config(settings.model_dir);
  const Checkpoint checkpoint = Checkpoint::open(settings.model_dir);
  const std::string model_name = std::filesystem::path(settings.model_dir).filename().string();
  ActorSystem& system = swarm.system();

  auto ended = std::make_shared<std::promise<std::string>>();
  auto ended_once = std::make_shared<std::once_flag>();
  auto end = [ended, ended_once](const std::string& why) { std::call_once(*ended_once, [&] { ended->set_value(why); }); };
  BlockHostOptions options;
  options.model_name = model_name;
  options.cache_budget_bytes = settings.cache_budget_bytes;
  options.max_sessions_per_client = settings.max_sessions_per_client;
  options.max_cache_bytes_per_client = settings.max_cache_bytes_per_client;
  options.max_step_tokens = settings.max_step_tokens;
  options.on_shutdown = [end](const std::string& reason) { end(reason); };
  auto actor = std::make_unique<BlockHost>(nullptr, options);
  BlockHost& host = *actor;
  system.adopt_with_id(kBlockHostActorId, std::move(actor));
  system.watch_peer_failures([end](PeerId peer, const Status&) {
    if (peer == 0) end("the client is gone");
  });

  HostAgentOptions agent_options;
  agent_options.model = model_name;
  agent_options.num_blocks = config.num_layers;
  agent_options.max_blocks = settings.max_blocks > 0 ? settings.max_blocks : config.num_layers;
  agent_options.throughput = settings.throughput;
  const PeerId self = swarm.self();
  agent_options.load = [&checkpoint, &config, &settings, self](BlockRange r) {
    auto blocks = std::make_shared<const BlockStack>(BlockStack::load(checkpoint, config, r.first, r.last, settings.loading));
    std::fprintf(stderr, "sepal: host %u (pid %d) serves blocks [%lld, %lld): %.1f MB of %s weights\n", self, getpid(),
                 static_cast<long long>(r.first), static_cast<long long>(r.last), blocks->weight_bytes() / 1e6,
                 std::string(dtype_name(settings.loading.dtype)).c_str());
    return blocks;
  };
  HostAgent agent(system, host, {{0, kBalancerActorId}}, agent_options);
  std::signal(SIGTERM, request_leave);
  std::signal(SIGINT, request_leave);
  if (Status s = agent.join(std::chrono::minutes(5)); !s.is_ok()) fail("cannot join the swarm: ", s.message());
  agent.start();

  auto done = ended->get_future();
  while (done.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
    if (!g_leave) continue;
    std::fprintf(stderr, "sepal: host %u leaving the swarm\n", self);
    const Status left = agent.leave();
    if (!left.is_ok()) std::fprintf(stderr, "sepal: host %u: the balancer did not acknowledge the leave: %s\n", self, left.to_string().c_str());
    (void)swarm.membership().leave(std::chrono::seconds(5));
    swarm.stop();
    std::fprintf(stderr, "sepal: host %u left\n", self);
    std::fflush(stderr);
    std::_Exit(0);  // not MPI_Finalize: it would wait for the ranks that stay
  }
  agent.stop();
  std::fprintf(stderr, "sepal: host %u done (%s)\n", self, done.get().c_str());
  std::fflush(stderr);
  // The client waits for the hosts to leave the membership before it ends; a spawned host's
  // output goes through the client's process, so later writes must not kill it (SIGPIPE).
  std::signal(SIGPIPE, SIG_IGN);
  (void)swarm.membership().leave(std::chrono::seconds(2));
  swarm.stop();
  return 0;
}

}  // namespace sepal::tools

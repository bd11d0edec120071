#include "actors/host_node.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "actors/blocking_facade.h"
#include "actors/swarm_node.h"
#include "kernels/cpu_isa.h"
#include "model/huge_buffer.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "runtime/mpi_environment.h"

namespace sepal {
namespace {

std::atomic<bool> g_leave{false};
extern "C" void request_leave(int) { g_leave = true; }

}  // namespace

HostActors add_host_actors(ActorSystem& system, const SwarmWorld& world, BlockHostOptions host, HostAgentOptions agent) {
  host.coordinator = world.coordinator;
  auto actor = std::make_unique<BlockHost>(nullptr, std::move(host));
  HostActors out;
  out.host = actor.get();
  system.adopt_with_id(kBlockHostActorId, std::move(actor));
  out.agent = add_host_agent(system, *out.host, world.balancer(), std::move(agent));
  return out;
}

HostEnd serve_blocks(SwarmNode& node, const HostSettings& settings) {
  std::optional<ModelConfig> config;
  std::optional<Checkpoint> checkpoint;
  std::shared_ptr<Backend> backend;  // null: the CPU
  try {
    config = read_model_config(settings.model_dir);
    checkpoint.emplace(Checkpoint::open(settings.model_dir));
    if (!settings.device.is_cpu()) backend = open_backend(settings.device);
  } catch (const std::exception& e) {
    return {error(StatusCode::kInvalidArgument, e.what())};
  }
  const std::string model_name = std::filesystem::path(settings.model_dir).filename().string();
  ActorSystem& system = node.system();
  const SwarmWorld& world = node.world();

  auto ended = std::make_shared<std::promise<std::string>>();
  auto ended_once = std::make_shared<std::once_flag>();
  // Not empty: the swarm dropped this host, and why. Written, if at all, by the call that ends
  // serving, before the promise is fulfilled; read after it.
  auto dropped = std::make_shared<std::string>();
  auto end = [ended, ended_once, dropped](const std::string& why, bool dropped_by_swarm = false) {
    std::call_once(*ended_once, [&] {
      if (dropped_by_swarm) *dropped = why;
      ended->set_value(why);
    });
  };
  BlockHostOptions options;
  options.model_name = model_name;
  // Where the kernels run, as far as it decides the bits: the CPU's kernel level, or the GPU's
  // model (not its index: two H200s compute alike).
  options.numerics = describe_numerics(settings.loading, backend ? "cuda (" + backend->info().name + ")"
                                                                 : "cpu " + std::string(cpu_isa_name(numerics_level(active_cpu_isa(), settings.loading.dtype))));
  options.cache_budget_bytes = settings.cache_budget_bytes;
  // Sessions come and go all day: their freed caches (and blocks the host moves away from) are
  // kept for the next ones, up to half the budget, so that a new session's cache is memory the
  // process has touched already (model/huge_buffer.h). A GPU host's caches are on the device.
  if (!backend) set_huge_buffer_reuse_limit(static_cast<std::size_t>(std::max<std::int64_t>(settings.cache_budget_bytes, 0) / 2));
  options.max_sessions_per_client = settings.max_sessions_per_client;
  options.max_cache_bytes_per_client = settings.max_cache_bytes_per_client;
  options.max_step_tokens = settings.max_step_tokens;
  options.batch_steps = settings.batch_steps;
  options.coordinator = world.coordinator;
  options.on_shutdown = [end](const std::string& reason) { end(reason); };
  const PeerId coordinator = world.coordinator;
  SwarmNode* swarm = &node;
  system.watch_peer_failures([end, coordinator, swarm](PeerId peer, const Status&) {
    if (peer != coordinator) return;
    // A host that was itself stopped past the failure timeout finds everyone silent when it runs
    // again: the swarm has dropped it, rather than the other way round.
    std::string why = "the coordinator is gone, or this host lost contact with it";
    if (const auto paused = swarm->membership().recent_pause()) {
      char text[160];
      std::snprintf(text, sizeof text, "this host did not run for %.1f s, longer than the failure timeout, and the swarm dropped it",
                    static_cast<double>(paused->count()) / 1e3);
      why = text;
    }
    end(why, /*dropped_by_swarm=*/true);  // unless serving ended already (the client finished)
  });

  HostAgentOptions agent_options;
  // A move whose blocks would not load: the agent has left the swarm, and the host ends with the
  // reason (the promise orders the write before the read below).
  auto load_failure = std::make_shared<Status>();
  agent_options.on_failure = [end, load_failure](const Status& why) {
    *load_failure = why;
    end(why.message() + "; left the swarm");
  };
  agent_options.model = model_name;
  agent_options.num_blocks = config->num_layers;
  agent_options.max_blocks = settings.max_blocks > 0 ? settings.max_blocks : config->num_layers;
  agent_options.throughput = settings.throughput;
  const PeerId self = node.self();
  const ModelConfig& model = *config;
  const Checkpoint& weights = *checkpoint;
  auto host_actor = std::make_shared<std::atomic<BlockHost*>>(nullptr);
  agent_options.load = [&weights, &model, &settings, self, backend, host_actor](BlockRange r) {
    BlockStack stack = BlockStack::load(weights, model, r.first, r.last, settings.loading);
    std::string where = "";
    if (backend) {
      stack.place_on(backend);
      const BackendInfo info = backend->info();
      where = " on " + device_name(info.device) + " (" + info.name + ", " + std::to_string(info.free_bytes >> 20) +
              " MiB free)";
      // The caches go in what the device has left, with a tenth kept for the libraries' own use.
      if (BlockHost* host = host_actor->load()) host->limit_cache_budget(info.free_bytes / 10 * 9);
    }
    auto blocks = std::make_shared<const BlockStack>(std::move(stack));
    std::fprintf(stderr, "sepal: host %u (pid %d) serves blocks [%lld, %lld): %.1f MB of %s weights%s\n", self, getpid(),
                 static_cast<long long>(r.first), static_cast<long long>(r.last), blocks->weight_bytes() / 1e6,
                 std::string(dtype_name(settings.loading.dtype)).c_str(), where.c_str());
    return blocks;
  };
  const HostActors actors = add_host_actors(system, world, options, agent_options);
  host_actor->store(actors.host);
  std::signal(SIGTERM, request_leave);
  std::signal(SIGINT, request_leave);
  if (auto joined = join_swarm(system, actors.agent, std::chrono::minutes(5)); !joined.is_ok()) {
    system.remove(actors.agent.address);
    return {error(joined.status().code(), "cannot join the swarm: ", joined.status().message())};
  }

  auto done = ended->get_future();
  while (done.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
    if (!g_leave) continue;
    std::fprintf(stderr, "sepal: host %u leaving the swarm\n", self);
    const Status left = leave_swarm(system, actors.agent);
    if (!left.is_ok()) std::fprintf(stderr, "sepal: host %u: the balancer did not acknowledge the leave: %s\n", self, left.to_string().c_str());
    (void)node.membership().leave(std::chrono::seconds(5));
    node.stop();
    std::fprintf(stderr, "sepal: host %u left\n", self);
    std::fflush(stderr);
    // A host launched with the swarm must not MPI_Finalize: it would wait for the ranks that
    // stay. A joined host's MPI job is its own: finalising lets its mpirun (a Slurm job) end well.
    if (node.joined()) mpi_finalize_now();
    std::_Exit(0);
  }
  (void)system.send(actors.agent, StopAnnouncing{});
  const auto [batches, batched] = actors.host->batches();
  std::fprintf(stderr, "sepal: host %u done (%s); %lld batches of sessions' steps held %lld steps\n", self,
               done.get().c_str(), static_cast<long long>(batches), static_cast<long long>(batched));
  if (const BlockHost::Forwards f = actors.host->forwards(); f.count > 0) {
    std::fprintf(stderr, "sepal: host %u ran %lld inference forwards in %.3f s; %lld of one row, %.3f ms each\n", self,
                 static_cast<long long>(f.count), f.seconds, static_cast<long long>(f.single_row),
                 f.single_row > 0 ? 1e3 * f.single_row_seconds / static_cast<double>(f.single_row) : 0.0);
  }
  std::fflush(stderr);
  // The client waits for the hosts to leave the membership before it ends; a spawned host's
  // output goes through the client's process, so later writes must not kill it (SIGPIPE).
  std::signal(SIGPIPE, SIG_IGN);
  (void)node.membership().leave(std::chrono::seconds(2));
  node.stop();
  system.remove(actors.agent.address);  // its loading thread, if any, ends before the node does
  if (!load_failure->is_ok()) return {*load_failure};
  return {Status::ok(), *dropped};
}

}  // namespace sepal

#include "actors/swarm_launch.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "actors/blocking_facade.h"
#include "actors/swarm_node.h"
#include "runtime/mpi_environment.h"
#include "runtime/process_spawn.h"

namespace sepal {

int launched_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  // A task of `srun -n N`: srun's PMIx does not always say the size in the environment, and MPI
  // may not even see it (mpi_init then refuses; docs/operations.md, Slurm).
  if (std::getenv("SLURM_PROCID")) {
    if (const char* v = std::getenv("SLURM_STEP_NUM_TASKS")) return std::atoi(v);
  }
  return 1;
}

Result<std::unique_ptr<ClientNode>> launch_client(int* argc, char*** argv, ClientLaunch launch) {
  const int launched = launched_world_size();
  if (launched > 1 && launch.spawn_hosts > 0) {
    return error(StatusCode::kInvalidArgument, "--hosts starts hosts itself; do not also launch with mpirun -np > 1");
  }
  // Hosts spawned on this machine by a process typed in a shell: let Open MPI put more processes
  // than cores here, and keep its TCP on loopback unless hosts may join from elsewhere.
  if (launch.spawn_hosts > 0) prepare_local_spawn_environment(/*loopback_only=*/launch.listen_file.empty());
  SEPAL_RETURN_IF_ERROR(mpi_init(argc, argv));
  MPI_Comm comm = MPI_COMM_WORLD;
  if (launch.spawn_hosts > 0) {
    std::fprintf(stderr, "sepal: starting %d block hosts\n", launch.spawn_hosts);
    auto merged = spawn_and_merge(std::filesystem::read_symlink("/proc/self/exe").string(), launch.host_args,
                                  launch.spawn_hosts, std::chrono::seconds(120));
    if (!merged.is_ok()) {
      // The usual cause on one machine is Open MPI's slot count; sepal lifts it unless the
      // environment set it otherwise.
      const char* oversubscribe = std::getenv("OMPI_MCA_rmaps_base_oversubscribe");
      const std::string hint = oversubscribe && std::string(oversubscribe) != "1"
                                   ? " (OMPI_MCA_rmaps_base_oversubscribe is " + std::string(oversubscribe) +
                                         " here: set it to 1 to start more processes than cores)"
                                   : "";
      return error(merged.status().code(), "cannot start ", launch.spawn_hosts, " block hosts: ", merged.status().message(), hint);
    }
    comm = merged.value();
  }
  if (launched > 1 && mpi_world_rank() > 0) {
    // A block host under mpirun: the same node as sepal serve runs.
    auto node = SwarmNode::over_comm(comm, kHostRole, launch.node);
    if (!node.is_ok()) return node.status();
    HostEnd end = serve_blocks(*node.value(), launch.host);
    // Dropped by the swarm (stopped, or cut off, past the failure timeout): where the swarm admits
    // joiners (--listen, over UCX), the host joins again through its port file, as `serve --join`
    // does: a new member, placed afresh. MPI's world is left as it is, for the job's end.
    const bool can_join = !launch.listen_file.empty() && launch.secret && launch.node.transport.name == "ucx";
    while (end.status.is_ok() && !end.dropped.empty() && can_join) {
      node.value().reset();
      std::fprintf(stderr, "sepal: joining the swarm again through %s\n", launch.listen_file.c_str());
      std::fflush(stderr);
      node = SwarmNode::join(launch.listen_file, *launch.secret, kHostRole, launch.node);
      if (!node.is_ok()) {  // the job goes on without this host, as it would have before
        std::fprintf(stderr, "sepal: this host ends: %s\n", node.status().message().c_str());
        return std::unique_ptr<ClientNode>();
      }
      end = serve_blocks(*node.value(), launch.host);
    }
    if (end.status.is_ok() && !end.dropped.empty()) {
      std::fprintf(stderr, "sepal: this host ends; it would join again where the swarm admits joiners (--listen, --transport ucx)\n");
    }
    SEPAL_RETURN_IF_ERROR(end.status);
    return std::unique_ptr<ClientNode>();
  }
  auto node = SwarmNode::over_comm(comm, kClientRole, launch.node);
  if (!node.is_ok()) return node.status();
  if (!launch.listen_file.empty()) {
    if (!launch.secret) return error(StatusCode::kInvalidArgument, "admitting joiners needs a swarm secret");
    SEPAL_RETURN_IF_ERROR(node.value()->listen(launch.listen_file, *launch.secret, launch.listen_host));
  }
  launch.client.expected_hosts = launched > 1 ? launched - 1 : launch.spawn_hosts;
  return ClientNode::start(std::move(node).value(), std::move(launch.client));
}

HostExit run_host(int* argc, char*** argv, const HostLaunch& launch) {
  if (Status s = mpi_init(argc, argv); !s.is_ok()) return {s};
  Result<std::unique_ptr<SwarmNode>> node = error(StatusCode::kInternal, "no node");
  if (launch.spawned) {
    auto parent = merge_with_parent();
    if (!parent.is_ok()) return {parent.status()};
    node = SwarmNode::over_comm(parent.value(), kHostRole, launch.node);
  } else {
    if (!launch.secret) return {error(StatusCode::kInvalidArgument, "joining a swarm needs its secret")};
    node = SwarmNode::join(launch.join_file, *launch.secret, kHostRole, launch.node);
  }
  if (!node.is_ok()) return {node.status()};
  if (launch.spawned) return {serve_blocks(*node.value(), launch.host).status, true};
  // A joined host that the swarm dropped (it was stopped, or cut off, past the failure timeout)
  // joins again through the same port file: a new member, placed afresh by the balancer.
  for (;;) {
    const HostEnd end = serve_blocks(*node.value(), launch.host);
    if (!end.status.is_ok() || end.dropped.empty()) return {end.status, true};
    node.value().reset();
    std::fprintf(stderr, "sepal: joining the swarm again through %s\n", launch.join_file.c_str());
    std::fflush(stderr);
    node = SwarmNode::join(launch.join_file, *launch.secret, kHostRole, launch.node);
    if (!node.is_ok()) return {node.status()};
  }
}

Result<BlockMapReply> observe_block_map(int* argc, char*** argv, const std::string& join_file, const SwarmSecret& secret,
                                        std::chrono::milliseconds join_timeout) {
  SEPAL_RETURN_IF_ERROR(mpi_init(argc, argv));
  SwarmNodeSettings settings;
  settings.join_timeout = join_timeout;
  auto node = SwarmNode::join(join_file, secret, kObserverRole, settings);
  if (!node.is_ok()) return node.status();
  SwarmNode& swarm = *node.value();
  // A reply can miss a newcomer whose address the client's side is still connecting to: ask again.
  auto map = fetch_block_map(swarm.system(), swarm.world().balancer(), std::chrono::seconds(5));
  for (int attempt = 1; attempt < 4 && !map.is_ok() && map.status().code() == StatusCode::kTimeout; ++attempt) {
    map = fetch_block_map(swarm.system(), swarm.world().balancer(), std::chrono::seconds(5));
  }
  (void)swarm.membership().leave(std::chrono::seconds(5));
  swarm.stop();
  if (!map.is_ok()) return error(map.status().code(), "the balancer did not answer: ", map.status().message());
  return map;
}

}  // namespace sepal

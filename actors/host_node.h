#pragma once
// A block host node: loads the blocks the balancer assigns, serves them, follows moves, and ends
// when the coordinator says so, when the coordinator's process is gone, or, gracefully, on
// SIGTERM or SIGINT (it tells the balancer, refuses new work, and leaves the membership). Every
// way a host starts (sepal serve --join, a host spawned by sepal generate --hosts, a rank of an
// mpirun swarm) runs this.

#include <string>

#include "actors/block_host.h"
#include "actors/host_agent.h"
#include "actors/swarm_world.h"
#include "kernels/device.h"
#include "model/weights.h"
#include "runtime/status.h"

namespace sepal {

class SwarmNode;

struct HostSettings {
  std::string model_dir;
  WeightLoading loading{DType::kF32};
  std::int64_t max_blocks = 0;  ///< 0: every block
  double throughput = 0;        ///< 0: measure
  std::int64_t cache_budget_bytes = std::int64_t{2} << 30;
  std::int64_t max_sessions_per_client = 64;
  std::int64_t max_cache_bytes_per_client = 0;  ///< 0: half of the budget
  std::int64_t max_step_tokens = 4096;
  bool batch_steps = true;  ///< BlockHostOptions::batch_steps
  /// Where the blocks run: on a GPU, weights and KV caches are in its memory, and the cache budget
  /// is at most what the device has free once the weights are loaded.
  Device device;
};

/// A host's actors on `system`: the block host (serving nothing yet) and its agent, which joins
/// the swarm of `world` when asked (actors/blocking_facade.h: join_swarm). The in-process swarms
/// of the tests are built with it too.
struct HostActors {
  BlockHost* host = nullptr;  ///< owned by `system`
  ActorRef<HostAgentProtocol> agent;
};
HostActors add_host_actors(ActorSystem& system, const SwarmWorld& world, BlockHostOptions host, HostAgentOptions agent);

/// How serve_blocks ended.
struct HostEnd {
  /// An error when the model cannot be read, the balancer does not place the host, or a move's
  /// blocks would not load (the host has left the swarm).
  Status status;
  /// Not empty: the swarm dropped this host, and why: its coordinator went silent past the failure
  /// timeout (gone, or cut off from this host), or this process itself did not run that long. A
  /// host that joined through a port may join again; `status` is ok.
  std::string dropped = {};
};

/// Serves until the swarm ends. A graceful leave (SIGTERM, SIGINT) ends the process itself, with
/// status 0, without MPI_Finalize (which would wait for the ranks that stay) unless the host
/// joined through a port (then its MPI job is its own, and it finalises).
HostEnd serve_blocks(SwarmNode& node, const HostSettings& settings);

}  // namespace sepal

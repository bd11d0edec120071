#pragma once
// The client side of a swarm, shared by the commands that run a model through one (generate,
// perplexity): the swarm options, the launch (ranks of mpirun, hosts spawned with --hosts, hosts
// joining with --listen), the balancer on the client's process, pipelines through the hosts, and
// the shutdown that ends the hosts.

#include <boost/program_options.hpp>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "actors/remote_pipeline.h"
#include "actors/swarm_router.h"
#include "model/model_config.h"
#include "tools/swarm_process.h"
#include "tools/weight_options.h"

namespace sepal::tools {

struct SwarmOptions {
  std::string transport = "ucx";
  std::string mode = "push";
  std::string wan;
  std::string config_path;
  std::string listen_file;
  std::string secret_file;
  std::string block_map_log;
  int spawn_hosts = 0;
  int replicas = 1;
  std::int64_t max_blocks = 0;
  double throughput = 0;
  double route_timeout_s = 30;
  bool wire_compression = true;
};

/// Adds the swarm options (--hosts, --transport, --mode, --wan, --config, --replicas,
/// --max-blocks, --throughput, --listen, --secret-file, --block-map-log, --route-timeout,
/// --no-wire-compression).
void add_swarm_options(boost::program_options::options_description& description, SwarmOptions& options);

/// How many processes mpirun (or srun) launched together with this one; 1 when alone.
int launched_world_size();

/// True when the options or the launch ask for a swarm rather than a single process. Throws
/// UsageError when swarm flags were given to a single process (they would do nothing).
bool wants_swarm(const SwarmOptions& options, const boost::program_options::variables_map& vm);

/// The client's view of a running swarm.
class ClientSwarm {
 public:
  /// Checks the options (UsageError), starts MPI and the swarm. On a block-host rank it serves
  /// until the swarm ends and returns nullptr with the process's exit code in `host_exit`.
  /// Otherwise it returns the client once every launched host is placed.
  static std::unique_ptr<ClientSwarm> start(int* argc, char*** argv, const SwarmOptions& options,
                                            const std::string& model_dir, const ModelConfig& config,
                                            const WeightOptions& weights,
                                            const boost::program_options::variables_map& vm, int threads,
                                            int& host_exit);
  ~ClientSwarm();

  /// A pipeline over every block through the swarm, with a session of `capacity` positions.
  /// `session` must differ between pipelines of one client.
  std::unique_ptr<RemotePipeline> open(std::int64_t capacity, std::uint64_t session);

  int host_count() const { return host_count_; }
  const SwarmOptions& options() const { return options_; }
  /// Route, mode, failovers, wire compression and block map of `pipeline`, for --json.
  nlohmann::json stats(const RemotePipeline& pipeline);
  /// Tells every host to end and waits (up to 10 s) until they have left.
  void shutdown();

 private:
  ClientSwarm() = default;

  SwarmOptions options_;
  std::int64_t num_blocks_ = 0;
  int host_count_ = 0;
  std::ofstream map_log_;
  std::mutex map_log_mutex_;
  std::unique_ptr<SwarmProcess> swarm_;
  std::unique_ptr<SwarmRouter> router_;
  std::shared_ptr<PushInbox> push_inbox_;
  bool shut_down_ = false;
};

}  // namespace sepal::tools

#pragma once
// The swarm flags of the commands that run a model through one (generate, perplexity), and the
// launch they ask for: ranks of mpirun, hosts spawned with --hosts, hosts joining with --listen.
// The nodes themselves are assembled in actors/ (client_node.h, host_node.h, swarm_node.h).

#include <boost/program_options.hpp>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "actors/client_node.h"
#include "actors/blocking_facade.h"
#include "actors/swarm_training.h"
#include "model/model_config.h"
#include "model/prompt_tuning.h"
#include "tools/weight_options.h"

namespace sepal::tools {

struct SwarmOptions {
  std::string transport = "ucx";
  std::string mode = "push";
  std::string wan;
  std::string config_path;
  std::string listen_file;
  std::string listen_host;
  std::string secret_file;
  std::string block_map_log;
  int spawn_hosts = 0;
  int replicas = 1;
  std::int64_t max_blocks = 0;
  double throughput = 0;
  double route_timeout_s = 30;
  double move_timeout_s = 60;
  double failure_timeout_s = 5;
  bool wire_compression = true;
  bool step_batching = true;
};

/// Adds the swarm options (--hosts, --transport, --mode, --wan, --config, --replicas,
/// --max-blocks, --throughput, --listen, --secret-file, --block-map-log, --route-timeout,
/// --failure-timeout,
/// --no-wire-compression, --no-link-authentication, --no-step-batching).
void add_swarm_options(boost::program_options::options_description& description, SwarmOptions& options);

/// True when the options or the launch ask for a swarm rather than a single process. Throws
/// UsageError when swarm flags were given to a single process (they would do nothing).
bool wants_swarm(const SwarmOptions& options, const boost::program_options::variables_map& vm);

/// The client's view of a running swarm.
class ClientSwarm {
 public:
  /// Checks the options (UsageError), starts MPI and the swarm. On a block-host rank of mpirun it
  /// serves until the swarm ends and returns nullptr with the process's exit code in `host_exit`.
  /// Otherwise it returns the client once every launched host is placed.
  static std::unique_ptr<ClientSwarm> start(int* argc, char*** argv, const SwarmOptions& options,
                                            const std::string& model_dir, const ModelConfig& config,
                                            const WeightOptions& weights,
                                            const boost::program_options::variables_map& vm, int threads,
                                            int& host_exit);

  /// A session of `capacity` positions through every block; throws sepal::Error with the reason
  /// when no route opens.
  /// With `adapter`, its deep prompts (deep-ptune) go to the hosts with the session.
  std::unique_ptr<DriverSession> open(std::int64_t capacity, const PromptParameters* adapter = nullptr);
  /// The blocks of a training run, served by the swarm.
  std::unique_ptr<SwarmTrainingBlocks> training_blocks(const ModelConfig& config);
  /// "host 3 [0, 2) -> host 1 [2, 5)".
  static std::string route_text(const DriverSession& session);
  int host_count() const { return host_count_; }
  /// The client's actor system (the client driver's; the draft decoder joins it).
  ActorSystem& system();
  /// Route, mode, failovers, wire compression and block map of `session`, for --json.
  nlohmann::json stats(const DriverSession& session);
  /// Tells every host to end and waits (up to 10 s) until they have left.
  void shutdown() { client_->shutdown(); }
  /// The block map now and the latest changes of it (newest last, at most kKeptEvents), each
  /// {"time": unix seconds, "event": "join 3" / "failure 2" / "leave 1; move ...", "version"}.
  nlohmann::json status();
  static constexpr std::size_t kKeptEvents = 100;

 private:
  ClientSwarm() = default;

  SwarmOptions options_;
  int host_count_ = 0;
  std::ofstream map_log_;
  std::mutex map_log_mutex_;  ///< guards map_log_ and events_
  std::deque<nlohmann::json> events_;
  std::unique_ptr<ClientNode> client_;
};

}  // namespace sepal::tools

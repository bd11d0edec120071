// sepal serve: a block host. Joins a running swarm from a separately launched job
// (--join PORT_FILE, with the swarm's secret), or is one of the hosts `sepal generate --hosts N`
// starts (--spawned). The balancer chooses its blocks; it serves until the swarm ends or, on
// SIGTERM or SIGINT, leaves gracefully.

#include <boost/program_options.hpp>
#include <cmath>
#include <iostream>

#include "actors/swarm_launch.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/model_config.h"
#include "tools/commands.h"
#include "tools/exit_status.h"
#include "tools/failure_timeout.h"
#include "tools/wan_options.h"
#include "tools/weight_options.h"
#include "tools/thread_flag.h"

namespace sepal::tools {

int serve_command(int argc, char** argv) {
  namespace po = boost::program_options;
  WeightOptions weights;
  std::string model_dir, transport_name = "ucx", wan_text, config_path, join_file, secret_file, device_text;
  std::int64_t max_blocks = 0, cache_mb = 2048, client_sessions = 64, client_cache_mb = 0, step_tokens = 4096;
  double throughput = 0, join_timeout = 60, failure_timeout = 5;
  int threads = 0;
  po::options_description options("sepal serve: serve blocks of a model in a swarm");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout) or GGUF file")
      ("join", po::value(&join_file), "join the swarm whose join address is in this file (sepal generate --listen)")
      ("secret-file", po::value(&secret_file), "the swarm's secret (with --join; else $SEPAL_SWARM_SECRET or\n"
                                               "$SEPAL_SWARM_SECRET_FILE)")
      ("join-timeout", po::value(&join_timeout)->default_value(60.0),
       "seconds to wait for the port file and the connection (then exit status 75: try again)")
      ("failure-timeout", po::value(&failure_timeout)->default_value(5.0),
       "seconds a peer may be silent before this host takes it for dead")
      ("spawned", "started by sepal generate --hosts (internal)")
      ("max-blocks", po::value(&max_blocks)->default_value(0), "blocks this host holds at most (0: all)")
      ("throughput", po::value(&throughput)->default_value(0.0), "announce this many tokens/s per block (0: measure)")
      ("cache-mb", po::value(&cache_mb)->default_value(2048),
       "memory for the sessions' KV caches and the working memory of a step, MB")
      ("client-sessions", po::value(&client_sessions)->default_value(64), "sessions one client may hold open here")
      ("client-cache-mb", po::value(&client_cache_mb)->default_value(0),
       "KV cache one client may hold here, MB (0: half of --cache-mb)")
      ("max-step-tokens", po::value(&step_tokens)->default_value(4096), "tokens one step may carry")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)")
      ("transport", po::value(&transport_name)->default_value("ucx"), "ucx or mpi (mpi only with --spawned)")
      ("wan", po::value(&wan_text), "emulate a WAN on this host's links (rtt_ms=..,bandwidth_mbps=..)")
      ("config", po::value(&config_path), "config file; its [wan] section sets the WAN link")
      ("no-link-authentication", po::bool_switch(), "no MAC on UCX messages (the whole swarm must agree)")
      ("no-step-batching", po::bool_switch(), "run each session's step alone, never batched with other sessions' steps");
  add_weight_options(options, weights);
  add_device_option(options, device_text);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  const bool spawned = vm.count("spawned") > 0;
  if (spawned == (vm.count("join") > 0)) throw UsageError{"give exactly one of --join PORT_FILE and --spawned"};
  if (spawned && vm.count("secret-file")) throw UsageError{"--secret-file is for --join"};
  if (!std::isfinite(join_timeout) || join_timeout <= 0) throw UsageError{"--join-timeout must be above 0 seconds"};
  check_failure_timeout(failure_timeout);
  const WeightLoading loading = weight_loading(weights, vm);
  const Device device = device_option(device_text, loading);
  if (transport_name != "ucx" && transport_name != "mpi") throw UsageError{"--transport must be ucx or mpi, got '" + transport_name + "'"};
  if (!spawned && transport_name != "ucx") throw UsageError{"--join needs --transport ucx"};
  if (max_blocks < 0) throw UsageError{"--max-blocks must be at least 0"};
  if (!std::isfinite(throughput) || throughput < 0) throw UsageError{"--throughput must be a number >= 0"};
  if (cache_mb <= 0) throw UsageError{"--cache-mb must be above 0"};
  if (client_sessions <= 0) throw UsageError{"--client-sessions must be above 0"};
  if (client_cache_mb < 0 || client_cache_mb > cache_mb) throw UsageError{"--client-cache-mb must be between 0 and --cache-mb"};
  if (step_tokens <= 0) throw UsageError{"--max-step-tokens must be above 0"};
  apply_threads_flag(threads);
  const WanConfig wan = wan_settings(config_path, wan_text);
  (void)read_model_config(model_dir);  // a bad model folder fails before joining anything

  SwarmNodeSettings settings;
  settings.set_failure_timeout(failure_timeout_ms(failure_timeout));
  settings.transport.name = transport_name;
  settings.transport.wan = wan;
  settings.transport.authenticate = !vm["no-link-authentication"].as<bool>();
  settings.join_timeout = join_timeout_ms(join_timeout);
  HostLaunch launch;
  launch.node = settings;
  launch.spawned = spawned;
  launch.join_file = join_file;
  if (!spawned) {
    auto secret = SwarmSecret::from_file_or_environment(secret_file);
    if (!secret.is_ok()) fail("--join needs the swarm's secret: ", secret.status().message());
    launch.secret = std::move(secret).value();
  }
  launch.host = HostSettings{model_dir, loading, max_blocks, throughput, cache_mb << 20, client_sessions,
                             client_cache_mb << 20, step_tokens, !vm["no-step-batching"].as<bool>(), device};
  const HostExit served = run_host(&argc, &argv, launch);
  if (served.status.is_ok()) return 0;
  if (!spawned && !served.admitted && join_failure_may_pass(served.status)) {
    return exit_try_again("serve", served.status.message());
  }
  fail(served.status.message());
}

}  // namespace sepal::tools

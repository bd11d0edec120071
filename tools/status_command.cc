// sepal status: joins a running swarm for a moment and prints its block map: every host, the
// blocks it is assigned and serves, its throughput and its open sessions.
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "actors/swarm_launch.h"
#include "kernels/error.h"
#include "tools/block_map_json.h"
#include "tools/commands.h"
#include "tools/exit_status.h"

namespace sepal::tools {

int status_command(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string join_file, secret_file;
  double join_timeout = 60;
  po::options_description options("sepal status: print a running swarm's block map");
  options.add_options()
      ("help,h", "show this help")
      ("join", po::value(&join_file)->required(), "the swarm's port file (sepal generate --listen)")
      ("secret-file", po::value(&secret_file), "the swarm's secret (else $SEPAL_SWARM_SECRET or $SEPAL_SWARM_SECRET_FILE)")
      ("join-timeout", po::value(&join_timeout)->default_value(60.0),
       "seconds to wait for the port file and the connection (then exit status 75: try again)")
      ("json", "print the map as one JSON object");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  if (!std::isfinite(join_timeout) || join_timeout <= 0) throw UsageError{"--join-timeout must be above 0 seconds"};
  auto secret = SwarmSecret::from_file_or_environment(secret_file);
  if (!secret.is_ok()) fail("sepal status needs the swarm's secret: ", secret.status().message());
  auto map = observe_block_map(&argc, &argv, join_file, secret.value(), join_timeout_ms(join_timeout));
  if (!map.is_ok()) {
    if (join_failure_may_pass(map.status())) return exit_try_again("status", map.status().message());
    fail(map.status().message());
  }
  if (vm.count("json")) {
    std::cout << block_map_json(map.value()).dump(1) << "\n";
  } else {
    std::printf("%s: %lld blocks, %zu host%s (map version %llu)\n", map->model.c_str(),
                static_cast<long long>(map->num_blocks), map->hosts.size(), map->hosts.size() == 1 ? "" : "s",
                static_cast<unsigned long long>(map->version));
    std::printf("%6s  %-12s  %-12s  %14s  %8s  %s\n", "host", "assigned", "serving", "tokens/s/block", "sessions",
                "numerics");
    for (const auto& h : map->hosts) {
      const auto range = [](std::int64_t first, std::int64_t last) {
        char text[48];
        std::snprintf(text, sizeof text, "[%lld, %lld)", static_cast<long long>(first), static_cast<long long>(last));
        return std::string(text);
      };
      const std::string assigned = range(h.first, h.last);
      const std::string serving = range(h.serving_first, h.serving_last);
      std::printf("%6u  %-12s  %-12s  %14.1f  %8lld  %s\n", h.peer, assigned.c_str(), serving.c_str(), h.throughput,
                  static_cast<long long>(h.sessions), h.numerics.c_str());
    }
  }
  std::fflush(stdout);
  // MPI_Finalize at exit: this job shares no communicator with the swarm (the join used a TCP
  // connection), so it waits for no one, and mpirun (a Slurm job) sees a proper exit.
  return 0;
}

}  // namespace sepal::tools

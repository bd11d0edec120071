// sepal status: joins a running swarm for a moment and prints its block map: every host, the
// blocks it is assigned and serves, its throughput and its open sessions.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "actors/protocol/balancer.h"
#include "kernels/error.h"
#include "runtime/mpi_environment.h"
#include "tools/block_map_json.h"
#include "tools/commands.h"
#include "tools/swarm_process.h"

namespace sepal::tools {

int status_command(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string join_file, secret_file;
  po::options_description options("sepal status: print a running swarm's block map");
  options.add_options()
      ("help,h", "show this help")
      ("join", po::value(&join_file)->required(), "the swarm's port file (sepal generate --listen)")
      ("secret-file", po::value(&secret_file), "the swarm's secret (else $SEPAL_SWARM_SECRET or $SEPAL_SWARM_SECRET_FILE)")
      ("json", "print the map as one JSON object");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  auto secret = SwarmSecret::from_file_or_environment(secret_file);
  if (!secret.is_ok()) fail("sepal status needs the swarm's secret: ", secret.status().message());
  if (Status s = mpi_init(&argc, &argv); !s.is_ok()) fail(s.to_string());
  auto swarm = SwarmProcess::join(join_file, secret.value(), "observer", SwarmSettings{});
  // A reply can miss a newcomer whose address the client's side is still connecting to: ask again.
  auto map = swarm->system().request_sync(ActorRef<BalancerProtocol>{{0, kBalancerActorId}}, GetBlockMap{},
                                          std::chrono::seconds(5));
  for (int attempt = 1; attempt < 4 && !map.is_ok() && map.status().code() == StatusCode::kTimeout; ++attempt) {
    map = swarm->system().request_sync(ActorRef<BalancerProtocol>{{0, kBalancerActorId}}, GetBlockMap{},
                                       std::chrono::seconds(5));
  }
  (void)swarm->membership().leave(std::chrono::seconds(5));
  swarm->stop();
  if (!map.is_ok()) fail("the balancer did not answer: ", map.status().message());
  if (vm.count("json")) {
    std::cout << block_map_json(map.value()).dump(1) << "\n";
  } else {
    std::printf("%s: %lld blocks, %zu hosts (map version %llu)\n", map->model.c_str(),
                static_cast<long long>(map->num_blocks), map->hosts.size(), static_cast<unsigned long long>(map->version));
    std::printf("%6s  %-12s  %-12s  %14s  %8s\n", "host", "assigned", "serving", "tokens/s/block", "sessions");
    for (const auto& h : map->hosts) {
      const std::string assigned = "[" + std::to_string(h.first) + ", " + std::to_string(h.last) + ")";
      const std::string serving = "[" + std::to_string(h.serving_first) + ", " + std::to_string(h.serving_last) + ")";
      std::printf("%6u  %-12s  %-12s  %14.1f  %8lld\n", h.peer, assigned.c_str(), serving.c_str(), h.throughput,
                  static_cast<long long>(h.sessions));
    }
  }
  std::fflush(stdout);
  std::_Exit(0);  // not MPI_Finalize: this observer's job is independent of the swarm's
}

}  // namespace sepal::tools

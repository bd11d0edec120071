// sepal ping: round-trip latency and bandwidth between two ranks over a transport, like
// ucx_perftest or OSU's latency test. Run under `mpirun -np 2` (mpi, ucx) or alone (inproc).
// The measurement is runtime/ping_measurement.h's; this parses the flags and prints.
#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "runtime/ping_measurement.h"
#include "tools/commands.h"
#include "tools/wan_options.h"

namespace sepal::tools {

namespace po = boost::program_options;

int ping_command(int argc, char** argv) {
  std::string transport_name = "ucx", wan_text, config_path;
  std::vector<std::size_t> sizes;
  int iterations = 0;
  po::options_description options("sepal ping: round trip and bandwidth between two ranks (mpirun -np 2, or alone with --transport inproc)");
  options.add_options()("help,h", "show this help")
      ("transport", po::value(&transport_name)->default_value("ucx"), "inproc, mpi or ucx")
      ("wan", po::value(&wan_text), "emulate a WAN link: rtt_ms=..,bandwidth_mbps=..,jitter_ms=..,loss=..")
      ("config", po::value(&config_path), "config file; its [wan] section sets the same keys (--wan overrides)")
      ("sizes", po::value(&sizes)->multitoken(), "message sizes in bytes (default 8 B to 64 MiB, x8 steps)")
      ("iterations", po::value(&iterations)->default_value(0), "round trips per size (0: by size)")
      ("json", "print a JSON array of rows instead of a table")
      ("no-link-authentication", po::bool_switch(), "ucx: no MAC on messages (to measure what it costs)");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  if (transport_name != "inproc" && transport_name != "mpi" && transport_name != "ucx") {
    throw UsageError{"--transport must be inproc, mpi or ucx, got '" + transport_name + "'"};
  }
  if (iterations < 0) throw UsageError{"--iterations must be at least 0"};
  const bool authenticate = !vm["no-link-authentication"].as<bool>();
  if (!authenticate && transport_name != "ucx") throw UsageError{"--no-link-authentication is for --transport ucx"};
  if (sizes.empty()) {
    for (std::size_t s = 8; s <= (std::size_t{64} << 20); s *= 8) sizes.push_back(s);
    sizes.push_back(std::size_t{1} << 20);
    sizes.push_back(std::size_t{64} << 20);
    std::sort(sizes.begin(), sizes.end());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  }
  for (auto s : sizes) {
    if (s == 0 || s > (std::size_t{1} << 30)) throw UsageError{"--sizes must be between 1 byte and 1 GiB"};
  }
  PingSettings settings;
  settings.transport.name = transport_name;
  settings.transport.authenticate = authenticate;
  settings.transport.wan = wan_settings(config_path, wan_text);
  settings.sizes = sizes;
  settings.iterations = iterations;
  const bool json = vm.count("json") > 0;
  nlohmann::json rows = nlohmann::json::array();
  bool header = false;
  auto ran = run_ping(&argc, &argv, settings, [&](const std::string& label, const PingRow& row) {
    if (json) {
      rows.push_back({{"transport", label}, {"bytes", row.bytes}, {"rtt_us", row.rtt_us}, {"bandwidth_gbps", row.bandwidth_gbps}});
      return;
    }
    if (!header) {
      header = true;
      const WanConfig& wan = settings.transport.wan;
      std::printf("# sepal ping over %s%s\n%12s %12s %16s\n", label.c_str(),
                  wan.enabled() ? (" (" + wan.to_string() + ")").c_str() : "", "bytes", "rtt_us", "bandwidth_gbps");
    }
    std::printf("%12zu %12.2f %16.3f\n", row.bytes, row.rtt_us, row.bandwidth_gbps);
    std::fflush(stdout);
  });
  if (!ran.is_ok()) {
    if (ran.status().code() == StatusCode::kInvalidArgument) throw UsageError{ran.status().message()};
    fail(ran.status().message());
  }
  if (json && !rows.empty()) std::cout << rows.dump(1) << "\n";
  return 0;
}

}  // namespace sepal::tools

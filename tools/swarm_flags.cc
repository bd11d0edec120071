#include "tools/swarm_flags.h"

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "actors/adapter_payload.h"
#include "actors/swarm_launch.h"
#include "actors/swarm_node.h"
#include "kernels/error.h"
#include "runtime/join_socket.h"
#include "tools/block_map_json.h"
#include "tools/commands.h"
#include "tools/failure_timeout.h"
#include "tools/wan_options.h"

namespace sepal::tools {

namespace po = boost::program_options;

void add_swarm_options(po::options_description& description, SwarmOptions& o) {
  description.add_options()
      ("hosts", po::value(&o.spawn_hosts)->default_value(0),
       "start this many block host processes (MPI_Comm_spawn) and run through them")
      ("transport", po::value(&o.transport)->default_value("ucx"),
       "swarm: how processes talk, ucx or mpi (under mpirun, rank 0 is the client and the balancer)")
      ("mode", po::value(&o.mode)->default_value("push"),
       "swarm: push (hosts forward hidden states to the next host) or relay (through the client)")
      ("no-wire-compression", po::bool_switch(), "swarm: send hidden states as f32 instead of 8-bit blockwise")
      ("no-step-batching", po::bool_switch(),
       "swarm: hosts run each session's step alone, never batched with other sessions' steps")
      ("no-link-authentication", po::bool_switch(),
       "swarm: no MAC on UCX messages (only where no outsider can reach the network;\n"
       "every member must be started with it)")
      ("wan", po::value(&o.wan), "swarm: emulate a WAN on every link (rtt_ms=..,bandwidth_mbps=..,loss=..)")
      ("config", po::value(&o.config_path), "config file; its [wan] section sets the WAN link")
      ("replicas", po::value(&o.replicas)->default_value(1),
       "swarm: size the hosts so that each block has this many (a failed host's blocks move to another)")
      ("max-blocks", po::value(&o.max_blocks)->default_value(0),
       "swarm: blocks each host holds (0: blocks x replicas / hosts, rounded up)")
      ("throughput", po::value(&o.throughput)->default_value(0.0),
       "swarm: hosts announce this many tokens/s per block instead of measuring")
      ("listen", po::value(&o.listen_file), "swarm: admit hosts joining at run time (sepal serve --join FILE);\n"
                                            "the join address (tcp://HOST:PORT) goes to FILE, on a file system the joiners see")
      ("listen-host", po::value(&o.listen_host), "swarm: the host name or IP address joiners reach this machine by, written\n"
                                                 "in --listen's FILE (default: this machine's host name)")
      ("secret-file", po::value(&o.secret_file), "swarm secret that joining processes must know (with --listen;\n"
                                                 "else $SEPAL_SWARM_SECRET or $SEPAL_SWARM_SECRET_FILE)")
      ("block-map-log", po::value(&o.block_map_log), "swarm: append the block map to this file (JSON lines) at every change")
      ("route-timeout", po::value(&o.route_timeout_s)->default_value(30.0),
       "swarm: seconds a step waits for some host to serve each of its blocks before it fails")
      ("move-timeout", po::value(&o.move_timeout_s)->default_value(60.0),
       "swarm: seconds the balancer waits for a host it placed to serve its blocks before it moves\n"
       "other hosts without waiting for it (a host stuck loading holds up no other move)")
      ("failure-timeout", po::value(&o.failure_timeout_s)->default_value(5.0),
       "swarm: seconds a peer may be silent before it is taken for dead (a killed one is found at once);\n"
       "longer on loaded nodes or slow links, shorter for a faster failover from a hung host");
}

bool wants_swarm(const SwarmOptions& options, const po::variables_map& vm) {
  if (launched_world_size() > 1 || options.spawn_hosts > 0) return true;
  // One process: a swarm flag would be silently ignored, so it is a mistake.
  for (const char* name : {"transport", "mode", "wan", "config", "replicas", "max-blocks", "throughput", "listen", "listen-host",
                           "secret-file", "block-map-log", "route-timeout", "move-timeout", "failure-timeout"}) {
    if (vm.count(name) && !vm[name].defaulted()) {
      throw UsageError{std::string("--") + name + " applies to a swarm: launch with mpirun -np N (N > 1) or add --hosts N"};
    }
  }
  for (const char* name : {"no-wire-compression", "no-link-authentication", "no-step-batching"}) {
    if (vm.count(name) && vm[name].as<bool>()) {
      throw UsageError{std::string("--") + name + " applies to a swarm: launch with mpirun -np N (N > 1) or add --hosts N"};
    }
  }
  return false;
}

namespace {

void check(const SwarmOptions& o) {
  if (o.transport != "ucx" && o.transport != "mpi") throw UsageError{"--transport must be ucx or mpi, got '" + o.transport + "'"};
  if (o.mode != "push" && o.mode != "relay") throw UsageError{"--mode must be push or relay, got '" + o.mode + "'"};
  if (o.spawn_hosts < 0 || o.spawn_hosts > 256) throw UsageError{"--hosts must be between 0 and 256"};
  if (o.replicas < 1) throw UsageError{"--replicas must be at least 1"};
  if (o.max_blocks < 0) throw UsageError{"--max-blocks must be at least 0"};
  if (!std::isfinite(o.throughput) || o.throughput < 0) throw UsageError{"--throughput must be a number >= 0"};
  if (!std::isfinite(o.route_timeout_s) || o.route_timeout_s <= 0 || o.route_timeout_s > 86400) {
    throw UsageError{"--route-timeout must be a number of seconds above 0 (at most a day)"};
  }
  if (!std::isfinite(o.move_timeout_s) || o.move_timeout_s < 0.1 || o.move_timeout_s > 86400) {
    throw UsageError{"--move-timeout must be a number of seconds from 0.1 to 86400"};
  }
  check_failure_timeout(o.failure_timeout_s);
  if (!o.listen_file.empty() && o.transport != "ucx") throw UsageError{"--listen needs --transport ucx"};
  if (!o.listen_host.empty()) {
    if (o.listen_file.empty()) throw UsageError{"--listen-host is for --listen (the address written in its file)"};
    if (const Status s = check_join_host(o.listen_host); !s.is_ok()) throw UsageError{"--listen-host: " + s.message()};
  }
  if (launched_world_size() > 1 && o.spawn_hosts > 0) {
    throw UsageError{"--hosts starts hosts itself; do not also launch with mpirun -np > 1"};
  }
}

}  // namespace

std::unique_ptr<ClientSwarm> ClientSwarm::start(int* argc, char*** argv, const SwarmOptions& options_in,
                                                const std::string& model_dir, const ModelConfig& config,
                                                const WeightOptions& weights, const po::variables_map& vm,
                                                int threads, int& host_exit) {
  SwarmOptions options = options_in;
  options.wire_compression = !vm["no-wire-compression"].as<bool>();
  options.step_batching = !vm["no-step-batching"].as<bool>();
  check(options);
  SwarmNodeSettings settings;
  settings.set_failure_timeout(failure_timeout_ms(options.failure_timeout_s));
  settings.transport.name = options.transport;
  settings.transport.wan = wan_settings(options.config_path, options.wan);
  settings.transport.authenticate = !vm["no-link-authentication"].as<bool>();
  if (!settings.transport.authenticate && options.transport != "ucx") {
    throw UsageError{"--no-link-authentication is for --transport ucx"};
  }
  const WeightLoading loading = weight_loading(weights, vm);
  // --device (where the command has one): where the hosts' blocks run.
  const Device device = vm.count("device") ? device_option(vm["device"].as<std::string>(), loading) : Device{};
  std::optional<SwarmSecret> secret;
  if (!options.listen_file.empty()) {
    auto s = SwarmSecret::from_file_or_environment(options.secret_file);
    if (!s.is_ok()) fail("--listen needs a swarm secret: ", s.status().message(), " (or give --secret-file)");
    secret = std::move(s).value();
  } else if (!options.secret_file.empty()) {
    throw UsageError{"--secret-file is for --listen (a client that admits joining hosts)"};
  }
  // A write to a host that has gone (a TCP socket of Open MPI's) must fail, not end the client.
  std::signal(SIGPIPE, SIG_IGN);
  const int launched = launched_world_size();
  const int hosts = launched > 1 ? launched - 1 : options.spawn_hosts;
  // Hosts spawned here use this node's GPU: a missing one is said before any host starts.
  if (!device.is_cpu() && launched <= 1) (void)open_backend(device);
  const std::int64_t span =
      options.max_blocks > 0 ? std::min(options.max_blocks, config.num_layers)
                             : std::min<std::int64_t>(config.num_layers, (config.num_layers * options.replicas + hosts - 1) / hosts);
  ClientLaunch launch;
  launch.node = settings;
  launch.spawn_hosts = options.spawn_hosts;
  launch.host_args = {"serve", "--spawned", "--model", model_dir, "--transport", options.transport,
                      "--max-blocks", std::to_string(span), "--throughput", std::to_string(options.throughput),
                      "--failure-timeout", std::to_string(options.failure_timeout_s)};
  for (auto& a : weight_arguments(weights, vm)) launch.host_args.push_back(std::move(a));
  if (!options.config_path.empty()) launch.host_args.insert(launch.host_args.end(), {"--config", options.config_path});
  if (!options.wan.empty()) launch.host_args.insert(launch.host_args.end(), {"--wan", options.wan});
  if (threads > 0) launch.host_args.insert(launch.host_args.end(), {"--threads", std::to_string(threads)});
  if (!settings.transport.authenticate) launch.host_args.push_back("--no-link-authentication");
  if (!options.step_batching) launch.host_args.push_back("--no-step-batching");
  if (!device.is_cpu()) launch.host_args.insert(launch.host_args.end(), {"--device", device_name(device)});
  launch.listen_file = options.listen_file;
  launch.listen_host = options.listen_host;
  launch.secret = std::move(secret);
  launch.host.model_dir = model_dir;
  launch.host.loading = loading;
  launch.host.max_blocks = span;
  launch.host.throughput = options.throughput;
  launch.host.batch_steps = options.step_batching;
  launch.host.device = device;

  std::unique_ptr<ClientSwarm> client(new ClientSwarm);
  client->options_ = options;
  client->host_count_ = hosts;
  if (!options.block_map_log.empty()) {
    client->map_log_.open(options.block_map_log, std::ios::app);
    if (!client->map_log_) fail("cannot write the block map log ", options.block_map_log);
  }
  ClientSwarm* self = client.get();
  launch.client.actors.on_block_map_change = [self](const BlockMapReply& map, const std::string& event) {
    std::lock_guard lock(self->map_log_mutex_);
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    self->events_.push_back({{"time", std::chrono::duration<double>(now).count()}, {"event", event}, {"version", map.version}});
    if (self->events_.size() > kKeptEvents) self->events_.pop_front();
    if (self->map_log_.is_open()) {
      nlohmann::json line = block_map_json(map);
      line["event"] = event;
      self->map_log_ << line.dump() << std::endl;
    }
  };
  launch.client.actors.route_wait = std::chrono::milliseconds(static_cast<std::int64_t>(options.route_timeout_s * 1000));
  launch.client.actors.move_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(options.move_timeout_s * 1000));
  launch.client.actors.driver.num_blocks = config.num_layers;
  launch.client.actors.driver.push = options.mode == "push";
  launch.client.actors.driver.wire_compression = options.wire_compression;
  auto started = launch_client(argc, argv, std::move(launch));
  if (!started.is_ok()) fail(started.status().message());
  if (!started.value()) {  // this rank served as a block host until the swarm ended
    host_exit = 0;
    return nullptr;
  }
  client->client_ = std::move(started).value();
  return client;
}

std::unique_ptr<DriverSession> ClientSwarm::open(std::int64_t capacity, const PromptParameters* adapter) {
  TensorPayload prompts;
  if (adapter && adapter->method == TuningMethod::kDeepPtune) {
    prompts = TensorPayload::copy_of(ElementType::kF32, {adapter->layers, adapter->tokens, adapter->hidden_size},
                                     adapter->deep.data(), adapter->deep.size());
  }
  auto session = client_->open(capacity, std::move(prompts), adapter ? adapter->offset : 0,
                               adapter ? adapter_payload(*adapter) : AdapterPayload{});
  if (!session.is_ok()) fail("no route through the swarm: ", session.status().message());
  return std::move(session).value();
}

ActorSystem& ClientSwarm::system() { return client_->node().system(); }

nlohmann::json ClientSwarm::status() {
  nlohmann::json out{{"hosts_launched", host_count_}, {"block_map", nullptr}};
  if (auto map = client_->block_map(); map.is_ok()) out["block_map"] = block_map_json(map.value());
  else out["error"] = map.status().to_string();
  std::lock_guard lock(map_log_mutex_);
  out["events"] = nlohmann::json::array();
  for (const auto& e : events_) out["events"].push_back(e);
  return out;
}

std::unique_ptr<SwarmTrainingBlocks> ClientSwarm::training_blocks(const ModelConfig& config) {
  return std::make_unique<SwarmTrainingBlocks>(client_->node().system(), client_->driver(), config);
}

std::string ClientSwarm::route_text(const DriverSession& session) {
  std::string text;
  if (auto report = session.report(); report.is_ok()) {
    for (const auto& hop : report->route) {
      text += (text.empty() ? "" : " -> ") + ("host " + std::to_string(hop.host) + " [" + std::to_string(hop.first) +
                                              ", " + std::to_string(hop.last) + ")");
    }
  }
  return text;
}

nlohmann::json ClientSwarm::stats(const DriverSession& session) {
  auto report = session.report();
  if (!report.is_ok()) return {};
  nlohmann::json route = nlohmann::json::array();
  for (const auto& hop : report->route) route.push_back({{"host", hop.host}, {"first", hop.first}, {"last", hop.last}});
  const double per_token_hop = report->received_token_hops > 0 ? static_cast<double>(report->received_bytes) /
                                                                     static_cast<double>(report->received_token_hops)
                                                               : 0.0;
  nlohmann::json out{{"route", route},
                     {"mode", options_.mode},
                     {"wire_compression", options_.wire_compression},
                     {"failovers", report->failovers},
                     {"wire_bytes_per_token_hop", per_token_hop}};
  // What the generation thread waited for the swarm (the rest of its time is the client's work).
  const DriverSession::Waits& waits = session.waits();
  out["swarm_wait_seconds"] = waits.seconds;
  if (waits.single_row_steps > 0) {
    out["decode_wait_ms_per_step"] = 1e3 * waits.single_row_seconds / static_cast<double>(waits.single_row_steps);
  }
  if (auto map = client_->block_map(); map.is_ok()) out["block_map"] = block_map_json(map.value());
  return out;
}

}  // namespace sepal::tools

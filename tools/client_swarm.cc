#include "tools/client_swarm.h"

#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "actors/balancer.h"
#include "actors/push_receiver.h"
#include "kernels/error.h"
#include "runtime/mpi_environment.h"
#include "tools/block_map_json.h"
#include "tools/commands.h"
#include "tools/host_process.h"
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
                                            "the port's name goes to FILE (needs ompi-server, see docs/operations.md)")
      ("secret-file", po::value(&o.secret_file), "swarm secret that joining processes must know (with --listen;\n"
                                                 "else $SEPAL_SWARM_SECRET or $SEPAL_SWARM_SECRET_FILE)")
      ("block-map-log", po::value(&o.block_map_log), "swarm: append the block map to this file (JSON lines) at every change")
      ("route-timeout", po::value(&o.route_timeout_s)->default_value(30.0),
       "swarm: seconds a step waits for some host to serve each of its blocks before it fails");
}

int launched_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return 1;
}

bool wants_swarm(const SwarmOptions& options, const po::variables_map& vm) {
  if (launched_world_size() > 1 || options.spawn_hosts > 0) return true;
  // One process: a swarm flag would be silently ignored, so it is a mistake.
  for (const char* name : {"transport", "mode", "wan", "config", "replicas", "max-blocks", "throughput", "listen",
                           "secret-file", "block-map-log", "route-timeout"}) {
    if (vm.count(name) && !vm[name].defaulted()) {
      throw UsageError{std::string("--") + name + " applies to a swarm: launch with mpirun -np N (N > 1) or add --hosts N"};
    }
  }
  for (const char* name : {"no-wire-compression", "no-link-authentication"}) {
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
  if (!o.listen_file.empty() && o.transport != "ucx") throw UsageError{"--listen needs --transport ucx"};
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
  check(options);
  const WanConfig wan = wan_settings(options.config_path, options.wan);
  const WeightLoading loading = weight_loading(weights, vm);
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
  std::unique_ptr<ClientSwarm> client(new ClientSwarm);
  client->options_ = options;
  client->num_blocks_ = config.num_layers;
  if (Status s = mpi_init(argc, argv); !s.is_ok()) fail(s.to_string());
  const int launched = launched_world_size();
  const int hosts = launched > 1 ? launched - 1 : options.spawn_hosts;
  client->host_count_ = hosts;
  const std::int64_t span =
      options.max_blocks > 0 ? std::min(options.max_blocks, config.num_layers)
                             : std::min<std::int64_t>(config.num_layers, (config.num_layers * options.replicas + hosts - 1) / hosts);
  SwarmSettings settings{options.transport, wan, {}};
  settings.authenticate = !vm["no-link-authentication"].as<bool>();
  if (!settings.authenticate && options.transport != "ucx") throw UsageError{"--no-link-authentication is for --transport ucx"};
  MPI_Comm comm = MPI_COMM_WORLD;
  if (options.spawn_hosts > 0) {
    std::vector<std::string> args{"serve", "--spawned", "--model", model_dir, "--transport", options.transport,
                                  "--max-blocks", std::to_string(span), "--throughput", std::to_string(options.throughput)};
    for (auto& a : weight_arguments(weights, vm)) args.push_back(std::move(a));
    if (!options.config_path.empty()) args.insert(args.end(), {"--config", options.config_path});
    if (!options.wan.empty()) args.insert(args.end(), {"--wan", options.wan});
    if (threads > 0) args.insert(args.end(), {"--threads", std::to_string(threads)});
    if (!settings.authenticate) args.push_back("--no-link-authentication");
    std::fprintf(stderr, "sepal: starting %d block hosts\n", options.spawn_hosts);
    comm = spawn_and_merge(std::filesystem::read_symlink("/proc/self/exe").string(), args, options.spawn_hosts,
                           std::chrono::seconds(120));
  }
  if (mpi_world_rank() > 0 && launched > 1) {
    // A block host under mpirun.
    auto swarm = SwarmProcess::over_comm(comm, "host", settings);
    host_exit = run_host(*swarm, HostSettings{model_dir, loading, span, options.throughput});
    return nullptr;
  }
  client->swarm_ = SwarmProcess::over_comm(comm, "client", settings);
  if (!options.listen_file.empty()) client->swarm_->listen(options.listen_file, *secret);

  // The balancer places the hosts as they announce themselves.
  if (!options.block_map_log.empty()) {
    client->map_log_.open(options.block_map_log, std::ios::app);
    if (!client->map_log_) fail("cannot write the block map log ", options.block_map_log);
  }
  ClientSwarm* self = client.get();
  BalancerOptions balancer;
  balancer.on_change = [self](const BlockMapReply& map, const std::string& event) {
    std::lock_guard lock(self->map_log_mutex_);
    if (self->map_log_.is_open()) {
      nlohmann::json line = block_map_json(map);
      line["event"] = event;
      self->map_log_ << line.dump() << std::endl;
    }
  };
  Membership& membership = client->swarm_->membership();
  balancer.may_host = [&membership](PeerId peer) {
    for (const MemberInfo& m : membership.alive()) {
      if (m.peer == peer) return m.role == "host";
    }
    return false;
  };
  ActorSystem& system = client->swarm_->system();
  system.spawn_with_id<Balancer>(kBalancerActorId, balancer);
  if (options.mode == "push") {
    client->push_inbox_ = std::make_shared<PushInbox>();
    system.spawn_with_id<PushReceiver>(kPushReceiverActorId, client->push_inbox_);
  }
  SwarmRouterOptions router_options;
  router_options.route_wait = std::chrono::milliseconds(static_cast<std::int64_t>(options.route_timeout_s * 1000));
  client->router_ = std::make_unique<SwarmRouter>(system, ActorRef<BalancerProtocol>{{client->swarm_->self(), kBalancerActorId}},
                                                  router_options);
  if (Status s = client->router_->wait_until_ready(hosts, std::chrono::minutes(5)); !s.is_ok()) fail(s.message());
  return client;
}

ClientSwarm::~ClientSwarm() {
  try {
    shutdown();
  } catch (...) {
  }
}

std::unique_ptr<RemotePipeline> ClientSwarm::open(std::int64_t capacity, std::uint64_t session) {
  RemotePipelineOptions pipeline_options;
  pipeline_options.push_inbox = push_inbox_;
  pipeline_options.wire_compression = options_.wire_compression;
  return std::make_unique<RemotePipeline>(swarm_->system(), *router_, num_blocks_, capacity, session, pipeline_options);
}

nlohmann::json ClientSwarm::stats(const RemotePipeline& pipeline) {
  nlohmann::json route = nlohmann::json::array();
  for (const auto& hop : pipeline.route()) {
    route.push_back({{"host", hop.host.address.peer}, {"first", hop.first}, {"last", hop.last}});
  }
  nlohmann::json out{{"route", route},
                     {"mode", options_.mode},
                     {"wire_compression", options_.wire_compression},
                     {"failovers", pipeline.failovers()},
                     {"wire_bytes_per_token_hop", pipeline.wire_bytes_per_token_hop()}};
  if (auto map = router_->block_map(); map.is_ok()) out["block_map"] = block_map_json(map.value());
  return out;
}

void ClientSwarm::shutdown() {
  if (shut_down_ || !swarm_) return;
  shut_down_ = true;
  // What the command printed goes out now: ending the swarm and MPI can take the process down
  // without the usual flush at exit (a finalize that waits on a dead rank is cut short).
  std::cout.flush();
  std::fflush(nullptr);
  for (const auto& m : swarm_->membership().alive()) {
    if (m.peer == swarm_->self()) continue;
    (void)swarm_->system().send(ActorRef<BlockHostProtocol>{{m.peer, kBlockHostActorId}}, Shutdown{"client finished"});
  }
  // Hosts leave the membership as they end; waiting for that keeps spawned hosts from outliving
  // this process (their output goes through it).
  const PeerId self = swarm_->self();
  (void)swarm_->membership().wait_until([self](const std::vector<MemberInfo>& alive) {
    return alive.size() == 1 && alive.front().peer == self;
  }, std::chrono::seconds(10));
  swarm_->stop();
}

}  // namespace sepal::tools

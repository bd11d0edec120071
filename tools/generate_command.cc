// sepal generate: load a model, tokenize a prompt, stream generated text (or print JSON).
#include <sys/resource.h>
#include <unistd.h>
#include <omp.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <filesystem>
#include <future>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "model/block_stack.h"
#include "model/generation.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include <fstream>

#include "actors/balancer.h"
#include "actors/push_receiver.h"
#include "actors/remote_pipeline.h"
#include "actors/swarm_router.h"
#include "runtime/mpi_environment.h"
#include "tools/block_map_json.h"
#include "tools/commands.h"
#include "tools/host_process.h"
#include "tools/swarm_process.h"
#include "tools/wan_options.h"
#include "tools/weight_options.h"

namespace sepal::tools {
namespace {

namespace po = boost::program_options;

std::int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

// Launched by mpirun (or srun) with other ranks: generation runs across them.
int launched_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return 1;
}

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kEos: return "eos";
    case StopReason::kMaxNewTokens: return "max_new_tokens";
    case StopReason::kMaxPositions: return "max_position_embeddings";
  }
  return "?";
}

}  // namespace

int generate_command(int argc, char** argv) {
  WeightOptions weights;
  std::string model_dir, prompt, transport_name = "ucx", wan_text, config_path, mode = "push";
  std::string listen_file, secret_file, block_map_log;
  std::int64_t max_new_tokens = 128, top_k = 0, max_blocks = 0;
  double temperature = 0.0, top_p = 1.0, throughput = 0.0;
  std::uint64_t seed = 0;
  int threads = 0, replicas = 1, spawn_hosts = 0;
  po::options_description options("sepal generate: generate text with a model, in this process or across a swarm");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout)")
      ("prompt", po::value(&prompt)->default_value(""), "prompt text (empty: start from BOS)")
      ("max-new-tokens", po::value(&max_new_tokens)->default_value(128), "tokens to generate at most")
      ("temperature", po::value(&temperature)->default_value(0.0), "sampling temperature; 0 is greedy")
      ("top-k", po::value(&top_k)->default_value(0), "sample among the k likeliest tokens (0: all)")
      ("top-p", po::value(&top_p)->default_value(1.0), "nucleus sampling mass, in (0, 1]")
      ("seed", po::value(&seed)->default_value(0), "random seed for sampling")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)")
      ("json", "print one JSON object with ids, text and stats instead of streaming text")
      ("hosts", po::value(&spawn_hosts)->default_value(0),
       "start this many block host processes (MPI_Comm_spawn) and generate through them")
      ("transport", po::value(&transport_name)->default_value("ucx"),
       "swarm: how processes talk, ucx or mpi (under mpirun, rank 0 is the client and the balancer)")
      ("mode", po::value(&mode)->default_value("push"),
       "swarm: push (hosts forward hidden states to the next host) or relay (through the client)")
      ("wan", po::value(&wan_text), "swarm: emulate a WAN on every link (rtt_ms=..,bandwidth_mbps=..,loss=..)")
      ("config", po::value(&config_path), "config file; its [wan] section sets the WAN link")
      ("replicas", po::value(&replicas)->default_value(1),
       "swarm: size the hosts so that each block has this many (a failed host's blocks move to another)")
      ("max-blocks", po::value(&max_blocks)->default_value(0),
       "swarm: blocks each host holds (0: blocks x replicas / hosts, rounded up)")
      ("throughput", po::value(&throughput)->default_value(0.0),
       "swarm: hosts announce this many tokens/s per block instead of measuring")
      ("listen", po::value(&listen_file), "swarm: admit hosts joining at run time (sepal serve --join FILE);\n"
                                          "the port's name goes to FILE (needs ompi-server, see docs/operations.md)")
      ("secret-file", po::value(&secret_file), "swarm secret that joining processes must know (with --listen)")
      ("block-map-log", po::value(&block_map_log), "swarm: append the block map to this file (JSON lines) at every change");
  add_weight_options(options, weights);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  const bool json_output = vm.count("json") > 0;

  if (max_new_tokens < 0) throw UsageError{"--max-new-tokens must be at least 0"};
  if (!std::isfinite(temperature) || temperature < 0) throw UsageError{"--temperature must be a number >= 0"};
  if (top_k < 0 || top_k > (1 << 30)) throw UsageError{"--top-k must be at least 0"};
  if (!std::isfinite(top_p) || top_p <= 0 || top_p > 1) throw UsageError{"--top-p must be in (0, 1]"};
  if (threads < 0) throw UsageError{"--threads must be at least 0"};
  const WeightLoading loading = weight_loading(weights, vm);
  const std::string& dtype_text = weights.dtype;
  if (threads > 0) omp_set_num_threads(threads);
  if (transport_name != "ucx" && transport_name != "mpi") throw UsageError{"--transport must be ucx or mpi, got '" + transport_name + "'"};
  if (mode != "push" && mode != "relay") throw UsageError{"--mode must be push or relay, got '" + mode + "'"};
  if (spawn_hosts < 0 || spawn_hosts > 256) throw UsageError{"--hosts must be between 0 and 256"};
  if (replicas < 1) throw UsageError{"--replicas must be at least 1"};
  if (max_blocks < 0) throw UsageError{"--max-blocks must be at least 0"};
  if (!std::isfinite(throughput) || throughput < 0) throw UsageError{"--throughput must be a number >= 0"};
  if (vm.count("listen") && !vm.count("secret-file")) throw UsageError{"--listen needs --secret-file"};
  if (vm.count("listen") && transport_name != "ucx") throw UsageError{"--listen needs --transport ucx"};
  const WanConfig wan = wan_settings(config_path, wan_text);

  const int launched = launched_world_size();
  if (launched > 1 && spawn_hosts > 0) throw UsageError{"--hosts starts hosts itself; do not also launch with mpirun -np > 1"};
  const bool swarm_mode = launched > 1 || spawn_hosts > 0;

  // Everything that can be checked cheaply is checked before anything is started or loaded.
  const auto load_start = std::chrono::steady_clock::now();
  const ModelConfig config = read_model_config(model_dir);
  std::optional<SwarmSecret> secret;
  if (vm.count("secret-file")) {
    auto s = SwarmSecret::from_file(secret_file);
    if (!s.is_ok()) fail(s.status().message());
    secret = std::move(s).value();
  }
  int host_count = 0;
  std::ofstream map_log;  // declared before the swarm, so it outlives the balancer that writes it
  std::mutex map_log_mutex;
  std::unique_ptr<SwarmProcess> swarm;
  std::int64_t span = 0;
  if (swarm_mode) {
    if (Status s = mpi_init(&argc, &argv); !s.is_ok()) fail(s.to_string());
    host_count = launched > 1 ? launched - 1 : spawn_hosts;
    span = max_blocks > 0 ? std::min(max_blocks, config.num_layers)
                          : std::min<std::int64_t>(config.num_layers,
                                                   (config.num_layers * replicas + host_count - 1) / host_count);
    SwarmSettings settings{transport_name, wan, {}};
    MPI_Comm comm = MPI_COMM_WORLD;
    if (spawn_hosts > 0) {
      std::vector<std::string> args{"serve", "--spawned", "--model", model_dir, "--transport", transport_name,
                                    "--max-blocks", std::to_string(span), "--throughput", std::to_string(throughput)};
      for (auto& a : weight_arguments(weights, vm)) args.push_back(std::move(a));
      if (!config_path.empty()) args.insert(args.end(), {"--config", config_path});
      if (!wan_text.empty()) args.insert(args.end(), {"--wan", wan_text});
      if (threads > 0) args.insert(args.end(), {"--threads", std::to_string(threads)});
      std::fprintf(stderr, "sepal: starting %d block hosts\n", spawn_hosts);
      comm = spawn_and_merge(std::filesystem::read_symlink("/proc/self/exe").string(), args, spawn_hosts,
                             std::chrono::seconds(120));
    }
    if (mpi_world_rank() > 0 && launched > 1) {
      // A block host under mpirun.
      swarm = SwarmProcess::over_comm(comm, "host", settings);
      HostSettings host{model_dir, loading, span, throughput};
      return run_host(*swarm, host);
    }
    swarm = SwarmProcess::over_comm(comm, "client", settings);
    if (vm.count("listen")) swarm->listen(listen_file, *secret);
  }

  const auto tokenizer = load_tokenizer(model_dir);
  if (tokenizer->vocab_size() > config.vocab_size) {
    fail("the tokenizer has ", tokenizer->vocab_size(), " tokens but the model only ", config.vocab_size);
  }
  GenerationRequest request;
  if (config.bos_token_id >= 0) request.prompt_ids.push_back(config.bos_token_id);
  for (auto id : tokenizer->encode(prompt)) request.prompt_ids.push_back(id);
  if (request.prompt_ids.empty()) fail("the prompt is empty and the model has no bos_token_id to start from");
  request.max_new_tokens = max_new_tokens;
  request.sampling = SamplingParams{static_cast<float>(temperature), static_cast<std::int32_t>(top_k),
                                    static_cast<float>(top_p)};
  request.seed = seed;
  const std::int64_t capacity = session_capacity(config, request);

  if (isatty(STDERR_FILENO)) {
    std::fprintf(stderr, "sepal: loading %s (%lld blocks, %s)...\r", model_dir.c_str(),
                 static_cast<long long>(config.num_layers), dtype_text.c_str());
  }
  const Checkpoint checkpoint = Checkpoint::open(model_dir);
  const ModelEnds ends = ModelEnds::load(checkpoint, config, loading);
  std::unique_ptr<BlockStack> local_blocks;
  if (!swarm) local_blocks = std::make_unique<BlockStack>(BlockStack::load(checkpoint, config, 0, config.num_layers, loading));
  const std::int64_t weight_bytes = ends.weight_bytes() + (local_blocks ? local_blocks->weight_bytes() : 0);

  std::unique_ptr<BlockPipeline> pipeline;
  std::unique_ptr<SwarmRouter> router;
  RemotePipeline* remote = nullptr;
  if (local_blocks) {
    pipeline = std::make_unique<LocalPipeline>(*local_blocks, capacity);
  } else {
    // The client driver: the balancer places the hosts as they announce themselves; the route
    // is planned once every block is served.
    if (!block_map_log.empty()) {
      map_log.open(block_map_log, std::ios::app);
      if (!map_log) fail("cannot write the block map log ", block_map_log);
    }
    BalancerOptions balancer;
    balancer.on_change = [&](const BlockMapReply& map, const std::string& event) {
      std::lock_guard lock(map_log_mutex);
      if (map_log.is_open()) {
        nlohmann::json line = block_map_json(map);
        line["event"] = event;
        map_log << line.dump() << std::endl;
      }
    };
    swarm->system().spawn_with_id<Balancer>(kBalancerActorId, balancer);
    RemotePipelineOptions pipeline_options;
    if (mode == "push") {
      pipeline_options.push_inbox = std::make_shared<PushInbox>();
      swarm->system().spawn_with_id<PushReceiver>(kPushReceiverActorId, pipeline_options.push_inbox);
    }
    router = std::make_unique<SwarmRouter>(swarm->system(), ActorRef<BalancerProtocol>{{swarm->self(), kBalancerActorId}});
    if (Status s = router->wait_until_ready(host_count, std::chrono::minutes(5)); !s.is_ok()) fail(s.message());
    auto owned = std::make_unique<RemotePipeline>(swarm->system(), *router, config.num_layers, capacity,
                                                  /*session=*/1, pipeline_options);
    remote = owned.get();
    pipeline = std::move(owned);
    std::string route;
    for (const auto& hop : remote->route()) {
      route += (route.empty() ? "" : " -> ") + ("host " + std::to_string(hop.host.address.peer) + " [" +
                                                std::to_string(hop.first) + ", " + std::to_string(hop.last) + ")");
    }
    std::fprintf(stderr, "sepal: route (%s): %s\n", mode.c_str(), route.c_str());
  }
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::fprintf(stderr, "sepal: loaded %s: %lld blocks, %.1f MB of %s weights here, %s kernels, %d threads, %.2f s\n",
               model_dir.c_str(), static_cast<long long>(config.num_layers), weight_bytes / 1e6,
               dtype_text.c_str(), std::string(cpu_isa_name(active_cpu_isa())).c_str(),
               omp_get_max_threads(), load_seconds);

  TextStream stream(*tokenizer);
  std::string text;
  auto emit = [&](const std::string& piece) {
    text += piece;
    if (!json_output) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  };
  const std::size_t skip = config.bos_token_id >= 0 ? 1 : 0;
  for (std::size_t i = skip; i < request.prompt_ids.size(); ++i) emit(stream.push(request.prompt_ids[i]));

  const GenerationResult result = generate(ends, *pipeline, request, [&](std::int32_t id) {
    if (id < tokenizer->vocab_size()) emit(stream.push(id));
  });
  emit(stream.finish());

  const auto prompt_tokens = static_cast<double>(request.prompt_ids.size());
  const auto generated = static_cast<double>(result.generated_ids.size());
  const double prompt_tps = result.prompt_seconds > 0 ? prompt_tokens / result.prompt_seconds : 0.0;
  const double decode_tps =
      result.decode_seconds > 0 && generated > 1 ? (generated - 1) / result.decode_seconds : 0.0;
  if (result.stop == StopReason::kMaxPositions) {
    std::fprintf(stderr, "\nsepal: stopped at max_position_embeddings (%lld)\n",
                 static_cast<long long>(config.max_position_embeddings));
  }
  if (json_output) {
    nlohmann::json out;
    out["prompt_ids"] = request.prompt_ids;
    out["generated_ids"] = result.generated_ids;
    out["text"] = text;
    out["stop_reason"] = stop_reason_name(result.stop);
    out["stats"] = {{"prompt_tokens", request.prompt_ids.size()},
                    {"generated_tokens", result.generated_ids.size()},
                    {"prompt_tokens_per_s", prompt_tps},
                    {"decode_tokens_per_s", decode_tps},
                    {"time_to_first_token_s", result.prompt_seconds},
                    {"load_seconds", load_seconds},
                    {"weight_bytes", weight_bytes},
                    {"peak_rss_bytes", peak_rss_bytes()},
                    {"dtype", dtype_text},
                    {"cpu_isa", cpu_isa_name(active_cpu_isa())},
                    {"threads", omp_get_max_threads()},
                    {"host_ranks", host_count}};
    if (remote) {
      nlohmann::json route = nlohmann::json::array();
      for (const auto& hop : remote->route()) route.push_back({{"host", hop.host.address.peer}, {"first", hop.first}, {"last", hop.last}});
      out["stats"]["route"] = route;
      out["stats"]["mode"] = mode;
      out["stats"]["failovers"] = remote->failovers();
      if (auto map = router->block_map(); map.is_ok()) out["block_map"] = block_map_json(map.value());
    }
    std::cout << out.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::printf("\n");
    std::fprintf(stderr, "sepal: %zu prompt tokens at %.1f tokens/s, %zu generated at %.1f tokens/s\n",
                 request.prompt_ids.size(), prompt_tps, result.generated_ids.size(), decode_tps);
  }
  if (swarm) {
    pipeline.reset();  // closes the sessions
    for (const auto& m : swarm->membership().alive()) {
      if (m.peer == swarm->self()) continue;
      (void)swarm->system().send(ActorRef<BlockHostProtocol>{{m.peer, kBlockHostActorId}}, Shutdown{"generation finished"});
    }
    // Hosts leave the membership as they end; waiting for that keeps spawned hosts from outliving
    // this process (their output goes through it).
    const PeerId self = swarm->self();
    (void)swarm->membership().wait_until([self](const std::vector<MemberInfo>& alive) {
      return alive.size() == 1 && alive.front().peer == self;
    }, std::chrono::seconds(10));
    swarm->stop();
  }
  return 0;
}

}  // namespace sepal::tools

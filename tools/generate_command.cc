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
#include "actors/block_host.h"
#include "actors/block_placement.h"
#include "actors/remote_pipeline.h"
#include "runtime/mpi_environment.h"
#include "runtime/mpi_transport.h"
#include "runtime/ucx_transport.h"
#include "runtime/wan_transport.h"
#include "tools/commands.h"
#include "tools/wan_options.h"

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

// Blocks [0, layers) in `hosts` contiguous parts whose sizes differ by at most one.
std::vector<BlockRange> split_evenly(std::int64_t layers, std::int64_t hosts) {
  std::vector<BlockRange> parts;
  std::int64_t first = 0;
  for (std::int64_t h = 0; h < hosts; ++h) {
    const std::int64_t size = layers / hosts + (h < layers % hosts ? 1 : 0);
    parts.push_back({first, first + size});
    first += size;
  }
  return parts;
}

// The swarm's transport for this process: UCX or MPI over MPI_COMM_WORLD, WAN-emulated if asked.
std::unique_ptr<Transport> swarm_transport(const std::string& kind, const WanConfig& wan) {
  std::unique_ptr<Transport> t;
  if (kind == "mpi") {
    auto created = MpiTransport::create(MPI_COMM_WORLD);
    if (!created.is_ok()) fail(created.status().to_string());
    t = std::move(created).value();
  } else {
    auto created = UcxTransport::create_over_mpi(MPI_COMM_WORLD);
    if (!created.is_ok()) fail(created.status().to_string());
    t = std::move(created).value();
  }
  if (wan.enabled()) t = std::make_unique<WanTransport>(std::move(t), wan);
  return t;
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
  std::string model_dir, prompt, dtype_text = "f32", transport_name = "ucx", wan_text, config_path;
  std::int64_t max_new_tokens = 128, top_k = 0;
  double temperature = 0.0, top_p = 1.0;
  std::uint64_t seed = 0;
  int threads = 0;
  int replicas = 1;
  po::options_description options("sepal generate: generate text with a model in this process");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout)")
      ("prompt", po::value(&prompt)->default_value(""), "prompt text (empty: start from BOS)")
      ("max-new-tokens", po::value(&max_new_tokens)->default_value(128), "tokens to generate at most")
      ("temperature", po::value(&temperature)->default_value(0.0), "sampling temperature; 0 is greedy")
      ("top-k", po::value(&top_k)->default_value(0), "sample among the k likeliest tokens (0: all)")
      ("top-p", po::value(&top_p)->default_value(1.0), "nucleus sampling mass, in (0, 1]")
      ("seed", po::value(&seed)->default_value(0), "random seed for sampling")
      ("dtype", po::value(&dtype_text)->default_value("f32"), "weights in memory: f32 or bf16")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)")
      ("mmap-weights", "use weights in place from the file mapping where the stored type matches:\n"
                       "faster to load and shared between processes, slower to decode (4 KiB pages)")
      ("json", "print one JSON object with ids, text and stats instead of streaming text")
      ("transport", po::value(&transport_name)->default_value("ucx"),
       "under mpirun: how ranks talk, ucx or mpi (rank 0 is the client, the others host blocks)")
      ("wan", po::value(&wan_text), "under mpirun: emulate a WAN on every link (rtt_ms=..,bandwidth_mbps=..)")
      ("config", po::value(&config_path), "config file; its [wan] section sets the WAN link")
      ("replicas", po::value(&replicas)->default_value(1),
       "under mpirun: hosts per block range; a failed host's blocks move to a replica");
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
  const auto dtype = parse_dtype(dtype_text);
  if (!dtype || *dtype == DType::kF16) throw UsageError{"--dtype must be f32 or bf16, got '" + dtype_text + "'"};
  if (threads > 0) omp_set_num_threads(threads);
  if (transport_name != "ucx" && transport_name != "mpi") throw UsageError{"--transport must be ucx or mpi, got '" + transport_name + "'"};
  const WanConfig wan = wan_settings(config_path, wan_text);

  // Under mpirun with other ranks: rank 0 is the client, every other rank hosts blocks.
  const int world = launched_world_size();
  std::unique_ptr<Transport> transport;
  std::unique_ptr<ThreadPoolScheduler> scheduler;
  std::unique_ptr<ActorSystem> system;
  std::vector<BlockRange> split;
  int rank = 0;
  if (world > 1) {
    if (Status s = mpi_init(&argc, &argv); !s.is_ok()) fail(s.to_string());
    rank = mpi_world_rank();
    transport = swarm_transport(transport_name, wan);
    scheduler = std::make_unique<ThreadPoolScheduler>(2);
    system = std::make_unique<ActorSystem>(*transport, *scheduler);
  }

  // Everything that can be checked cheaply is checked before the weights are loaded.
  const auto load_start = std::chrono::steady_clock::now();
  const ModelConfig config = read_model_config(model_dir);
  // Host rank h (1-based) serves range (h - 1) % groups; each range has `replicas` hosts.
  std::int64_t groups = 0;
  if (world > 1) {
    if (replicas < 1 || (world - 1) % replicas != 0) {
      throw UsageError{"--replicas " + std::to_string(replicas) + " must divide the " + std::to_string(world - 1) + " host ranks"};
    }
    groups = (world - 1) / replicas;
    if (groups > config.num_layers) {
      fail(groups, " block ranges but the model has only ", config.num_layers, " blocks: use fewer ranks or more --replicas");
    }
    split = split_evenly(config.num_layers, groups);
  }
  if (world > 1 && rank > 0) {
    // A block host: load only this rank's blocks, serve them until rank 0 says it is done.
    const BlockRange range = split[static_cast<std::size_t>((rank - 1) % groups)];
    const Checkpoint checkpoint = Checkpoint::open(model_dir);
    const WeightLoading loading(*dtype, /*in_place=*/vm.count("mmap-weights") > 0);
    auto blocks = std::make_shared<const BlockStack>(BlockStack::load(checkpoint, config, range.first, range.last, loading));
    std::fprintf(stderr, "sepal: rank %d (pid %d) serves blocks [%lld, %lld): %.1f MB of %s weights\n", rank, getpid(),
                 static_cast<long long>(range.first), static_cast<long long>(range.last), blocks->weight_bytes() / 1e6,
                 dtype_text.c_str());
    auto done = std::make_shared<std::promise<void>>();
    BlockHostOptions options;
    options.model_name = std::filesystem::path(model_dir).filename().string();
    options.on_shutdown = [done](const std::string&) { done->set_value(); };
    system->spawn_with_id<BlockHost>(kBlockHostActorId, blocks, options);
    system->watch_peer_failures([done](PeerId peer, const Status&) {
      if (peer == 0) done->set_value();  // the client is gone: nothing left to serve
    });
    if (Status s = system->start(); !s.is_ok()) fail(s.to_string());
    MPI_Barrier(MPI_COMM_WORLD);  // every host serves before the client routes
    done->get_future().wait();
    system->stop();
    return 0;
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
  const WeightLoading loading(*dtype, /*in_place=*/vm.count("mmap-weights") > 0);
  const ModelEnds ends = ModelEnds::load(checkpoint, config, loading);
  std::unique_ptr<BlockStack> local_blocks;
  if (world == 1) local_blocks = std::make_unique<BlockStack>(BlockStack::load(checkpoint, config, 0, config.num_layers, loading));
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const std::int64_t weight_bytes = ends.weight_bytes() + (local_blocks ? local_blocks->weight_bytes() : 0);
  std::fprintf(stderr, "sepal: loaded %s: %lld blocks, %.1f MB of %s weights, %s kernels, %d threads, %.2f s\n",
               model_dir.c_str(), static_cast<long long>(config.num_layers), weight_bytes / 1e6,
               dtype_text.c_str(), std::string(cpu_isa_name(active_cpu_isa())).c_str(),
               omp_get_max_threads(), load_seconds);

  std::unique_ptr<BlockPipeline> pipeline;
  if (local_blocks) {
    pipeline = std::make_unique<LocalPipeline>(*local_blocks, capacity);
  } else {
    if (Status s = system->start(); !s.is_ok()) fail(s.to_string());
    MPI_Barrier(MPI_COMM_WORLD);
    std::vector<RouteHop> route;
    for (std::int64_t g = 0; g < groups; ++g) {
      const BlockRange& r = split[static_cast<std::size_t>(g)];
      RouteHop hop{ActorRef<BlockHostProtocol>{{static_cast<PeerId>(g + 1), kBlockHostActorId}}, r.first, r.last, {}};
      for (std::int64_t h = g + 1 + groups; h < world; h += groups) {
        hop.replicas.push_back(ActorRef<BlockHostProtocol>{{static_cast<PeerId>(h), kBlockHostActorId}});
      }
      route.push_back(std::move(hop));
    }
    pipeline = std::make_unique<RemotePipeline>(*system, route, capacity, /*session=*/1);
  }
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
                    {"load_seconds", load_seconds},
                    {"weight_bytes", weight_bytes},
                    {"peak_rss_bytes", peak_rss_bytes()},
                    {"dtype", dtype_text},
                    {"cpu_isa", cpu_isa_name(active_cpu_isa())},
                    {"threads", omp_get_max_threads()},
                    {"host_ranks", world - 1}};
    std::cout << out.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::printf("\n");
    std::fprintf(stderr, "sepal: %zu prompt tokens at %.1f tokens/s, %zu generated at %.1f tokens/s\n",
                 request.prompt_ids.size(), prompt_tps, result.generated_ids.size(), decode_tps);
  }
  if (system) {
    pipeline.reset();  // closes the sessions
    for (int h = 1; h < world; ++h) {
      (void)system->send(ActorRef<BlockHostProtocol>{{static_cast<PeerId>(h), kBlockHostActorId}}, Shutdown{"generation finished"});
    }
    system->stop();  // flushes the shutdown messages
  }
  return 0;
}

}  // namespace sepal::tools

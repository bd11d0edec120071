// sepal generate: load a model, tokenize a prompt, stream generated text (or print JSON).
#include <sys/resource.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <filesystem>
#include <future>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kernels/parallel.h"
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
#include "tools/client_model.h"
#include "tools/client_swarm.h"
#include "tools/weight_options.h"

namespace sepal::tools {
namespace {

namespace po = boost::program_options;

std::int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
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
  SwarmOptions swarm_options;
  std::string model_dir, prompt;
  std::int64_t max_new_tokens = 128, top_k = 0;
  double temperature = 0.0, top_p = 1.0;
  std::uint64_t seed = 0;
  int threads = 0;
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
      ("json", "print one JSON object with ids, text and stats instead of streaming text");
  add_weight_options(options, weights);
  add_swarm_options(options, swarm_options);
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
  if (threads > 0) set_compute_threads(threads);

  // Everything that can be checked cheaply is checked before anything is started or loaded.
  const auto load_start = std::chrono::steady_clock::now();
  const ModelConfig config = read_model_config(model_dir);
  std::unique_ptr<ClientSwarm> swarm;
  if (wants_swarm(swarm_options, vm)) {
    int host_exit = 0;
    swarm = ClientSwarm::start(&argc, &argv, swarm_options, model_dir, config, weights, vm, threads, host_exit);
    if (!swarm) return host_exit;  // this rank was a block host
  }

  const ClientModel model = load_client_model(model_dir, config, loading, /*with_blocks=*/!swarm);
  const Tokenizer* tokenizer = model.tokenizer.get();
  const ModelEnds& ends = model.ends;
  GenerationRequest request;
  if (config.bos_token_id >= 0) request.prompt_ids.push_back(config.bos_token_id);
  for (auto id : tokenizer->encode(prompt)) request.prompt_ids.push_back(id);
  if (request.prompt_ids.empty()) fail("the prompt is empty and the model has no bos_token_id to start from");
  request.max_new_tokens = max_new_tokens;
  request.sampling = SamplingParams{static_cast<float>(temperature), static_cast<std::int32_t>(top_k),
                                    static_cast<float>(top_p)};
  request.seed = seed;
  const std::int64_t capacity = session_capacity(config, request);

  const std::int64_t weight_bytes = model.weight_bytes();

  std::unique_ptr<BlockPipeline> pipeline;
  RemotePipeline* remote = nullptr;
  if (model.blocks) {
    pipeline = std::make_unique<LocalPipeline>(*model.blocks, capacity);
  } else {
    auto owned = swarm->open(capacity, /*session=*/1);
    remote = owned.get();
    pipeline = std::move(owned);
    std::string route;
    for (const auto& hop : remote->route()) {
      route += (route.empty() ? "" : " -> ") + ("host " + std::to_string(hop.host.address.peer) + " [" +
                                                std::to_string(hop.first) + ", " + std::to_string(hop.last) + ")");
    }
    std::fprintf(stderr, "sepal: route (%s): %s\n", swarm_options.mode.c_str(), route.c_str());
  }
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::fprintf(stderr, "sepal: loaded %s: %lld blocks, %.1f MB of %s weights here, %s kernels, %d threads, %.2f s\n",
               model_dir.c_str(), static_cast<long long>(config.num_layers), weight_bytes / 1e6,
               dtype_text.c_str(), std::string(cpu_isa_name(active_cpu_isa())).c_str(),
               compute_threads(), load_seconds);

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
                    {"threads", compute_threads()},
                    {"host_ranks", swarm ? swarm->host_count() : 0}};
    if (remote) {
      nlohmann::json stats = swarm->stats(*remote);
      if (stats.contains("block_map")) {
        out["block_map"] = stats["block_map"];
        stats.erase("block_map");
      }
      out["stats"].update(stats);
    }
    std::cout << out.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::printf("\n");
    std::fflush(stdout);  // the text's last line before the statistics, on a shared terminal
    std::fprintf(stderr, "sepal: %zu prompt tokens at %.1f tokens/s, %zu generated at %.1f tokens/s\n",
                 request.prompt_ids.size(), prompt_tps, result.generated_ids.size(), decode_tps);
  }
  if (swarm) {
    pipeline.reset();  // closes the sessions
    swarm->shutdown();
  }
  return 0;
}

}  // namespace sepal::tools

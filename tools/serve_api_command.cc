// sepal serve-api: the OpenAI-compatible HTTP API (actors/api/api_server.h) in front of a model
// in this process or a swarm (the swarm flags of generate), with the live status page at / and
// Prometheus metrics at /metrics; serves until SIGINT or SIGTERM.
#include <boost/program_options.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "actors/api/api_server.h"
#include "actors/api/chat_template.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/generation.h"
#include "model/model_config.h"
#include "tools/client_model.h"
#include "tools/commands.h"
#include "tools/swarm_flags.h"
#include "tools/weight_options.h"

namespace sepal::tools {
namespace {

namespace po = boost::program_options;

std::atomic<int> g_signal{0};
extern "C" void on_signal(int signal) { g_signal.store(signal); }

std::set<std::string> read_api_keys(const std::string& file) {
  std::ifstream in(file);
  if (!in) fail("cannot read the API key file ", file);
  std::set<std::string> keys;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (!line.empty()) keys.insert(line);
  }
  if (keys.empty()) fail("the API key file ", file, " holds no key (one per line)");
  return keys;
}

}  // namespace

int serve_api_command(int argc, char** argv) {
  WeightOptions weights;
  SwarmOptions swarm_options;
  api::ApiServerOptions server;
  std::string model_dir, model_name, key_file;
  int threads = 0;
  po::options_description options(
      "sepal serve-api: an OpenAI-compatible HTTP API (/v1/models, /v1/completions, /v1/chat/completions)\n"
      "in front of a model in this process or a swarm");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout) or GGUF file")
      ("model-name", po::value(&model_name), "the model id clients name (default: the folder's name)")
      ("bind", po::value(&server.bind)->default_value("127.0.0.1"), "address to listen on (0.0.0.0: every interface)")
      ("port", po::value(&server.port)->default_value(8000), "TCP port (0: any free port, printed)")
      ("api-key-file", po::value(&key_file), "require \"Authorization: Bearer KEY\" with a KEY of FILE (one per line)")
      ("max-running", po::value(&server.max_running)->default_value(16),
       "generations at once (a model in this process runs one at a time)")
      ("max-waiting", po::value(&server.max_waiting)->default_value(64),
       "requests waiting for a turn; more get HTTP 429")
      ("max-body-bytes", po::value(&server.max_body_bytes)->default_value(1 << 20), "request bodies over this get HTTP 413")
      ("max-n", po::value(&server.limits.max_n)->default_value(8), "largest n (choices per prompt) a request may ask")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)");
  add_weight_options(options, weights);
  add_swarm_options(options, swarm_options);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  if (server.port < 0 || server.port > 65535) throw UsageError{"--port must be between 0 and 65535"};
  if (server.max_running < 1) throw UsageError{"--max-running must be at least 1"};
  if (server.max_waiting < 0) throw UsageError{"--max-waiting must be at least 0"};
  if (server.max_body_bytes < 1024) throw UsageError{"--max-body-bytes must be at least 1024"};
  if (server.limits.max_n < 1) throw UsageError{"--max-n must be at least 1"};
  if (threads < 0) throw UsageError{"--threads must be at least 0"};
  if (!key_file.empty()) server.api_keys = read_api_keys(key_file);
  const WeightLoading loading = weight_loading(weights, vm);
  if (threads > 0) set_compute_threads(threads);
  if (model_name.empty()) model_name = std::filesystem::path(model_dir).filename().string();
  if (model_name.empty()) model_name = std::filesystem::path(model_dir).parent_path().filename().string();

  const ModelConfig config = read_model_config(model_dir);
  const api::ChatForm chat_form = api::chat_form_of_model(model_dir);
  std::unique_ptr<ClientSwarm> swarm;
  if (wants_swarm(swarm_options, vm)) {
    int host_exit = 0;
    swarm = ClientSwarm::start(&argc, &argv, swarm_options, model_dir, config, weights, vm, threads, host_exit);
    if (!swarm) return host_exit;  // this rank was a block host
  }
  const ClientModel model = load_client_model(model_dir, config, loading, /*with_blocks=*/!swarm);

  api::ServedModel served;
  served.name = model_name;
  served.config = &config;
  served.tokenizer = model.tokenizer.get();
  served.ends = &model.ends;
  served.chat_form = chat_form;
  served.one_at_a_time = !swarm;
  if (swarm) {
    served.open_session = [&swarm](std::int64_t capacity) -> std::unique_ptr<BlockPipeline> { return swarm->open(capacity); };
    served.swarm_status = [&swarm] { return swarm->status(); };
  } else {
    served.open_session = [&model](std::int64_t capacity) -> std::unique_ptr<BlockPipeline> {
      return std::make_unique<LocalPipeline>(*model.blocks, capacity);
    };
  }
  api::ApiServer api(std::move(served), server);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  if (Status started = api.start(); !started.is_ok()) {
    if (swarm) swarm->shutdown();
    fail(started.message());
  }
  std::fprintf(stderr, "sepal: serving %s as '%s' at http://%s:%d/v1 (%s, chat template: %s, %s kernels)\n",
               model_dir.c_str(), model_name.c_str(), server.bind.c_str(), api.port(),
               swarm ? ("a swarm of " + std::to_string(swarm->host_count()) + " hosts").c_str() : "blocks in this process",
               api::chat_form_name(chat_form), std::string(cpu_isa_name(active_cpu_isa())).c_str());
  std::fflush(stderr);
  while (g_signal.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::fprintf(stderr, "sepal: signal %d: stopping the API\n", g_signal.load());
  api.stop();
  const api::ApiCounters& c = api.counters();
  std::fprintf(stderr, "sepal: %lld requests (%lld errors, %lld turned away, %lld clients left mid-stream), %lld prompt and %lld completion tokens\n",
               static_cast<long long>(c.requests.load()), static_cast<long long>(c.errors.load()),
               static_cast<long long>(c.rejected.load()), static_cast<long long>(c.disconnects.load()),
               static_cast<long long>(c.prompt_tokens.load()), static_cast<long long>(c.completion_tokens.load()));
  if (swarm) swarm->shutdown();
  return 0;
}

}  // namespace sepal::tools

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
#include <list>
#include <thread>

#include "actors/api/api_server.h"
#include "actors/api/chat_template.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/generation.h"
#include "model/model_config.h"
#include "tools/adapter.h"
#include "tools/client_model.h"
#include "tools/commands.h"
#include "tools/swarm_flags.h"
#include "tools/weight_options.h"
#include "tools/thread_flag.h"

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
  std::string model_dir, model_name, key_file, device_text;
  std::vector<std::string> adapter_specs;
  int threads = 0;
  std::string reasoning_format = "auto";
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
      ("adapter", po::value(&adapter_specs)->composing(),
       "NAME=PATH: also serve a tuned prompt or PEQA/LoRA adapters (a sepal tune checkpoint or a PEFT\n"
       "folder) as model NAME (repeatable); its sessions share the hosts with the base model's")
      ("max-running", po::value(&server.max_running)->default_value(16),
       "generations at once (a model in this process runs one at a time)")
      ("max-waiting", po::value(&server.max_waiting)->default_value(64),
       "requests waiting for a turn; more get HTTP 429")
      ("max-body-bytes", po::value(&server.max_body_bytes)->default_value(1 << 20), "request bodies over this get HTTP 413")
      ("max-n", po::value(&server.limits.max_n)->default_value(8), "largest n (choices per prompt) a request may ask")
      ("reasoning-format", po::value(&reasoning_format)->default_value("auto"),
       "auto: where the chat template teaches <think> ... </think>, chat replies give the thinking as\n"
       "reasoning_content apart from content (a harmony template's, GPT-OSS's: its analysis\n"
       "messages); none: the whole reply is content (harmony's as written, its special tokens in it,\n"
       "its calls not read)")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)");
  add_weight_options(options, weights);
  add_device_option(options, device_text);
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
  if (reasoning_format != "auto" && reasoning_format != "none") {
    throw UsageError{"--reasoning-format must be auto or none, not '" + reasoning_format + "'"};
  }
  server.split_reasoning = reasoning_format == "auto";
  if (!key_file.empty()) server.api_keys = read_api_keys(key_file);
  const WeightLoading loading = weight_loading(weights, vm);
  const Device device = device_option(device_text, loading);
  apply_threads_flag(threads);
  if (model_name.empty()) model_name = std::filesystem::path(model_dir).filename().string();
  if (model_name.empty()) model_name = std::filesystem::path(model_dir).parent_path().filename().string();

  const ModelConfig config = read_model_config(model_dir);
  const api::ChatTemplate chat_template = api::chat_template_of_model(model_dir);
  // Every adapter is read and checked before a swarm starts.
  std::vector<std::pair<std::string, PromptParameters>> adapters;
  for (const std::string& spec : adapter_specs) {
    const std::size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) throw UsageError{"--adapter takes NAME=PATH, got '" + spec + "'"};
    const std::string name = spec.substr(0, eq);
    if (name == model_name) throw UsageError{"--adapter " + name + ": the base model already has that name"};
    for (const auto& [other, params] : adapters) {
      if (other == name) throw UsageError{"--adapter " + name + " is given twice"};
    }
    auto params = load_adapter(spec.substr(eq + 1), model_dir, config);
    check_adapter_use(&*params, loading);
    adapters.emplace_back(name, std::move(*params));
  }
  std::unique_ptr<ClientSwarm> swarm;
  if (wants_swarm(swarm_options, vm)) {
    int host_exit = 0;
    swarm = ClientSwarm::start(&argc, &argv, swarm_options, model_dir, config, weights, vm, threads, host_exit);
    if (!swarm) return host_exit;  // this rank was a block host
  }
  const ClientModel model = load_client_model(model_dir, config, loading, /*with_blocks=*/!swarm, device);
  // The tuned variants; what their sessions point to lives here until the server stops.
  std::list<PromptParameters> tuned;
  std::list<std::optional<BlockAdapters>> block_adapters;
  std::vector<api::ServedAdapter> served_adapters;
  for (const auto& [name, params] : adapters) {
    tuned.push_back(params);
    const PromptParameters& p = tuned.back();
    block_adapters.push_back(p.block_adapters());
    const BlockAdapters* blocks_adapters = block_adapters.back() ? &*block_adapters.back() : nullptr;
    api::ServedAdapter a;
    a.name = name;
    a.soft_prompt = p.soft;
    a.soft_prompt_at = p.offset;
    if (swarm) {
      a.open_session = [&swarm, &p](std::int64_t capacity) -> std::unique_ptr<BlockPipeline> { return swarm->open(capacity, &p); };
    } else {
      a.open_session = [&model, &p, blocks_adapters](std::int64_t capacity) -> std::unique_ptr<BlockPipeline> {
        const std::optional<DeepPrompts> deep = p.deep_prompts();
        return std::make_unique<LocalPipeline>(*model.blocks, capacity, deep ? &*deep : nullptr, blocks_adapters);
      };
    }
    served_adapters.push_back(std::move(a));
  }

  api::ServedModel served;
  served.name = model_name;
  served.config = &config;
  served.tokenizer = model.tokenizer.get();
  served.ends = &model.ends;
  served.chat_template = chat_template;
  served.one_at_a_time = !swarm;
  served.adapters = std::move(served_adapters);
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
  if (chat_template.tool_format != api::ToolCallFormat::kNone) {
    std::fprintf(stderr, "sepal: tool calls: read in the %s format the chat template teaches\n",
                 api::tool_call_format_name(chat_template.tool_format));
  } else {
    std::fprintf(stderr, "sepal: tool calls: none (the chat template teaches no format sepal reads; requests with tools are refused)\n");
  }
  if (chat_template.harmony) {
    std::fprintf(stderr, "sepal: reasoning: the chat template writes harmony's channels; %s\n",
                 server.split_reasoning ? "replies give analysis as reasoning_content, final as content, calls to functions as tool_calls"
                                        : "replies left as written (--reasoning-format none)");
  }
  if (chat_template.thinks) {
    std::fprintf(stderr, "sepal: reasoning: the chat template teaches <think>; %s\n",
                 server.split_reasoning ? "replies give it as reasoning_content" : "left in content (--reasoning-format none)");
  }
  std::fprintf(stderr, "sepal: serving %s as '%s' at http://%s:%d/v1 (%s, chat template: %s, %s kernels)\n",
               model_dir.c_str(), model_name.c_str(), server.bind.c_str(), api.port(),
               swarm ? ("a swarm of " + std::to_string(swarm->host_count()) + (swarm->host_count() == 1 ? " host" : " hosts")).c_str() : "blocks in this process",
               api::describe_chat_template(chat_template).c_str(), std::string(cpu_isa_name(active_cpu_isa())).c_str());
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

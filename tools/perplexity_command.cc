// sepal perplexity: mean negative log-likelihood of a text under a model, in this process or
// through a swarm. The text is split into documents at blank lines; each is encoded with the
// model's tokenizer after a BOS (when the model has one), the documents are joined, and the token
// stream is cut into windows of --context tokens, each run from an empty cache. Every token of a
// window after its first is scored.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kernels/parallel.h"
#include "kernels/softmax.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "model/generation.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/tokenizer.h"
#include "model/tuning_data.h"
#include "model/prompt_tuning.h"
#include "tools/adapter.h"
#include "tools/client_model.h"
#include "tools/swarm_flags.h"
#include "tools/commands.h"
#include "tools/weight_options.h"
#include "tools/thread_flag.h"

namespace sepal::tools {
namespace {

namespace po = boost::program_options;

std::vector<std::int32_t> tokenize_documents(const std::string& text, const Tokenizer& tokenizer,
                                             const ModelConfig& config) {
  std::vector<std::int32_t> ids;
  std::istringstream lines(text);
  std::string line, document;
  auto flush = [&] {
    if (document.empty()) return;
    if (config.bos_token_id >= 0) ids.push_back(config.bos_token_id);
    for (auto id : tokenizer.encode(document)) ids.push_back(id);
    document.clear();
  };
  while (std::getline(lines, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      flush();
    } else {
      document += (document.empty() ? "" : "\n") + line;
    }
  }
  flush();
  return ids;
}

// Σ -log p(target[i] | logits[i]) over rows, in double: the rows in parallel, their terms added
// in order (the same sum for every thread count).
double negative_log_likelihood(const float* logits, std::int64_t vocab, const std::int32_t* targets, std::int64_t n) {
  std::vector<double> terms(static_cast<std::size_t>(n));
  parallel_for(n, [&](std::int64_t i) {
    const float* row = logits + i * vocab;
    terms[static_cast<std::size_t>(i)] = log_sum_exp(row, vocab) - row[targets[i]];
  });
  double total = 0;
  for (const double t : terms) total += t;
  return total;
}


// --data: each example through the blocks as one sequence (with the adapter's prompt), its
// completion's tokens scored.
int score_data_file(const std::string& data_file, const ClientModel& model, const ModelConfig& config,
                    const PromptParameters* adapter, ClientSwarm* swarm, bool json_output, const std::string& dtype,
                    std::chrono::steady_clock::time_point start) {
  const std::int64_t room = config.max_position_embeddings - (adapter ? adapter->tokens : 0);
  const std::vector<Example> examples = read_examples(data_file, *model.tokenizer, config, room);
  const std::optional<DeepPrompts> deep = adapter ? adapter->deep_prompts() : std::nullopt;
  const std::optional<BlockAdapters> block_adapters = adapter ? adapter->block_adapters() : std::nullopt;
  double nll = 0;
  std::int64_t scored = 0;
  const bool tty = isatty(STDERR_FILENO);
  for (std::size_t i = 0; i < examples.size(); ++i) {
    const Example* one[] = {&examples[i]};
    PromptedBatch b = build_batch(model.ends, one, adapter);
    const std::int64_t n = b.lengths[0];
    if (model.blocks) {
      LocalPipeline pipeline(*model.blocks, n, deep ? &*deep : nullptr, block_adapters ? &*block_adapters : nullptr);
      pipeline.forward(b.hidden.data(), n);
    } else {
      auto pipeline = swarm->open(n, adapter);
      pipeline->forward(b.hidden.data(), n);
    }
    nll += model.ends.cross_entropy(b.hidden.data(), n, b.targets.data(), 0.0f, nullptr);
    scored += b.scored;
    if (tty) {
      std::fprintf(stderr, "sepal: example %zu of %zu, %lld tokens, mean nll %.4f\r", i + 1, examples.size(),
                   static_cast<long long>(scored), nll / static_cast<double>(scored));
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  const double mean = nll / static_cast<double>(scored);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (json_output) {
    std::cout << nlohmann::json{{"tokens", scored},
                                {"examples", examples.size()},
                                {"nll", mean},
                                {"perplexity", std::exp(mean)},
                                {"adapter", adapter ? std::string(tuning_method_name(adapter->method)) : "none"},
                                {"stats", {{"dtype", dtype}, {"seconds", seconds}, {"host_ranks", swarm ? swarm->host_count() : 0}}}}
                     .dump(1)
              << std::endl;
  } else {
    std::printf("perplexity %.4f (mean nll %.5f) over %lld scored tokens of %zu examples in %s%s\n", std::exp(mean), mean,
                static_cast<long long>(scored), examples.size(), data_file.c_str(),
                adapter ? (", with a " + std::string(tuning_method_name(adapter->method)) + " adapter").c_str() : "");
  }
  if (swarm) swarm->shutdown();
  return 0;
}

}  // namespace

int perplexity_command(int argc, char** argv) {
  WeightOptions weights;
  SwarmOptions swarm_options;
  std::string model_dir, text_file, data_file, adapter_file, device_text;
  std::int64_t context = 0, max_tokens = 0;
  int threads = 0;
  po::options_description options("sepal perplexity: how well a model predicts a text, in this process or across a swarm");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout) or GGUF file")
      ("text", po::value(&text_file), "UTF-8 text file; blank lines separate documents")
      ("data", po::value(&data_file),
       "instead of --text: examples as sepal tune reads them; JSON lines with \"prompt\" and \"completion\"\n"
       "score the completion given the prompt, \"text\" lines score every token")
      ("context", po::value(&context)->default_value(0),
       "tokens per window (0: max_position_embeddings; a LongRoPE model's original context, within which it keeps its short factors)")
      ("max-tokens", po::value(&max_tokens)->default_value(0), "score at most this many tokens (0: all)")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)")
      ("json", "print one JSON object: tokens, nll (mean per token), perplexity, and stats");
  add_weight_options(options, weights);
  add_device_option(options, device_text);
  add_swarm_options(options, swarm_options);
  add_adapter_option(options, adapter_file);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  const bool json_output = vm.count("json") > 0;
  if (max_tokens < 0) throw UsageError{"--max-tokens must be at least 0"};
  if (text_file.empty() == data_file.empty()) throw UsageError{"give --text or --data (one of them)"};
  if (!data_file.empty() && (!vm["context"].defaulted() || !vm["max-tokens"].defaulted())) {
    throw UsageError{"--context and --max-tokens are for --text; --data scores each example whole"};
  }
  if (!adapter_file.empty() && data_file.empty()) throw UsageError{"--adapter is for --data"};
  const WeightLoading loading = weight_loading(weights, vm);
  const Device device = device_option(device_text, loading);
  apply_threads_flag(threads);

  const auto start = std::chrono::steady_clock::now();
  const ModelConfig config = read_model_config(model_dir);
  if (context == 0) {
    context = config.long_rope_for(config.max_position_embeddings)
                  ? static_cast<std::int64_t>(config.rope_scaling.original_max_position_embeddings)
                  : config.max_position_embeddings;
  }
  if (context < 2 || context > config.max_position_embeddings) {
    throw UsageError{"--context must be between 2 and the model's max_position_embeddings (" +
                     std::to_string(config.max_position_embeddings) + ")"};
  }
  const std::optional<PromptParameters> adapter = load_adapter(adapter_file, model_dir, config);
  check_adapter_use(adapter ? &*adapter : nullptr, loading);
  std::stringstream buffer;
  if (!text_file.empty()) {
    std::ifstream in(text_file, std::ios::binary);
    if (!in) fail("cannot read the text file ", text_file);
    buffer << in.rdbuf();
  }
  std::unique_ptr<ClientSwarm> swarm;
  if (wants_swarm(swarm_options, vm)) {
    int host_exit = 0;
    swarm = ClientSwarm::start(&argc, &argv, swarm_options, model_dir, config, weights, vm, threads, host_exit);
    if (!swarm) return host_exit;  // this rank was a block host
  }
  const ClientModel model = load_client_model(model_dir, config, loading, /*with_blocks=*/!swarm, device);
  const ModelEnds& ends = model.ends;
  if (!data_file.empty()) {
    return score_data_file(data_file, model, config, adapter ? &*adapter : nullptr, swarm.get(), json_output,
                           weights.dtype, start);
  }
  const std::vector<std::int32_t> ids = tokenize_documents(buffer.str(), *model.tokenizer, config);
  if (ids.size() < 2) fail("the text ", text_file, " holds fewer than 2 tokens");

  const auto total = static_cast<std::int64_t>(ids.size());
  const std::int64_t windows = (total - 1 + context - 1) / context;  // windows of 2 tokens or more
  std::int64_t scored = 0;
  double nll = 0;
  nlohmann::json swarm_stats;
  const std::int64_t h = config.hidden_size, vocab = config.vocab_size;
  std::vector<float> hidden, logits;
  const bool tty = isatty(STDERR_FILENO);
  std::int64_t window = 0;
  for (std::int64_t begin = 0; begin + 1 < total; begin += context, ++window) {
    const std::int64_t n = std::min(context, total - begin);
    if (n < 2) break;
    std::int64_t score = n - 1;
    if (max_tokens > 0) score = std::min(score, max_tokens - scored);
    if (score <= 0) break;
    hidden.resize(static_cast<std::size_t>(n * h));
    logits.resize(static_cast<std::size_t>(n * vocab));
    ends.embed(ids.data() + begin, n, hidden.data());
    if (model.blocks) {
      LocalPipeline pipeline(*model.blocks, n);
      pipeline.forward(hidden.data(), n);
    } else {
      auto pipeline = swarm->open(n);
      pipeline->forward(hidden.data(), n);
      swarm_stats = swarm->stats(*pipeline);
    }
    ends.logits(hidden.data(), score, logits.data());
    nll += negative_log_likelihood(logits.data(), vocab, ids.data() + begin + 1, score);
    scored += score;
    if (tty) {
      std::fprintf(stderr, "sepal: window %lld of %lld, %lld tokens, perplexity %.4f\r",
                   static_cast<long long>(window + 1), static_cast<long long>(windows),
                   static_cast<long long>(scored), std::exp(nll / static_cast<double>(scored)));
    }
  }
  const double mean = nll / static_cast<double>(scored);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (tty) std::fprintf(stderr, "\n");
  if (json_output) {
    nlohmann::json out{{"tokens", scored},
                       {"nll", mean},
                       {"perplexity", std::exp(mean)},
                       {"stats",
                        {{"dtype", weights.dtype},
                         {"kv_dtype", weights.kv_dtype},
                         {"context", context},
                         {"windows", window},
                         {"text_tokens", total},
                         {"weight_bytes", model.weight_bytes()},
                         {"seconds", seconds},
                         {"cpu_isa", cpu_isa_name(active_cpu_isa())},
                         {"host_ranks", swarm ? swarm->host_count() : 0}}}};
    if (swarm) {
      swarm_stats.erase("route");
      swarm_stats.erase("block_map");
      out["stats"].update(swarm_stats);
    }
    std::cout << out.dump(1) << std::endl;
  } else {
    std::printf("perplexity %.4f (mean nll %.5f) over %lld tokens of %s, %s weights%s\n", std::exp(mean), mean,
                static_cast<long long>(scored), text_file.c_str(), weights.dtype.c_str(),
                swarm ? (", " + std::to_string(swarm->host_count()) + " hosts").c_str() : "");
  }
  if (swarm) swarm->shutdown();
  return 0;
}

}  // namespace sepal::tools

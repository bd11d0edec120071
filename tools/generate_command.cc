// sepal generate: load a model, tokenize a prompt, stream generated text (or print JSON); with
// --prompts-file, many prompts at once, each its own session through the swarm.
#include <sys/resource.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "actors/api/chat_template.h"
#include "actors/api/harmony.h"
#include "actors/draft_decoder.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/generation.h"
#include "model/model_config.h"
#include "model/tokenizer.h"
#include "tools/adapter.h"
#include "tools/client_model.h"
#include "tools/draft_options.h"
#include "tools/swarm_flags.h"
#include "tools/commands.h"
#include "tools/prompt_list.h"
#include "tools/weight_options.h"
#include "tools/thread_flag.h"

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

GenerationRequest make_request(const ModelConfig& config, const Tokenizer& tokenizer, const PromptSpec& spec) {
  GenerationRequest request;
  if (config.bos_token_id >= 0) request.prompt_ids.push_back(config.bos_token_id);
  for (auto id : encode_for_model(tokenizer, spec.text, config.vocab_size)) request.prompt_ids.push_back(id);
  if (request.prompt_ids.empty()) fail("the prompt is empty and the model has no bos_token_id to start from");
  request.max_new_tokens = spec.max_new_tokens;
  request.sampling = SamplingParams{static_cast<float>(spec.temperature), static_cast<std::int32_t>(spec.top_k),
                                    static_cast<float>(spec.top_p)};
  for (const auto& [id, bias] : spec.logit_bias) {
    if (id >= config.vocab_size) fail("--logit-bias names token ", id, ", outside the vocabulary of ", config.vocab_size);
  }
  request.adjustments = LogitAdjustments{spec.logit_bias, static_cast<float>(spec.presence_penalty),
                                         static_cast<float>(spec.frequency_penalty)};
  request.seed = spec.seed;
  return request;
}

// One prompt's generation and what --json prints about it.
struct Outcome {
  GenerationRequest request;
  GenerationResult result;
  std::string text;
  std::optional<std::string> reasoning;  ///< a harmony reply's analysis, when it has one
  std::string error;  ///< non-empty: the generation failed with this reason
  nlohmann::json swarm_stats;
  std::int64_t anticipated_trees = -1;  ///< trees the draft decoder prepared during verification (-1: no decoder)
};

// Makes the draft of one generation, of a session of `capacity` positions (null: no draft).
using DraftMaker = std::function<std::unique_ptr<DraftSource>(std::int64_t capacity)>;

// Where a generation's text goes as it comes: `text` (the prompt's, then the reply's) and, for a
// harmony reply, `reasoning` (its analysis). Either may be empty.
struct TextSinks {
  std::function<void(const std::string&)> text, reasoning;
};

// With a chat template that writes harmony, a reply is read as harmony messages
// (actors/api/harmony.h): its special tokens are written into the text they decode out of, the
// final answer is the reply's text and the analysis its reasoning.
struct HarmonyReading {
  std::vector<std::pair<std::int32_t, const char*>> markers;
};

// Generates `request` through `pipeline`, sending each piece of text to `sinks` (the prompt's
// first, without its BOS).
Outcome run_prompt(const ModelConfig& config, const ClientModel& model, BlockPipeline& pipeline, GenerationRequest request,
                   const TextSinks& sinks, const HarmonyReading* harmony, const DraftMaker& make_draft,
                   std::int64_t tree_size) {
  Outcome o;
  o.request = std::move(request);
  TextStream stream(*model.tokenizer);
  auto piece = [&](const std::string& text) {
    o.text += text;
    if (sinks.text && !text.empty()) sinks.text(text);
  };
  std::optional<api::HarmonyStream> messages;
  if (harmony) messages.emplace(std::set<std::string>{});  // no functions offered: no call is read
  auto reply = [&](const api::HarmonyStream::Piece& read) {
    if (!read.reasoning.empty()) {
      o.reasoning = o.reasoning.value_or("") + read.reasoning;
      if (sinks.reasoning) sinks.reasoning(read.reasoning);
    }
    piece(read.content);
  };
  auto generated = [&](const std::string& text) {
    if (messages) reply(messages->push(text));
    else piece(text);
  };
  const std::size_t skip = config.bos_token_id >= 0 ? 1 : 0;
  for (std::size_t i = skip; i < o.request.prompt_ids.size(); ++i) piece(stream.push(o.request.prompt_ids[i]));
  if (harmony) piece(stream.finish());  // the reply's text, read as harmony, starts at its own first token
  std::unique_ptr<DraftSource> draft;
  Speculation speculation;
  if (make_draft) {
    draft = make_draft(session_capacity(config, o.request));
    speculation = Speculation{draft.get(), tree_size, {}};
  }
  o.result = generate(model.ends, pipeline, o.request, [&](std::int32_t id) {
    if (harmony) {
      const auto marker = std::find_if(harmony->markers.begin(), harmony->markers.end(),
                                       [id](const auto& m) { return m.first == id; });
      if (marker != harmony->markers.end()) {
        generated(stream.finish() + marker->second);
        return;
      }
    }
    if (id < model.tokenizer->vocab_size()) generated(stream.push(id));
  }, draft ? &speculation : nullptr);
  generated(stream.finish());
  if (messages) {
    reply(messages->finish());
    if (messages->thought() && !o.reasoning) o.reasoning = "";
  }
  if (auto* remote = dynamic_cast<DraftDecoderSession*>(draft.get())) o.anticipated_trees = remote->anticipated();
  return o;
}

double decode_tokens_per_s(const GenerationResult& r) {
  const auto generated = static_cast<double>(r.generated_ids.size());
  return r.decode_seconds > 0 && generated > 1 ? (generated - 1) / r.decode_seconds : 0.0;
}

nlohmann::json outcome_json(const Outcome& o) {
  nlohmann::json out;
  out["prompt_ids"] = o.request.prompt_ids;
  if (!o.error.empty()) {
    out["error"] = o.error;
    return out;
  }
  out["generated_ids"] = o.result.generated_ids;
  out["text"] = o.text;
  if (o.reasoning) out["reasoning"] = *o.reasoning;
  out["stop_reason"] = stop_reason_name(o.result.stop);
  const auto prompt_tokens = static_cast<double>(o.request.prompt_ids.size());
  out["stats"] = {{"prompt_tokens", o.request.prompt_ids.size()},
                  {"generated_tokens", o.result.generated_ids.size()},
                  {"prompt_tokens_per_s", o.result.prompt_seconds > 0 ? prompt_tokens / o.result.prompt_seconds : 0.0},
                  {"decode_tokens_per_s", decode_tokens_per_s(o.result)},
                  {"time_to_first_token_s", o.result.prompt_seconds}};
  if (!o.result.tokens_per_step.empty()) {
    std::int64_t steps = 0, tokens = 0;
    for (std::size_t k = 0; k < o.result.tokens_per_step.size(); ++k) {
      steps += o.result.tokens_per_step[k];
      tokens += static_cast<std::int64_t>(k) * o.result.tokens_per_step[k];
    }
    out["stats"]["speculation"] = {{"tree_steps", steps},
                                   {"mean_accepted_tokens", steps > 0 ? static_cast<double>(tokens) / steps : 0.0},
                                   {"tokens_per_step", o.result.tokens_per_step},
                                   {"draft_seconds", o.result.draft_seconds}};
    if (o.anticipated_trees >= 0) out["stats"]["speculation"]["anticipated_trees"] = o.anticipated_trees;
  }
  if (o.swarm_stats.is_object()) {
    nlohmann::json stats = o.swarm_stats;
    if (stats.contains("block_map")) {
      out["block_map"] = stats["block_map"];
      stats.erase("block_map");
    }
    out["stats"].update(stats);
  }
  return out;
}

}  // namespace

int generate_command(int argc, char** argv) {
  WeightOptions weights;
  SwarmOptions swarm_options;
  DraftOptions draft_options;
  std::string model_dir, prompts_file, adapter_file, system_message;
  PromptSpec defaults;
  std::string device_text;
  std::vector<std::string> logit_bias_texts;
  int threads = 0, concurrency = 0;
  po::options_description options("sepal generate: generate text with a model, in this process or across a swarm");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout) or GGUF file")
      ("prompt", po::value(&defaults.text)->default_value(""), "prompt text (empty: start from BOS)")
      ("prompts-file", po::value(&prompts_file),
       "generate for every prompt of FILE at once (one line of text or one JSON object per prompt,\n"
       "e.g. {\"prompt\": \"Once\", \"max_new_tokens\": 32, \"temperature\": 0.8, \"seed\": 1});\n"
       "prints the texts in order, or one JSON line per prompt with --json")
      ("concurrency", po::value(&concurrency)->default_value(0),
       "with --prompts-file: sessions run at once through the swarm (0: every prompt)")
      ("max-new-tokens", po::value(&defaults.max_new_tokens)->default_value(128), "tokens to generate at most")
      ("temperature", po::value(&defaults.temperature)->default_value(0.0), "sampling temperature; 0 is greedy")
      ("top-k", po::value(&defaults.top_k)->default_value(0), "sample among the k likeliest tokens (0: all)")
      ("top-p", po::value(&defaults.top_p)->default_value(1.0), "nucleus sampling mass, in (0, 1]")
      ("seed", po::value(&defaults.seed)->default_value(0), "random seed for sampling")
      ("presence-penalty", po::value(&defaults.presence_penalty)->default_value(0.0),
       "subtracted once from the logit of every token generated so far, in [-2, 2] (OpenAI's)")
      ("frequency-penalty", po::value(&defaults.frequency_penalty)->default_value(0.0),
       "subtracted from a token's logit once per time it was generated, in [-2, 2] (OpenAI's)")
      ("logit-bias", po::value(&logit_bias_texts)->composing(), "ID=BIAS: added to that token's logit, in [-100, 100]\n(repeatable)")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)")
      ("chat", "each prompt is a user's message, written in the model's chat template (as serve-api's\n"
               "chat completions write it; the plain User:/Assistant: form without one)")
      ("system", po::value(&system_message), "with --chat: a system message before each prompt")
      ("json", "print JSON with ids, text and stats instead of streaming text");
  add_weight_options(options, weights);
  add_device_option(options, device_text);
  add_swarm_options(options, swarm_options);
  add_adapter_option(options, adapter_file);
  add_draft_options(options, draft_options);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  const bool json_output = vm.count("json") > 0;
  for (const std::string& text : logit_bias_texts) defaults.logit_bias.push_back(parse_logit_bias(text));
  check_prompt_spec(defaults, "");
  if (concurrency < 0) throw UsageError{"--concurrency must be at least 0"};
  if (!vm["concurrency"].defaulted() && prompts_file.empty()) throw UsageError{"--concurrency is for --prompts-file"};
  if (!prompts_file.empty() && !vm["prompt"].defaulted()) throw UsageError{"give --prompt or --prompts-file, not both"};
  if (vm.count("system") && !vm.count("chat")) throw UsageError{"--system is for --chat"};
  std::vector<PromptSpec> prompts =
      prompts_file.empty() ? std::vector<PromptSpec>{defaults} : read_prompts_file(prompts_file, defaults);
  bool harmony_chat = false;
  if (vm.count("chat")) {
    const api::ChatTemplate chat_template = api::chat_template_of_model(model_dir);
    harmony_chat = chat_template.harmony;
    const bool adds_bos = read_model_config(model_dir).bos_token_id >= 0;
    for (PromptSpec& spec : prompts) {
      std::vector<api::ChatMessage> messages;
      if (vm.count("system")) messages.push_back({"system", system_message});
      messages.push_back({"user", spec.text});
      auto rendered = api::render_chat(chat_template, messages, adds_bos);
      if (auto* error = std::get_if<api::jinja::TemplateError>(&rendered))
        fail("the model's chat template refused the chat: ", error->message);
      spec.text = std::move(std::get<std::string>(rendered));
    }
    std::fprintf(stderr, "sepal: chat template: %s\n", api::describe_chat_template(chat_template).c_str());
  }
  const WeightLoading loading = weight_loading(weights, vm);
  const Device device = device_option(device_text, loading);
  apply_threads_flag(threads);

  // Everything that can be checked cheaply is checked before anything is started or loaded.
  const auto load_start = std::chrono::steady_clock::now();
  const ModelConfig config = read_model_config(model_dir);
  const std::optional<PromptParameters> adapter = load_adapter(adapter_file, model_dir, config);
  check_draft_options(draft_options, vm, config);  // before a swarm starts
  std::unique_ptr<ClientSwarm> swarm;
  const bool over_swarm = wants_swarm(swarm_options, vm);
  check_adapter_use(adapter ? &*adapter : nullptr, loading);
  const std::optional<BlockAdapters> block_adapters = adapter ? adapter->block_adapters() : std::nullopt;
  if (draft_options.pipelining && !over_swarm) {
    throw UsageError{"--draft-pipelining is for a swarm (in one process the draft and the blocks share the cores)"};
  }
  if (over_swarm) {
    int host_exit = 0;
    swarm = ClientSwarm::start(&argc, &argv, swarm_options, model_dir, config, weights, vm, threads, host_exit);
    if (!swarm) return host_exit;  // this rank was a block host
  }
  const ClientModel model = load_client_model(model_dir, config, loading, /*with_blocks=*/!swarm, device);
  const std::unique_ptr<Drafts> drafts =
      Drafts::load(draft_options, vm, model_dir, config, *model.tokenizer, model.ends, model.blocks.get(), loading);
  std::vector<GenerationRequest> requests;
  for (const PromptSpec& spec : prompts) {
    requests.push_back(make_request(config, *model.tokenizer, spec));
    if (adapter) {
      requests.back().soft_prompt = adapter->soft;
      requests.back().soft_prompt_at = std::min<std::int64_t>(adapter->offset, requests.back().prompt_ids.size());
    }
  }
  for (const auto& request : requests) (void)session_capacity(config, request);  // every prompt fits
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::fprintf(stderr, "sepal: loaded %s: %lld blocks, %.1f MB of %s weights here, %s kernels, %d threads, %.2f s\n",
               model_dir.c_str(), static_cast<long long>(config.num_layers), model.weight_bytes() / 1e6,
               weights.dtype.c_str(), std::string(cpu_isa_name(active_cpu_isa())).c_str(), compute_threads(),
               load_seconds);
  if (drafts) {
    std::fprintf(stderr, "sepal: speculative decoding: %s, trees of up to %lld tokens, %.1f MB of draft weights\n",
                 drafts->description().c_str(), static_cast<long long>(drafts->tree_size()), drafts->weight_bytes() / 1e6);
  }

  // Drafts: in this process, or, with a swarm, by the draft decoder actor, which prepares the next
  // tree while the hosts verify one.
  DraftMaker local_draft, swarm_draft;
  if (drafts) {
    local_draft = [&](std::int64_t capacity) { return drafts->make(capacity); };
    if (swarm) {
      const auto decoder = add_draft_decoder(swarm->system(), local_draft, draft_options.pipelining);
      swarm_draft = [&swarm, decoder](std::int64_t capacity) -> std::unique_ptr<DraftSource> {
        return std::make_unique<DraftDecoderSession>(swarm->system(), decoder, capacity);
      };
    }
  }
  const std::int64_t tree_size = drafts ? drafts->tree_size() : 0;

  // One prompt streams its text as it comes; several are generated at once and printed in order.
  // A harmony reply's reasoning streams to stderr, after "sepal: reasoning: ", and ends its line
  // when the answer begins.
  const bool streaming = prompts_file.empty() && !json_output;
  TextSinks sinks;
  bool reasoning_open = false;
  if (streaming) {
    sinks.text = [&reasoning_open](const std::string& piece) {
      if (reasoning_open) {
        std::fputs("\n", stderr);
        reasoning_open = false;
      }
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
    sinks.reasoning = [&reasoning_open](const std::string& piece) {
      if (!reasoning_open) {
        std::fflush(stdout);
        std::fputs("\nsepal: reasoning: ", stderr);
        reasoning_open = true;
      }
      std::fwrite(piece.data(), 1, piece.size(), stderr);
    };
  }
  std::optional<HarmonyReading> harmony;
  if (harmony_chat) {
    harmony = HarmonyReading{api::harmony_markers(*model.tokenizer, config.eos_token_ids)};
    std::fprintf(stderr, "sepal: replies read as harmony messages: the final answer is the text, the analysis its reasoning%s\n",
                 streaming ? " (on stderr)" : json_output ? " (\"reasoning\")" : " (not printed)");
  }
  std::vector<Outcome> outcomes(requests.size());
  auto run = [&](std::size_t i) {
    try {
      const std::int64_t capacity = session_capacity(config, requests[i]);
      if (!swarm) {
        const std::optional<DeepPrompts> deep = adapter ? adapter->deep_prompts() : std::nullopt;
        LocalPipeline pipeline(*model.blocks, capacity, deep ? &*deep : nullptr, block_adapters ? &*block_adapters : nullptr);
        outcomes[i] = run_prompt(config, model, pipeline, requests[i], sinks, harmony ? &*harmony : nullptr, local_draft,
                                 tree_size);
        return;
      }
      auto session = swarm->open(capacity, adapter ? &*adapter : nullptr);
      if (i == 0 && streaming) std::fprintf(stderr, "sepal: route (%s): %s\n", swarm_options.mode.c_str(),
                                            ClientSwarm::route_text(*session).c_str());
      outcomes[i] = run_prompt(config, model, *session, requests[i], sinks, harmony ? &*harmony : nullptr, swarm_draft,
                               tree_size);
      if (json_output) outcomes[i].swarm_stats = swarm->stats(*session);
    } catch (const std::exception& e) {
      if (prompts.size() == 1) throw;
      outcomes[i].request = requests[i];
      outcomes[i].error = e.what();
    }
  };
  const auto started = std::chrono::steady_clock::now();
  // Local blocks use every core for one prompt at a time; a swarm's sessions overlap their round
  // trips, so they run together.
  const std::size_t at_once = !swarm ? 1 : concurrency > 0 ? static_cast<std::size_t>(concurrency) : requests.size();
  for (std::size_t first = 0; first < requests.size(); first += at_once) {
    std::vector<std::thread> workers;
    const std::size_t end = std::min(requests.size(), first + at_once);
    for (std::size_t i = first + 1; i < end; ++i) workers.emplace_back(run, i);
    run(first);
    for (auto& w : workers) w.join();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  int failed = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    if (!o.error.empty()) {
      ++failed;
      std::fprintf(stderr, "sepal: prompt %zu failed: %s\n", i + 1, o.error.c_str());
    }
    if (o.result.stop == StopReason::kMaxPositions) {
      std::fprintf(stderr, "sepal: prompt %zu stopped at max_position_embeddings (%lld)\n", i + 1,
                   static_cast<long long>(config.max_position_embeddings));
    }
    if (json_output) {
      nlohmann::json out = outcome_json(o);
      if (o.error.empty()) {
        out["stats"].update({{"load_seconds", load_seconds},
                             {"weight_bytes", model.weight_bytes()},
                             {"peak_rss_bytes", peak_rss_bytes()},
                             {"dtype", weights.dtype},
                             {"kv_dtype", weights.kv_dtype},
                             {"cpu_isa", cpu_isa_name(active_cpu_isa())},
                             {"threads", compute_threads()},
                             {"host_ranks", swarm ? swarm->host_count() : 0}});
      }
      if (!prompts_file.empty()) out["index"] = i;
      // One prompt: the object spread over lines as before; a prompts file: one line each.
      std::cout << out.dump(prompts_file.empty() ? 1 : -1, ' ', false, nlohmann::json::error_handler_t::replace)
                << std::endl;
    } else if (!streaming && o.error.empty()) {
      std::fwrite(o.text.data(), 1, o.text.size(), stdout);
      std::printf("\n");
    }
  }
  if (streaming) {
    if (reasoning_open) std::fputs("\n", stderr);
    std::printf("\n");
    std::fflush(stdout);  // the text's last line before the statistics, on a shared terminal
    const Outcome& o = outcomes.front();
    if (o.result.generated_ids.empty()) {  // --max-new-tokens 0: the prompt is not run either
      std::fprintf(stderr, "sepal: %zu prompt tokens, none generated\n", o.request.prompt_ids.size());
    } else {
      std::fprintf(stderr, "sepal: %zu prompt tokens at %.1f tokens/s, %zu generated at %.1f tokens/s\n",
                   o.request.prompt_ids.size(),
                   static_cast<double>(o.request.prompt_ids.size()) / o.result.prompt_seconds,
                   o.result.generated_ids.size(), decode_tokens_per_s(o.result));
    }
  } else if (!prompts_file.empty()) {
    std::size_t generated = 0;
    for (const Outcome& o : outcomes) generated += o.result.generated_ids.size();
    std::fprintf(stderr, "sepal: %zu prompts, %zu at a time, in %.3f s: %zu tokens generated (%.1f tokens/s)\n",
                 outcomes.size(), at_once, seconds, generated, seconds > 0 ? static_cast<double>(generated) / seconds : 0.0);
    const auto [head_batches, head_rows] = model.ends.head_batches();
    if (at_once > 1 && head_batches > 0) {
      std::fprintf(stderr, "sepal: LM head: %lld batches of %.2f rows on average\n", static_cast<long long>(head_batches),
                   static_cast<double>(head_rows) / static_cast<double>(head_batches));
    }
  }
  std::fflush(stdout);
  if (swarm) swarm->shutdown();
  return failed == 0 ? 0 : 1;
}

}  // namespace sepal::tools

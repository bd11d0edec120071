// sepal tune: prompt tuning (ptune, deep-ptune) with HDF5 checkpoints that resume a run exactly
// (model/prompt_trainer.h, model/tuning_checkpoint.h), in this process or through a swarm.
// Preemptible: SIGTERM or SIGUSR1 (a batch system's warning before a time limit or preemption)
// ends the run after the step under way with a checkpoint and exit status 75 (EX_TEMPFAIL: "run
// me again"); slurm/tune.sbatch requeues the job on it and resumes.
#include <unistd.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "actors/swarm_training.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/model_config.h"
#include "model/peft_adapter.h"
#include "model/prompt_trainer.h"
#include "model/tuning_checkpoint.h"
#include "tools/client_model.h"
#include "tools/commands.h"
#include "tools/exit_status.h"
#include "tools/swarm_flags.h"
#include "tools/weight_options.h"
#include "tools/thread_flag.h"

namespace sepal::tools {
namespace {

namespace po = boost::program_options;

volatile std::sig_atomic_t stop_signal = 0;
extern "C" void request_stop(int signal) { stop_signal = signal; }

// With --resume, a setting given on the command line must be the checkpoint's.
template <typename T>
void must_match(const po::variables_map& vm, const char* flag, const T& given, const T& saved) {
  if (vm.count(flag) && !vm[flag].defaulted() && !(given == saved)) {
    std::ostringstream text;
    text << "--" << flag << " " << given << " differs from the resumed checkpoint's " << saved
         << " (a resumed run keeps its settings)";
    throw UsageError{text.str()};
  }
}

std::string duration_text(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, seconds));
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof text, "%lldh%02lldm", s / 3600, s / 60 % 60);
  } else {
    std::snprintf(text, sizeof text, "%lldm%02llds", s / 60, s % 60);
  }
  return text;
}

// "4 prompt tokens", "rank 8 on q_proj,v_proj", "the scales of 7 projections a block".
std::string trained_what(const TuningSettings& s) {
  if (s.method == TuningMethod::kPeqa) return "the scales of every projection";
  if (s.method != TuningMethod::kLora) return std::to_string(s.prompt_tokens) + " prompt tokens";
  std::string targets;
  for (const Projection t : s.adapter.targets) {
    if (!targets.empty()) targets += ',';  // appended: GCC 12 warns falsely about "..." + string
    targets += projection_name(t);
  }
  return "rank " + std::to_string(s.adapter.rank) + " on " + targets;
}

}  // namespace

int tune_command(int argc, char** argv) {
  WeightOptions weights;
  SwarmOptions swarm_options;
  std::string model_dir, data_file, method_name, out_file, resume_file, eval_file, log_file;
  TuningSettings s;
  std::string lora_targets = "q_proj,v_proj", export_peft, device_text;
  std::int64_t lora_rank = 8;
  double lora_alpha = 16;
  std::int64_t checkpoint_every = 0, stop_after = 0, max_length = 0, eval_every = 0;
  int threads = 0;
  po::options_description options(
      "sepal tune: train a soft prompt (ptune), deep prompts (deep-ptune), int8 scales (peqa) or LoRA\n"
      "factors (lora) for a frozen model");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout) or GGUF file")
      ("data", po::value(&data_file)->required(),
       "training data: JSON lines with \"text\", or \"prompt\" and \"completion\"; or plain text, blank lines between documents")
      ("method", po::value(&method_name), "ptune, deep-ptune, peqa (needs --dtype int8) or lora")
      ("prompt-tokens", po::value(&s.prompt_tokens), "ptune, deep-ptune: trainable prompt vectors N")
      ("lora-rank", po::value(&lora_rank)->default_value(lora_rank), "lora: rank r of each update")
      ("lora-alpha", po::value(&lora_alpha)->default_value(lora_alpha), "lora: the update is scaled by alpha / r")
      ("lora-targets", po::value(&lora_targets)->default_value(lora_targets),
       "lora: projections to adapt, comma-separated (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, "
       "or the architecture's module names: BLOOM's query_key_value, dense, dense_h_to_4h, dense_4h_to_h; Mixtral's "
       "experts' w1, w3, w2); in a mixture of experts gate, up and down are each expert's")
      ("export-peft", po::value(&export_peft),
       "lora: also write the adapter in Hugging Face PEFT's layout into this folder, with every checkpoint")
      ("steps", po::value(&s.steps), "optimizer steps of the whole run (a resumed run ends at the same step)")
      ("batch-size", po::value(&s.batch_size), "examples per step")
      ("micro-batch", po::value(&s.micro_batch), "examples per pass through the blocks (default: the batch size)")
      ("lr", po::value(&s.lr), "peak learning rate")
      ("warmup", po::value(&s.warmup)->default_value(0), "steps of linear warmup before the cosine decay")
      ("seed", po::value(&s.seed)->default_value(0), "seed of the prompt's initialisation and the data order")
      ("weight-decay", po::value(&s.adamw.weight_decay)->default_value(0.0), "AdamW's decoupled weight decay")
      ("max-grad-norm", po::value(&s.max_grad_norm)->default_value(1.0), "clip the gradient's L2 norm to this (0: never)")
      ("max-length", po::value(&max_length)->default_value(0),
       "tokens kept per example (0: max_position_embeddings minus the prompt)")
      ("out", po::value(&out_file)->required(), "checkpoint to write (HDF5)")
      ("checkpoint-every", po::value(&checkpoint_every)->default_value(0), "also write the checkpoint every C steps")
      ("resume", po::value(&resume_file), "continue the run saved in this checkpoint")
      ("stop-after", po::value(&stop_after)->default_value(0),
       "end after step K with a checkpoint, as a preemption would (the schedule still spans --steps)")
      ("eval", po::value(&eval_file), "held-out data scored before training, every --eval-every steps and at the end")
      ("eval-every", po::value(&eval_every)->default_value(0), "steps between evaluations (0: only before and at the end)")
      ("log", po::value(&log_file), "append one JSON object per step (and per evaluation) to this file")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0: all cores)");
  add_weight_options(options, weights, /*kv_caches=*/false);
  add_device_option(options, device_text);
  add_swarm_options(options, swarm_options);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  if (checkpoint_every < 0) throw UsageError{"--checkpoint-every must be at least 0"};
  if (stop_after < 0) throw UsageError{"--stop-after must be at least 0"};
  if (eval_every < 0) throw UsageError{"--eval-every must be at least 0"};
  if (max_length < 0) throw UsageError{"--max-length must be at least 0"};
  if (eval_every > 0 && eval_file.empty()) throw UsageError{"--eval-every needs --eval"};
  const WeightLoading loading = weight_loading(weights, vm);
  const Device device = device_option(device_text, loading);
  apply_threads_flag(threads);

  const ModelConfig config = read_model_config(model_dir);
  std::optional<TuningCheckpoint> resumed;
  if (!resume_file.empty()) {
    resumed = load_tuning_checkpoint(resume_file);
    const TuningSettings& saved = resumed->settings;
    must_match(vm, "method", method_name, std::string(tuning_method_name(saved.method)));
    if (saved.method == TuningMethod::kLora) {
      must_match(vm, "lora-rank", lora_rank, saved.adapter.rank);
      must_match(vm, "lora-alpha", lora_alpha, saved.adapter.alpha);
    }
    must_match(vm, "prompt-tokens", s.prompt_tokens, saved.prompt_tokens);
    must_match(vm, "steps", s.steps, saved.steps);
    must_match(vm, "batch-size", s.batch_size, saved.batch_size);
    must_match(vm, "micro-batch", s.micro_batch, saved.micro_batch);
    must_match(vm, "lr", s.lr, saved.lr);
    must_match(vm, "warmup", s.warmup, saved.warmup);
    must_match(vm, "seed", s.seed, saved.seed);
    must_match(vm, "weight-decay", s.adamw.weight_decay, saved.adamw.weight_decay);
    must_match(vm, "max-grad-norm", s.max_grad_norm, saved.max_grad_norm);
    s = saved;
  } else {
    for (const char* flag : {"method", "steps", "batch-size", "lr"}) {
      if (!vm.count(flag)) throw UsageError{std::string("--") + flag + " is required (unless --resume)"};
    }
    const auto method = parse_tuning_method(method_name);
    if (!method) throw UsageError{"--method must be ptune, deep-ptune, peqa or lora, not " + method_name};
    s.method = *method;
    if (!trains_adapters(s.method) && !vm.count("prompt-tokens")) {
      throw UsageError{"--prompt-tokens is required for " + method_name + " (unless --resume)"};
    }
    if (s.method != TuningMethod::kLora) {
      for (const char* flag : {"lora-rank", "lora-alpha", "lora-targets"}) {
        if (!vm[flag].defaulted()) throw UsageError{std::string("--") + flag + " is for --method lora"};
      }
    }
    if (s.method == TuningMethod::kLora) {
      s.adapter = AdapterShape{AdapterMethod::kLora, lora_rank, lora_alpha, {}};
      std::size_t at = 0;
      while (at <= lora_targets.size()) {
        const std::size_t comma = std::min(lora_targets.find(',', at), lora_targets.size());
        const std::string name = lora_targets.substr(at, comma - at);
        const auto named = projections_named(config, name);
        if (named.empty()) {
          const bool expert = config.mixture_of_experts() && !experts_take_adapters(config) &&
                              (name == "gate_proj" || name == "up_proj" || name == "down_proj" || name == "w1" ||
                               name == "w2" || name == "w3");
          throw UsageError{"--lora-targets: " + config.architecture + " blocks have no projection '" + name + "'" +
                           (expert ? " to adapt: the experts of this mixture take no adapters (they have biases or are "
                                     "stacked; q, k, v and o do)"
                                   : "")};
        }
        s.adapter.targets.insert(s.adapter.targets.end(), named.begin(), named.end());
        at = comma + 1;
      }
      std::sort(s.adapter.targets.begin(), s.adapter.targets.end());
      if (std::adjacent_find(s.adapter.targets.begin(), s.adapter.targets.end()) != s.adapter.targets.end()) {
        throw UsageError{"--lora-targets names a projection twice"};
      }
    } else if (s.method == TuningMethod::kPeqa) {
      s.adapter = AdapterShape{AdapterMethod::kPeqa, 0, 0.0,
                               {Projection::kQ, Projection::kK, Projection::kV, Projection::kO, Projection::kGate,
                                Projection::kUp, Projection::kDown}};
    }
    if (!vm.count("micro-batch")) s.micro_batch = s.batch_size;
  }
  try {
    validate(s);
  } catch (const Error& e) {
    throw UsageError{e.what()};
  }
  if (!export_peft.empty() && s.method != TuningMethod::kLora) throw UsageError{"--export-peft is for --method lora"};

  if (s.method == TuningMethod::kPeqa) {  // every quantized matrix the model's blocks have
    std::erase_if(s.adapter.targets, [&](Projection p) { return !block_has_projection(config, p); });
  }
  if (trains_adapters(s.method)) {
    if (s.method == TuningMethod::kPeqa && loading.dtype != DType::kI8) {
      throw UsageError{"--method peqa tunes the scales of int8 weights: add --dtype int8"};
    }
    validate(s.adapter, config);
  }
  std::unique_ptr<ClientSwarm> swarm;
  if (wants_swarm(swarm_options, vm)) {
    int host_exit = 0;
    swarm = ClientSwarm::start(&argc, &argv, swarm_options, model_dir, config, weights, vm, threads, host_exit);
    if (!swarm) return host_exit;  // this rank was a block host
  }
  // The hosts end with the run, however it ends.
  const std::unique_ptr<ClientSwarm, void (*)(ClientSwarm*)> stop_hosts(swarm.get(), [](ClientSwarm* s) {
    if (s) s->shutdown();
  });
  const ClientModel model = load_client_model(model_dir, config, loading, /*with_blocks=*/!swarm, device);
  const std::string fingerprint = model_fingerprint(config, Checkpoint::open(model_dir));
  if (resumed && resumed->model_fingerprint != fingerprint) {
    fail(resume_file, ": the checkpoint is for another model (fingerprint ", resumed->model_fingerprint, ", ",
         model_dir, " has ", fingerprint, ")");
  }
  const std::int64_t room = config.max_position_embeddings - s.prompt_tokens;
  if (room < 2) fail("a prompt of ", s.prompt_tokens, " tokens leaves no room in ", config.max_position_embeddings, " positions");
  if (max_length == 0 || max_length > room) max_length = room;
  std::vector<Example> examples = read_examples(data_file, *model.tokenizer, config, max_length);
  const std::string data_fingerprint = examples_hash(examples);
  if (resumed && resumed->data_fingerprint != data_fingerprint) {
    fail(resume_file, ": the checkpoint was trained on other data than ", data_file);
  }
  std::vector<Example> held_out;
  if (!eval_file.empty()) held_out = read_examples(eval_file, *model.tokenizer, config, max_length);

  std::unique_ptr<TrainingBlocks> blocks_owner;
  if (swarm) {
    blocks_owner = swarm->training_blocks(config);
  } else {
    blocks_owner = std::make_unique<LocalTrainingBlocks>(*model.blocks);
  }
  TrainingBlocks& blocks = *blocks_owner;
  PromptTrainer trainer = resumed ? PromptTrainer(s, model.ends, blocks, std::move(examples), resumed->state)
                                  : PromptTrainer(s, model.ends, blocks, std::move(examples));
  std::ofstream log;
  if (!log_file.empty()) {
    log.open(log_file, std::ios::app);
    if (!log) fail("cannot open the log ", log_file);
  }
  const bool tty = isatty(STDERR_FILENO);
  const auto save = [&] {
    save_tuning_checkpoint(out_file, {s, trainer.state(), fingerprint, data_fingerprint, sepal_version()});
    if (!export_peft.empty()) write_peft_adapter(export_peft, config, trainer.state().params, model_dir);
  };
  const auto evaluate = [&] {
    const auto [loss, tokens] = trainer.evaluate(held_out);
    std::fprintf(stderr, "%ssepal tune: step %lld: eval loss %.4f over %lld tokens\n", tty ? "\r\033[K" : "",
                 static_cast<long long>(trainer.state().step), loss, static_cast<long long>(tokens));
    if (log) {
      log << nlohmann::json{{"step", trainer.state().step}, {"eval_loss", loss}, {"eval_tokens", tokens}}.dump()
          << std::endl;
    }
  };
  std::fprintf(stderr, "sepal tune: %s with %s, %s, %s, step %lld of %lld\n",
               std::string(tuning_method_name(s.method)).c_str(), trained_what(s).c_str(),
               model_dir.c_str(), swarm ? (std::to_string(swarm->host_count()) + " hosts").c_str() : "in this process",
               static_cast<long long>(trainer.state().step), static_cast<long long>(s.steps));
  if (!held_out.empty() && !resumed) evaluate();
  std::signal(SIGTERM, request_stop);
  std::signal(SIGUSR1, request_stop);
  const auto start = std::chrono::steady_clock::now();
  std::int64_t tokens_done = 0, steps_done = 0;
  StepReport last;
  while (!trainer.done()) {
    last = trainer.step();
    tokens_done += last.tokens;
    ++steps_done;
    if (log) {
      log << nlohmann::json{{"step", last.step},   {"loss", last.loss},           {"lr", last.lr},
                            {"tokens", last.tokens}, {"grad_norm", last.grad_norm}, {"seconds", last.seconds}}
                 .dump()
          << std::endl;
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = static_cast<double>(tokens_done) / std::max(elapsed, 1e-9);
    const double eta = elapsed / static_cast<double>(steps_done) * static_cast<double>(s.steps - last.step);
    if (tty) {
      const int width = 24, filled = static_cast<int>(width * last.step / s.steps);
      std::fprintf(stderr, "\r\033[K[%s%s] step %lld/%lld  loss %.4f  %.0f tokens/s  ETA %s",
                   std::string(static_cast<std::size_t>(filled), '#').c_str(),
                   std::string(static_cast<std::size_t>(width - filled), '.').c_str(),
                   static_cast<long long>(last.step), static_cast<long long>(s.steps), last.loss, rate,
                   duration_text(eta).c_str());
    } else if (last.step % 10 == 0 || last.step == s.steps) {
      std::fprintf(stderr, "sepal tune: step %lld/%lld loss %.4f, %.0f tokens/s, ETA %s\n",
                   static_cast<long long>(last.step), static_cast<long long>(s.steps), last.loss, rate,
                   duration_text(eta).c_str());
    }
    if (!held_out.empty() && eval_every > 0 && last.step % eval_every == 0 && last.step != s.steps) evaluate();
    if (checkpoint_every > 0 && last.step % checkpoint_every == 0) save();
    if (stop_signal != 0 && !trainer.done()) {
      save();
      std::fprintf(stderr, "%ssepal tune: %s after step %lld: wrote %s; exit %d asks to be run again (--resume %s)\n",
                   tty ? "\n" : "", stop_signal == SIGTERM ? "SIGTERM" : "SIGUSR1", static_cast<long long>(last.step),
                   out_file.c_str(), kExitTryAgain, out_file.c_str());
      return kExitTryAgain;
    }
    if (stop_after > 0 && last.step >= stop_after && !trainer.done()) {
      save();
      std::fprintf(stderr, "%ssepal tune: stopped after step %lld; continue with --resume %s\n", tty ? "\n" : "",
                   static_cast<long long>(last.step), out_file.c_str());
      return 0;
    }
  }
  if (tty && steps_done > 0) std::fprintf(stderr, "\n");
  save();
  if (!held_out.empty()) evaluate();
  if (steps_done == 0) {  // resumed from a checkpoint of a finished run
    std::printf("the run had taken all its %lld steps already; wrote %s\n", static_cast<long long>(s.steps),
                out_file.c_str());
    return 0;
  }
  if (const auto* through = dynamic_cast<const SwarmTrainingBlocks*>(&blocks)) {
    std::fprintf(stderr, "sepal tune: %lld host requests (%lld failovers), %.2f MB of tensors to and from the hosts, %.3f MB a step\n",
                 static_cast<long long>(through->hops()), static_cast<long long>(through->failovers()),
                 static_cast<double>(through->tensor_bytes()) / 1e6,
                 static_cast<double>(through->tensor_bytes()) / 1e6 / static_cast<double>(steps_done));
  }
  std::printf("trained %s with %s for %lld steps; last loss %.4f; wrote %s\n",
              std::string(tuning_method_name(s.method)).c_str(), trained_what(s).c_str(),
              static_cast<long long>(s.steps), last.loss, out_file.c_str());
  return 0;
}

}  // namespace sepal::tools

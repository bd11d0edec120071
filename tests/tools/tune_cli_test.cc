// `sepal tune` end to end, as users run it: a preempted run resumed gives the losses of one that
// never stopped, checkpoints are what docs/checkpoints.md says (h5dump, h5py), the tuned prompt is
// used by generate and perplexity, and bad input gets one line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/test_util.h"

namespace sepal {
namespace {

using nlohmann::json;
using test::run_sepal;

const std::string kModel = (test::models_dir() / "tinystories-656K").string();
const std::string kTrain = (test::models_dir().parent_path() / "data" / "tune-tom" / "train.jsonl").string();
const std::string kEvalNone = (test::models_dir().parent_path() / "data" / "tune-tom" / "eval-none.jsonl").string();

std::vector<std::string> tune_args(const std::string& method, const std::string& out, const std::string& log) {
  const bool prompt = method == "ptune" || method == "deep-ptune";
  std::vector<std::string> args = {"tune",    "--model", kModel, "--data",       kTrain, "--method", method, "--steps",
                                   "8",       "--batch-size", "4", "--micro-batch", "2", "--lr", prompt ? "0.05" : "0.01",
                                   "--warmup", "2",      "--seed", "3",          "--max-length", "64", "--out", out,
                                   "--log",   log};
  if (prompt) args.insert(args.end(), {"--prompt-tokens", "4"});
  if (method == "peqa") args.insert(args.end(), {"--dtype", "int8"});
  if (method == "lora") args.insert(args.end(), {"--lora-rank", "4", "--lora-targets", "q_proj,v_proj,down_proj"});
  return args;
}

// The "loss" of every step row of a JSON-lines log, in order.
std::vector<double> step_losses(const std::filesystem::path& log) {
  std::vector<double> losses;
  std::istringstream lines(test::read_file(log));
  std::string line;
  while (std::getline(lines, line)) {
    const json row = json::parse(line);
    if (row.contains("loss")) losses.push_back(row["loss"].get<double>());
  }
  return losses;
}

int shell(const std::string& command) { return std::system(command.c_str()); }

TEST(TuneCli, StoppedAndResumedRunsGiveTheSameLosses) {
  for (const std::string method : {"ptune", "deep-ptune", "peqa", "lora"}) {
    test::TempDir dir;
    const auto whole = run_sepal(tune_args(method, (dir / "whole.h5").string(), (dir / "whole.jsonl").string()));
    ASSERT_EQ(whole.exit_code, 0) << whole.err;
    auto first = tune_args(method, (dir / "part.h5").string(), (dir / "part.jsonl").string());
    first.insert(first.end(), {"--stop-after", "3"});
    const auto stopped = run_sepal(first);
    ASSERT_EQ(stopped.exit_code, 0) << stopped.err;
    EXPECT_NE(stopped.err.find("stopped after step 3"), std::string::npos) << stopped.err;
    EXPECT_EQ(step_losses(dir / "part.jsonl").size(), 3u);
    std::vector<std::string> resume = {"tune", "--model", kModel, "--data", kTrain, "--resume", (dir / "part.h5").string(),
                                       "--max-length", "64", "--out", (dir / "part.h5").string(), "--log",
                                       (dir / "part.jsonl").string()};
    if (method == "peqa") resume.insert(resume.end(), {"--dtype", "int8"});
    const auto resumed = run_sepal(resume);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    const auto losses = step_losses(dir / "whole.jsonl");
    ASSERT_EQ(losses.size(), 8u);
    EXPECT_EQ(step_losses(dir / "part.jsonl"), losses) << method;
    EXPECT_LT(losses.back(), losses.front());
  }
}

TEST(TuneCli, CheckpointLayoutIsTheDocumentedOne) {
  test::TempDir dir;
  auto args = tune_args("deep-ptune", (dir / "ck.h5").string(), (dir / "log.jsonl").string());
  ASSERT_EQ(run_sepal(args).exit_code, 0);
  ASSERT_EQ(shell("h5dump -H " + (dir / "ck.h5").string() + " > " + (dir / "layout.txt").string()), 0);
  const std::string layout = test::read_file(dir / "layout.txt");
  for (const char* item : {"ATTRIBUTE \"format\"", "ATTRIBUTE \"format_version\"", "ATTRIBUTE \"sepal_version\"",
                           "ATTRIBUTE \"model_fingerprint\"", "ATTRIBUTE \"data_fingerprint\"", "GROUP \"settings\"",
                           "ATTRIBUTE \"method\"", "ATTRIBUTE \"lr\"", "GROUP \"params\"", "DATASET \"soft_prompt\"",
                           "DATASET \"deep_prompts\"", "GROUP \"optimizer\"", "DATASET \"first_moment\"",
                           "DATASET \"second_moment\"", "GROUP \"progress\"", "ATTRIBUTE \"rng_state\"",
                           "DATASET \"data_order\"", "( 4, 128 )", "( 2, 4, 128 )", "( 240 )"}) {
    EXPECT_NE(layout.find(item), std::string::npos) << item;
  }
  // h5py reads it as its users would.
  const std::string script = dir.path().string() + "/read.py";
  test::write_file(script,
                   "import sys, h5py\n"
                   "f = h5py.File(sys.argv[1], 'r')\n"
                   "assert f.attrs['format'] == b'sepal prompt-tuning checkpoint'\n"
                   "assert f['settings'].attrs['method'] == b'deep-ptune'\n"
                   "assert f['params/soft_prompt'].shape == (4, 128)\n"
                   "assert f['params/deep_prompts'].shape == (2, 4, 128)\n"
                   "assert f['progress'].attrs['step'] == 8\n"
                   "assert sorted(f['progress/data_order'][:]) == list(range(240))\n");
  EXPECT_EQ(shell("/usr/bin/python3 " + script + " " + (dir / "ck.h5").string()), 0);
}

TEST(TuneCli, TunedPromptIsUsedByGenerateAndPerplexity) {
  test::TempDir dir;
  auto args = tune_args("ptune", (dir / "p.h5").string(), (dir / "log.jsonl").string());
  ASSERT_EQ(run_sepal(args).exit_code, 0);
  const auto score = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> a = {"perplexity", "--model", kModel, "--data", kEvalNone, "--json"};
    a.insert(a.end(), extra.begin(), extra.end());
    const auto r = run_sepal(a);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["nll"].get<double>() : 0.0;
  };
  EXPECT_LT(score({"--adapter", (dir / "p.h5").string()}), score({}));
  const auto plain = run_sepal({"generate", "--model", kModel, "--max-new-tokens", "12"});
  const auto tuned = run_sepal({"generate", "--model", kModel, "--max-new-tokens", "12", "--adapter", (dir / "p.h5").string()});
  ASSERT_EQ(tuned.exit_code, 0) << tuned.err;
  EXPECT_NE(plain.out, tuned.out);
  // With a draft (which drafts without the tuned prompt), the text is the tuned one.
  for (const std::vector<std::string>& draft : {std::vector<std::string>{"--draft-ngram", "3"},
                                                std::vector<std::string>{"--draft-layers", "1", "--tree-size", "8"}}) {
    std::vector<std::string> a = {"generate", "--model", kModel, "--max-new-tokens", "12", "--adapter", (dir / "p.h5").string()};
    a.insert(a.end(), draft.begin(), draft.end());
    const auto speculative = run_sepal(a);
    ASSERT_EQ(speculative.exit_code, 0) << speculative.err;
    EXPECT_EQ(speculative.out, tuned.out) << draft.front();
  }
}

TEST(TuneCli, PeqaAndLoraAdaptersReproduceTheirTunedLoss) {
  for (const std::string method : {"peqa", "lora"}) {
    test::TempDir dir;
    auto args = tune_args(method, (dir / "a.h5").string(), (dir / "log.jsonl").string());
    // Held-out examples whole and one at a time, as perplexity reads them (int8 picks its outlier
    // columns over each product's tokens, so a packed micro-batch scores differently).
    args.erase(std::find(args.begin(), args.end(), "--max-length"), std::find(args.begin(), args.end(), "--max-length") + 2);
    args[std::find(args.begin(), args.end(), "--micro-batch") - args.begin() + 1] = "1";
    args.insert(args.end(), {"--eval", kEvalNone});
    const auto r = run_sepal(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // The log's evaluations: before training and at the end.
    std::vector<double> evals;
    std::istringstream lines(test::read_file(dir / "log.jsonl"));
    std::string line;
    while (std::getline(lines, line)) {
      const json row = json::parse(line);
      if (row.contains("eval_loss")) evals.push_back(row["eval_loss"].get<double>());
    }
    ASSERT_EQ(evals.size(), 2u) << method;
    EXPECT_LT(evals[1], evals[0]) << method << ": training lowers the held-out loss";
    std::vector<std::string> score = {"perplexity", "--model", kModel, "--data", kEvalNone, "--json", "--adapter",
                                      (dir / "a.h5").string()};
    if (method == "peqa") score.insert(score.end(), {"--dtype", "int8"});
    const auto p = run_sepal(score);
    ASSERT_EQ(p.exit_code, 0) << p.err;
    EXPECT_NEAR(json::parse(p.out)["nll"].get<double>(), evals[1], 1e-6 * evals[1]) << method;
    std::vector<std::string> gen = {"generate", "--model", kModel, "--max-new-tokens", "8", "--adapter", (dir / "a.h5").string()};
    if (method == "peqa") gen.insert(gen.end(), {"--dtype", "int8"});
    EXPECT_EQ(run_sepal(gen).exit_code, 0) << method;
    // sepal quantize --adapter: a PEQA model is an int8 checkpoint of the base one's size with
    // new scales, scoring what the base with the adapter scores; LoRA does not fold in.
    const auto quantize = run_sepal({"quantize", "--model", kModel, "--out", (dir / "tuned").string(), "--adapter",
                                     (dir / "a.h5").string()});
    if (method == "lora") {
      EXPECT_NE(quantize.exit_code, 0);
      EXPECT_NE(quantize.err.find("takes PEQA checkpoints"), std::string::npos) << quantize.err;
      continue;
    }
    ASSERT_EQ(quantize.exit_code, 0) << quantize.err;
    ASSERT_EQ(run_sepal({"quantize", "--model", kModel, "--out", (dir / "base").string()}).exit_code, 0);
    EXPECT_EQ(std::filesystem::file_size(dir / "tuned" / "model.safetensors"),
              std::filesystem::file_size(dir / "base" / "model.safetensors"));
    const auto tuned = run_sepal({"perplexity", "--model", (dir / "tuned").string(), "--data", kEvalNone, "--json", "--dtype", "int8"});
    ASSERT_EQ(tuned.exit_code, 0) << tuned.err;
    EXPECT_NEAR(json::parse(tuned.out)["nll"].get<double>(), evals[1], 1e-4 * evals[1]);
  }
}

TEST(TuneCli, BadInputGetsOneLine) {
  test::TempDir dir;
  const auto one_line_error = [](const test::CommandResult& r, const std::string& needle) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  test::write_file(dir / "bad.jsonl", "{\"text\": \"Once upon a time\"}\n{\"text\": 3}\n");
  auto args = tune_args("ptune", (dir / "x.h5").string(), (dir / "x.jsonl").string());
  args[4] = (dir / "bad.jsonl").string();
  one_line_error(run_sepal(args), "bad.jsonl:2:");
  args = tune_args("qlora", (dir / "x.h5").string(), (dir / "x.jsonl").string());
  args.insert(args.end(), {"--prompt-tokens", "4"});
  one_line_error(run_sepal(args), "--method must be ptune, deep-ptune, peqa or lora");
  args = tune_args("ptune", (dir / "x.h5").string(), (dir / "x.jsonl").string());
  args.insert(args.end(), {"--stop-after", "2"});
  ASSERT_EQ(run_sepal(args).exit_code, 0);
  // Resuming with another learning rate, on another model, or from a damaged file.
  one_line_error(run_sepal({"tune", "--model", kModel, "--data", kTrain, "--resume", (dir / "x.h5").string(), "--lr",
                            "0.3", "--out", (dir / "y.h5").string()}),
                 "--lr 0.3 differs from the resumed checkpoint's 0.05");
  one_line_error(run_sepal({"tune", "--model", (test::models_dir() / "stories260K").string(), "--data", kTrain,
                            "--resume", (dir / "x.h5").string(), "--out", (dir / "y.h5").string()}),
                 "the checkpoint is for another model");
  const std::string bytes = test::read_file(dir / "x.h5");
  test::write_file(dir / "cut.h5", bytes.substr(0, bytes.size() / 3));
  one_line_error(run_sepal({"tune", "--model", kModel, "--data", kTrain, "--resume", (dir / "cut.h5").string(),
                            "--out", (dir / "y.h5").string()}),
                 "cut.h5: ");
  one_line_error(run_sepal({"tune", "--model", kModel, "--data", (dir / "bad.jsonl").string(), "--resume",
                            (dir / "x.h5").string(), "--max-length", "64", "--out", (dir / "y.h5").string()}),
                 "bad.jsonl:2:");
  one_line_error(run_sepal({"tune", "--model", kModel, "--data", kEvalNone, "--resume", (dir / "x.h5").string(),
                            "--max-length", "64", "--out", (dir / "y.h5").string()}),
                 "trained on other data");
  EXPECT_FALSE(std::filesystem::exists(dir / "y.h5"));
  // Adapters: their flags, int8 for PEQA.
  auto with = [&](const std::string& method, std::vector<std::string> extra) {
    auto a = tune_args(method, (dir / "z.h5").string(), (dir / "z.jsonl").string());
    a.insert(a.end(), extra.begin(), extra.end());
    return run_sepal(a);
  };
  one_line_error(with("ptune", {"--lora-rank", "2"}), "--lora-rank is for --method lora");
  one_line_error(with("lora", {"--prompt-tokens", "4"}), "--prompt-tokens is for ptune and deep-ptune");
  auto lora_with = [&](std::vector<std::string> extra) {
    auto a = tune_args("ptune", (dir / "z.h5").string(), (dir / "z.jsonl").string());
    a.erase(std::find(a.begin(), a.end(), "--prompt-tokens"), a.end());
    a[std::find(a.begin(), a.end(), "ptune") - a.begin()] = "lora";
    a.insert(a.end(), extra.begin(), extra.end());
    return run_sepal(a);
  };
  one_line_error(lora_with({"--lora-targets", "q_proj,w1"}), "no projection 'w1'");
  one_line_error(lora_with({"--lora-targets", "q_proj,q_proj"}), "names a projection twice");
  one_line_error(lora_with({"--lora-rank", "0"}), "rank must be between 1 and 1024");
  auto peqa = tune_args("peqa", (dir / "z.h5").string(), (dir / "z.jsonl").string());
  peqa.erase(std::find(peqa.begin(), peqa.end(), "--dtype"), peqa.end());
  one_line_error(run_sepal(peqa), "add --dtype int8");
  EXPECT_FALSE(std::filesystem::exists(dir / "z.h5"));
}

TEST(TuneCli, BloomTrainsAndItsAdapterGenerates) {
  // BLOOM's blocks have a backward of their own (model/arch/bloom/training.cc); the loss falls and
  // the tuned prompt loads in generate.
  test::TempDir dir_holder;
  const auto& dir = dir_holder.path();
  const std::string bloom = (test::models_dir() / "bloom-synth").string();
  auto args = tune_args("deep-ptune", (dir / "b.h5").string(), (dir / "b.jsonl").string());
  args[2] = bloom;
  args[std::find(args.begin(), args.end(), "--steps") - args.begin() + 1] = "12";
  const auto r = run_sepal(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto losses = step_losses(dir / "b.jsonl");
  ASSERT_EQ(losses.size(), 12u);
  EXPECT_LT(losses[9] + losses[10] + losses[11], losses[0] + losses[1] + losses[2]);
  const auto g = run_sepal({"generate", "--model", bloom, "--adapter", (dir / "b.h5").string(), "--prompt", "Tom",
                            "--max-new-tokens", "5"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  // LoRA on every projection BLOOM has, and PEQA (every int8 projection: no gate): the loss falls
  // and the adapter loads in generate.
  for (const std::string method : {"lora", "peqa"}) {
    auto a = tune_args(method, (dir / (method + ".h5")).string(), (dir / (method + ".jsonl")).string());
    a[2] = bloom;
    a[std::find(a.begin(), a.end(), "--steps") - a.begin() + 1] = "12";
    if (method == "lora") a.back() = "q_proj,k_proj,v_proj,o_proj,up_proj,down_proj";
    const auto t = run_sepal(a);
    ASSERT_EQ(t.exit_code, 0) << method << ": " << t.err;
    const auto l = step_losses(dir / (method + ".jsonl"));
    ASSERT_EQ(l.size(), 12u) << method;
    EXPECT_LT(l[9] + l[10] + l[11], l[0] + l[1] + l[2]) << method;
    std::vector<std::string> gen = {"generate", "--model", bloom, "--adapter", (dir / (method + ".h5")).string(),
                                    "--prompt", "Tom", "--max-new-tokens", "5"};
    if (method == "peqa") gen.insert(gen.end(), {"--dtype", "int8"});
    const auto gm = run_sepal(gen);
    EXPECT_EQ(gm.exit_code, 0) << method << ": " << gm.err;
  }
  // An int8 BLOOM checkpoint (its fused query_key_value with one scale a row) loads, and PEQA's
  // scales of q, k and v fold into that tensor's: the tuned checkpoint has the base one's size and
  // scores what the base model with the adapter scores.
  const auto nll = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"perplexity", "--data", (test::models_dir().parent_path() / "data" / "tune-tom" / "eval-none.jsonl").string(),
                                  "--json", "--dtype", "int8"};
    a.insert(a.end(), extra.begin(), extra.end());
    const auto r = run_sepal(a);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["nll"].get<double>() : 0.0;
  };
  ASSERT_EQ(run_sepal({"quantize", "--model", bloom, "--out", (dir / "base").string()}).exit_code, 0);
  const auto tuned = run_sepal({"quantize", "--model", bloom, "--out", (dir / "tuned").string(), "--adapter", (dir / "peqa.h5").string()});
  ASSERT_EQ(tuned.exit_code, 0) << tuned.err;
  EXPECT_EQ(std::filesystem::file_size(dir / "tuned" / "model.safetensors"),
            std::filesystem::file_size(dir / "base" / "model.safetensors"));
  const double base = nll({"--model", bloom}), with_adapter = nll({"--model", bloom, "--adapter", (dir / "peqa.h5").string()});
  EXPECT_NEAR(nll({"--model", (dir / "base").string()}), base, 1e-6 * base);
  // Folded, a row's scale is absmax · (1 + m) / 127; applied, its outputs are multiplied by 1 + m:
  // a rounding apart, which this random BLOOM (39 nats a token) amplifies to a few 1e-5 of the
  // score, depending on the trained values. The adapter itself moves the score by 6%.
  EXPECT_NEAR(nll({"--model", (dir / "tuned").string()}), with_adapter, 1e-4 * with_adapter);
  EXPECT_GT(std::abs(with_adapter - base), 1e-4) << "the adapter changes nothing";
  // BLOOM has no gate_proj: one line, before training. Its own module names select projections
  // (query_key_value is q, k and v), and its PEFT export names its modules
  // (tests/tools/run_peft_test.sh checks what the export holds).
  auto lora = tune_args("lora", (dir / "x.h5").string(), (dir / "x.jsonl").string());
  lora[2] = bloom;
  lora.back() = "gate_proj";
  auto r2 = run_sepal(lora);
  EXPECT_NE(r2.exit_code, 0);
  EXPECT_NE(r2.err.find("no projection 'gate_proj'"), std::string::npos) << r2.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "x.h5"));
  lora.back() = "query_key_value,dense";
  lora.insert(lora.end(), {"--export-peft", (dir / "peft").string()});
  r2 = run_sepal(lora);
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  std::ifstream peft_config(dir / "peft" / "adapter_config.json");
  const json targets = json::parse(peft_config)["target_modules"];
  EXPECT_EQ(targets, json::parse(R"(["query_key_value", "dense"])"));
}


// The task of ../shared/data/tune-tom: stories the model wrote after a hard prompt that training
// never shows. A soft prompt must recover at least half of the gap between no prompt and the hard
// prompt on held-out stories, and deep prompt tuning at least as much as half too.
TEST(TuneCli, ASoftPromptLearnsTheHardPromptsEffect) {
  test::TempDir dir;
  const auto data = test::models_dir().parent_path() / "data" / "tune-tom";
  const auto nll = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> a = {"perplexity", "--model", kModel, "--json"};
    a.insert(a.end(), extra.begin(), extra.end());
    const auto r = run_sepal(a);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out)["nll"].get<double>() : 0.0;
  };
  const double none = nll({"--data", (data / "eval-none.jsonl").string()});
  const double hard = nll({"--data", (data / "eval-hard.jsonl").string()});
  ASSERT_LT(hard, none);
  for (const std::string method : {"ptune", "deep-ptune"}) {
    const auto out = (dir / (method + ".h5")).string();
    const auto r = run_sepal({"tune", "--model", kModel, "--data", (data / "train.jsonl").string(), "--method", method,
                              "--prompt-tokens", "8", "--steps", "30", "--batch-size", "8", "--lr", "0.1", "--warmup",
                              "3", "--out", out});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const double tuned = nll({"--data", (data / "eval-none.jsonl").string(), "--adapter", out});
    const double recovered = (none - tuned) / (none - hard);
    EXPECT_GE(recovered, 0.5) << method << ": no prompt " << none << ", hard prompt " << hard << ", tuned " << tuned;
  }
}

}  // namespace
}  // namespace sepal

// `sepal generate`, `sepal perplexity` and `sepal tune` with --device cuda, as users run them on a
// GPU node: every reference generation of ../shared/models/reference (f32, greedy) gives the
// reference's ids (with an n-gram draft's token trees too), bf16 and int8 keep generating, int8's
// perplexity is within 1% of f32's, and tuning's losses (deep prompts, LoRA, PEQA) are the CPU
// run's, as are the tuned adapters' perplexities. Labelled gpu: CI skips it; scripts/test.sh runs
// it where nvidia-smi sees a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace sepal {
namespace {

using nlohmann::json;
using test::run_sepal;

json run_json(const std::vector<std::string>& args) {
  const auto r = run_sepal(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out) : json();
}

TEST(GpuGenerate, ReproducesEveryReferenceGeneration) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(test::models_dir() / "reference")) {
    const auto ref = json::parse(test::read_file(entry.path()));
    const auto model = test::models_dir() / ref["model"].get<std::string>();
    SCOPED_TRACE(entry.path().string());
    const json out = run_json({"generate", "--json", "--device", "cuda", "--model", model.string(), "--prompt",
                               ref["prompt"], "--max-new-tokens", std::to_string(ref["max_new_tokens"].get<int>())});
    EXPECT_EQ(out["prompt_ids"], ref["prompt_ids"]);
    EXPECT_EQ(out["generated_ids"], ref["generated_ids"]);
    // Speculative decoding (token trees on the GPU) gives the same text.
    const json drafted = run_json({"generate", "--json", "--device", "cuda", "--draft-ngram", "3", "--model", model.string(),
                                   "--prompt", ref["prompt"], "--max-new-tokens",
                                   std::to_string(ref["max_new_tokens"].get<int>())});
    EXPECT_EQ(drafted["generated_ids"], ref["generated_ids"]) << "with an n-gram draft";
    for (const char* dtype : {"bf16", "int8"}) {
      const json other = run_json({"generate", "--json", "--device", "cuda", "--dtype", dtype, "--model", model.string(),
                                   "--prompt", ref["prompt"], "--max-new-tokens", "24"});
      EXPECT_EQ(other["generated_ids"].size(), 24u) << dtype;
    }
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

TEST(GpuPerplexity, Int8IsWithinOnePercentOfF32) {
  const auto model = (test::models_dir() / "tinystories-656K").string();
  const test::TempDir dir;
  std::string text;
  for (int i = 0; i < 8; ++i) {
    text += "Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog. "
            "One day, she saw a big red ball under a tree. She ran to get it, but the ball rolled away.\n\n";
  }
  test::write_file(dir / "t.txt", text);
  auto perplexity = [&](const char* device, const char* dtype) {
    return run_json({"perplexity", "--json", "--device", device, "--dtype", dtype, "--model", model, "--text",
                     (dir / "t.txt").string()})["perplexity"]
        .get<double>();
  };
  const double f32 = perplexity("cuda", "f32"), int8 = perplexity("cuda", "int8");
  EXPECT_NEAR(int8 / f32, 1.0, 0.01) << "f32 " << f32 << ", int8 " << int8;
  EXPECT_NEAR(f32 / perplexity("cpu", "f32"), 1.0, 1e-4);
}

// Tuning with the blocks on the GPU (their training passes there): each step's loss is the CPU
// run's, for deep prompts and LoRA at f32 and int8 and PEQA.
TEST(GpuTune, TuningFollowsTheCpuRun) {
  const auto model = (test::models_dir() / "tinystories-656K").string();
  const test::TempDir dir;
  std::string data;
  for (const char* story : {"Tom had a red car. He liked to drive it to the park.", "Lily saw a big dog. The dog was happy.",
                            "Ben found a ball. He gave it to his sister.", "The sun was hot. Mia ate a cold ice cream."}) {
    data += json{{"text", story}}.dump() + "\n";
  }
  test::write_file(dir / "d.jsonl", data);
  for (const auto& [method, dtype] : {std::pair{"deep-ptune", "f32"}, std::pair{"deep-ptune", "int8"}, std::pair{"lora", "f32"},
                                      std::pair{"lora", "int8"}, std::pair{"peqa", "int8"}}) {
    auto losses = [&](const char* device) {
      const std::string name = std::string(device) + "-" + method + "-" + dtype;
      std::vector<std::string> args = {"tune", "--model", model, "--data", (dir / "d.jsonl").string(), "--method", method,
                                       "--steps", "4", "--batch-size", "2", "--lr", "0.05", "--dtype", dtype, "--device",
                                       device, "--out", (dir / (name + ".h5")).string(), "--log",
                                       (dir / (name + ".log")).string()};
      if (std::string(method) == "deep-ptune") args.insert(args.end(), {"--prompt-tokens", "4"});
      if (std::string(method) == "lora") args.insert(args.end(), {"--lora-targets", "q_proj,v_proj,down_proj"});
      const auto r = run_sepal(args);
      EXPECT_EQ(r.exit_code, 0) << r.err;
      std::vector<double> out;
      std::istringstream lines(test::read_file(dir / (name + ".log")));
      for (std::string line; std::getline(lines, line);) {
        const json step = json::parse(line);
        if (step.contains("loss")) out.push_back(step["loss"].get<double>());
      }
      return out;
    };
    const std::vector<double> cpu = losses("cpu"), gpu = losses("cuda");
    ASSERT_EQ(cpu.size(), 4u) << method << " " << dtype;
    ASSERT_EQ(gpu.size(), cpu.size()) << method << " " << dtype;
    for (std::size_t i = 0; i < cpu.size(); ++i) {
      EXPECT_NEAR(gpu[i] / cpu[i], 1.0, 1e-3) << method << " " << dtype << " step " << i + 1;
    }
    // The tuned adapter in inference: the same perplexity on the GPU as on the CPU.
    auto perplexity = [&](const char* device) {
      const std::string checkpoint = (dir / (std::string("cpu-") + method + "-" + dtype + ".h5")).string();
      return run_json({"perplexity", "--json", "--device", device, "--dtype", dtype, "--model", model, "--data",
                       (dir / "d.jsonl").string(), "--adapter", checkpoint})["perplexity"]
          .get<double>();
    };
    EXPECT_NEAR(perplexity("cuda") / perplexity("cpu"), 1.0, 1e-4) << method << " " << dtype;
  }
}

}  // namespace
}  // namespace sepal

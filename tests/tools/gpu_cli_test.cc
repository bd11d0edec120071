// `sepal generate` and `sepal perplexity` with --device cuda, as users run them on a GPU node:
// every reference generation of ../shared/models/reference (f32, greedy) gives the reference's
// ids, bf16 and int8 keep generating, and int8's perplexity is within 1% of f32's. Labelled gpu:
// CI skips it; scripts/test.sh runs it where nvidia-smi sees a GPU.
#include <gtest/gtest.h>

#include <cmath>
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

}  // namespace
}  // namespace sepal

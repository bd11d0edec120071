#pragma once
// Helpers shared by the tests: temporary folders, the shared real models, running the CLI.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace sepal::test {

/// A fresh folder under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// ../shared/models next to the source tree, or $SEPAL_MODELS_DIR.
std::filesystem::path models_dir();

/// A greedy reference of ../shared/models/reference (computed by independent float64 code).
struct GreedyReference {
  std::vector<std::int32_t> prompt_ids, generated_ids;
  std::int64_t max_new_tokens = 0;
};
/// reference/<model>.greedy.json.
GreedyReference greedy_reference(const std::string& model);

/// Peak resident memory of this process (VmHWM), in bytes.
std::size_t peak_rss_bytes();

/// Writes `bytes` to `path`.
void write_file(const std::filesystem::path& path, const std::string& bytes);
/// Reads a whole file.
std::string read_file(const std::filesystem::path& path);

/// Result of running a command.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs `build/bin/sepal` ($SEPAL_PROGRAM when set) with the arguments (each shell-quoted).
CommandResult run_sepal(const std::vector<std::string>& args);

/// ||a - b|| / max(||b||, tiny): the normalised error the kernel tests bound per op.
double normalized_error(const std::vector<float>& a, const std::vector<double>& b);

/// Deterministic pseudo-random floats in [-scale, scale].
std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float scale = 1.0f);

/// Inputs of GPT-OSS's clamped SwiGLU (limit 7) that reach every region: gates and ups swept
/// across -10 .. 10 in opposite directions, values far outside and at the limit, then `randoms`
/// pseudo-random pairs in [-12, 12] (seeded).
struct SwigluInputs {
  std::vector<float> gate, up;
};
SwigluInputs clamped_swiglu_inputs(std::size_t randoms, std::uint64_t seed);

/// Checks `grad` (d loss / d x at `at`) along two random directions u (seeded) against central
/// differences of the float64 `loss` (step 1e-5): |numeric - grad · u| within `tolerance` times
/// max(floor, |grad · u|), as gtest expectations.
void expect_directional(const std::function<double(const std::vector<double>&)>& loss, const std::vector<float>& at,
                        const std::vector<float>& grad, std::uint64_t seed, double tolerance, double floor = 1.0);

}  // namespace sepal::test

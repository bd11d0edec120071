#include "tests/test_util.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

namespace sepal::test {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "sepal-test-XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

std::filesystem::path models_dir() {
  if (const char* dir = std::getenv("SEPAL_MODELS_DIR")) return dir;
  return std::filesystem::path(SEPAL_SOURCE_DIR) / ".." / "shared" / "models";
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

GreedyReference greedy_reference(const std::string& model) {
  const auto ref = nlohmann::json::parse(read_file(models_dir() / "reference" / (model + ".greedy.json")));
  return {ref["prompt_ids"].get<std::vector<std::int32_t>>(), ref["generated_ids"].get<std::vector<std::int32_t>>(),
          ref["max_new_tokens"].get<std::int64_t>()};
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

namespace {
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}
}  // namespace

CommandResult run_sepal(const std::vector<std::string>& args) {
  TempDir tmp;
  const char* program = std::getenv("SEPAL_PROGRAM");  // a packed build run elsewhere (scripts/gpu_check.sh)
  std::string cmd = shell_quote(program && *program ? std::string(program) : std::string(SEPAL_BINARY_DIR) + "/bin/sepal");
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " > " + shell_quote((tmp / "out").string()) + " 2> " + shell_quote((tmp / "err").string()) + " < /dev/null";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(tmp / "out");
  r.err = read_file(tmp / "err");
  return r;
}

double normalized_error(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float scale) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

SwigluInputs clamped_swiglu_inputs(std::size_t randoms, std::uint64_t seed) {
  SwigluInputs in;
  for (int i = -400; i <= 400; ++i) {
    in.gate.push_back(static_cast<float>(i) / 40.0f);
    in.up.push_back(static_cast<float>(400 - i) / 40.0f - 4.0f);
  }
  for (float v : {-1e4f, -90.0f, -7.0f, 7.0f, 7.5f, 1e4f}) {
    in.gate.push_back(v);
    in.up.push_back(-v);
  }
  const auto g = random_floats(randoms, seed, 12.0f), u = random_floats(randoms, seed + 1, 12.0f);
  in.gate.insert(in.gate.end(), g.begin(), g.end());
  in.up.insert(in.up.end(), u.begin(), u.end());
  return in;
}

void expect_directional(const std::function<double(const std::vector<double>&)>& loss, const std::vector<float>& at,
                        const std::vector<float>& grad, std::uint64_t seed, double tolerance, double floor) {
  constexpr double kStep = 1e-5;
  for (std::uint64_t k = 0; k < 2; ++k) {
    const auto u = random_floats(at.size(), seed + k);
    std::vector<double> up(at.begin(), at.end()), down = up;
    double analytic = 0;
    for (std::size_t i = 0; i < at.size(); ++i) {
      up[i] += kStep * u[i];
      down[i] -= kStep * u[i];
      analytic += static_cast<double>(grad[i]) * u[i];
    }
    const double numeric = (loss(up) - loss(down)) / (2 * kStep);
    EXPECT_NEAR(numeric, analytic, tolerance * std::max(floor, std::abs(analytic))) << "direction " << k;
  }
}

}  // namespace sepal::test

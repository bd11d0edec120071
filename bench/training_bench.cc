// The cost of a training pass through a model's blocks (model/block_stack.h): the forward of a
// micro-batch against its backward (which recomputes the forward, one block at a time, and then
// computes the input gradients), and the input-gradient matrix products against the forward's,
// all measured in the same run, best of --rounds. Writes a CSV row per weight type.
//
//   build/bin/training_bench --model-dir DIR [--sequences 4] [--length 128] [--rounds 3]
//                            [--dtypes f32,bf16,int8] [--csv bench/results/training.csv]

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "kernels/cpu_isa.h"
#include "kernels/gradients.h"
#include "kernels/matmul.h"
#include "kernels/parallel.h"
#include "model/block_stack.h"
#include "model/model_config.h"

namespace {

using namespace sepal;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

template <typename F>
double best_of(int rounds, F&& body) {
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const auto start = Clock::now();
    body();
    best = std::min(best, since(start));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string model_dir, csv = "bench/results/training.csv", dtypes = "f32,bf16,int8";
  int sequences = 4, length = 128, rounds = 3;
  po::options_description options("training_bench: forward against backward of a training pass");
  options.add_options()("help,h", "show this help")("model-dir", po::value(&model_dir)->required(), "model folder")(
      "sequences", po::value(&sequences)->default_value(4), "sequences per micro-batch")(
      "length", po::value(&length)->default_value(128), "tokens per sequence")(
      "rounds", po::value(&rounds)->default_value(3), "repetitions (best taken)")(
      "dtypes", po::value(&dtypes)->default_value(dtypes), "weight types, comma-separated")(
      "csv", po::value(&csv)->default_value(csv), "CSV to write");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    if (vm.count("help")) {
      std::cout << options << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "training_bench: %s\n", e.what());
    return 2;
  }
  if (sequences < 1 || length < 2 || rounds < 1) {
    std::fprintf(stderr, "training_bench: --sequences, --length and --rounds must be positive (length >= 2)\n");
    return 2;
  }
  const ModelConfig config = read_model_config(model_dir);
  const Checkpoint ckpt = Checkpoint::open(model_dir);
  const std::int64_t h = config.hidden_size, tokens = static_cast<std::int64_t>(sequences) * length;
  std::printf("training pass of %d x %d tokens through %lld blocks of %s (hidden %lld), %s, %d threads\n", sequences,
              length, static_cast<long long>(config.num_layers), model_dir.c_str(), static_cast<long long>(h),
              std::string(cpu_isa_name(active_cpu_isa())).c_str(), compute_threads());
  std::ofstream out(csv);
  out << "dtype,tokens,forward_s,backward_s,backward_over_forward,forward_tokens_per_s,step_tokens_per_s,"
         "matmul_s,matmul_input_grad_s,input_grad_over_matmul\n";
  std::stringstream list(dtypes);
  std::string name;
  while (std::getline(list, name, ',')) {
    const auto dtype = parse_dtype(name);
    if (!dtype) {
      std::fprintf(stderr, "training_bench: unknown dtype %s\n", name.c_str());
      return 2;
    }
    const BlockStack blocks = BlockStack::load(ckpt, config, 0, config.num_layers, WeightLoading(*dtype));
    const std::vector<std::int64_t> lengths(static_cast<std::size_t>(sequences), length);
    std::vector<float> input(static_cast<std::size_t>(tokens * h));
    for (std::size_t i = 0; i < input.size(); ++i) input[i] = 0.01f * static_cast<float>((i * 7919) % 201) - 1.0f;
    std::vector<float> hidden, grad;
    const double forward = best_of(rounds, [&] {
      hidden = input;
      blocks.forward_sequences(hidden.data(), lengths, 0, config.num_layers, nullptr);
    });
    const double backward = best_of(rounds, [&] {
      grad.assign(input.size(), 1e-3f);
      blocks.backward_sequences(input.data(), lengths, 0, config.num_layers, nullptr, grad.data(), nullptr);
    });
    // The MLP's down projection, forward against its input gradient, on the same tokens.
    const std::int64_t inter = config.intermediate_size;
    std::vector<float> x(static_cast<std::size_t>(tokens * inter), 0.01f), y(static_cast<std::size_t>(tokens * h));
    std::vector<float> w(static_cast<std::size_t>(h * inter), 0.02f);
    const WeightView view{DType::kF32, h, inter, w.data()};
    const double mm = best_of(rounds, [&] { matmul(x.data(), tokens, view, y.data()); });
    const double mg = best_of(rounds, [&] { matmul_input_grad(y.data(), tokens, view, x.data()); });
    std::printf("  %-5s forward %.3f s (%.0f tokens/s), backward %.3f s: backward / forward %.2f; forward + backward "
                "%.0f tokens/s; f32 input-gradient product / forward product %.2f\n",
                name.c_str(), forward, tokens / forward, backward, backward / forward, tokens / (forward + backward),
                mg / mm);
    out << name << "," << tokens << "," << forward << "," << backward << "," << backward / forward << ","
        << tokens / forward << "," << tokens / (forward + backward) << "," << mm << "," << mg << "," << mg / mm << "\n";
  }
  std::printf("wrote %s\n", csv.c_str());
  return 0;
}

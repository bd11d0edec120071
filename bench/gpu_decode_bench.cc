// Blocks on a GPU (BlockStack::place_on with the CUDA backend): prompt and decode tokens/s of a
// synthetic model's blocks at f32, bf16 and int8, and decode as a fraction of the roofline: the
// GPU's read bandwidth (measured in the same run, over a buffer the size of the weights) divided
// by the bytes a decode step streams (the weights and the keys and values attention reads). A
// decode faster than the roofline fails the run. Built with CUDA only; run by bench/run_gpu.sh.
#include <boost/program_options.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <vector>

#include "bench/gpu_bandwidth.h"
#include "kernels/backend.h"
#include "kernels/error.h"
#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/synthetic_checkpoint.h"

namespace po = boost::program_options;
using namespace sepal;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

struct Row {
  std::string dtype;
  double weight_bytes = 0, prompt_tps = 0, decode_tps = 0, streamed_bytes = 0, bandwidth = 0;
  double fraction() const { return decode_tps * streamed_bytes / bandwidth; }
};

Row run(const std::filesystem::path& dir, DType dtype, const std::shared_ptr<Backend>& backend, int device,
        int prompt_tokens, int decode_tokens) {
  const ModelConfig config = read_model_config(dir);
  BlockStack blocks = BlockStack::load(Checkpoint::open(dir), config, 0, config.num_layers, WeightLoading(dtype));
  blocks.place_on(backend);
  Row row;
  row.dtype = std::string(dtype_name(dtype));
  row.weight_bytes = static_cast<double>(blocks.weight_bytes());
  const std::int64_t h = config.hidden_size;
  std::vector<float> prompt(static_cast<std::size_t>(prompt_tokens * h), 0.01f), step(static_cast<std::size_t>(h), 0.01f);
  {  // warm-up: the kernels' first launches and cuBLAS's choices
    KvCache cache = blocks.new_cache(prompt_tokens + 8);
    std::vector<float> warm = prompt;
    blocks.forward(warm.data(), prompt_tokens, cache);
    blocks.forward(step.data(), 1, cache);
  }
  KvCache cache = blocks.new_cache(prompt_tokens + decode_tokens);
  auto t = std::chrono::steady_clock::now();
  blocks.forward(prompt.data(), prompt_tokens, cache);
  row.prompt_tps = prompt_tokens / seconds_since(t);
  t = std::chrono::steady_clock::now();
  for (int i = 0; i < decode_tokens; ++i) blocks.forward(step.data(), 1, cache);
  row.decode_tps = decode_tokens / seconds_since(t);
  // Per decode step: every weight, and on average the keys and values of half the positions.
  const double kv_per_position = 2.0 * config.num_layers * config.num_kv_heads * config.head_dim * 4;
  row.streamed_bytes = row.weight_bytes + kv_per_position * (prompt_tokens + decode_tokens / 2.0);
  row.bandwidth = bench::gpu_read_bandwidth(device, static_cast<std::int64_t>(row.weight_bytes));
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = "/tmp/sepal-bench", preset = "tinyllama-1.1b", device_text = "cuda", csv;
  int prompt_tokens = 128, decode_tokens = 128;
  po::options_description options("gpu_decode_bench: blocks on a GPU against its memory bandwidth");
  options.add_options()("help,h", "show this help")
      ("model-dir", po::value(&model_dir), "where synthetic checkpoints are kept (written when missing)")
      ("preset", po::value(&preset), "model shape (sepal synth --preset)")
      ("device", po::value(&device_text), "cuda or cuda:N")
      ("prompt-tokens", po::value(&prompt_tokens), "prompt length")
      ("decode-tokens", po::value(&decode_tokens), "decode steps")
      ("csv", po::value(&csv), "also write the rows here");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << options;
      return 0;
    }
    const Device device = parse_device(device_text);
    if (device.is_cpu()) fail("--device must name a GPU");
    const auto spec = synthetic_preset(preset);
    if (!spec) fail("unknown preset ", preset);
    if (prompt_tokens < 1 || decode_tokens < 1) fail("--prompt-tokens and --decode-tokens must be at least 1");
    std::shared_ptr<Backend> backend = open_backend(device);
    const BackendInfo info = backend->info();
    std::printf("gpu_decode_bench: %s on %s (%s, %.0f GiB), prompt %d tokens, decode %d tokens\n", preset.c_str(),
                device_name(device).c_str(), info.name.c_str(), info.memory_bytes / 1073741824.0, prompt_tokens,
                decode_tokens);
    const auto dir = std::filesystem::path(model_dir) / (preset + "-bf16");
    if (!std::filesystem::exists(dir / "model.safetensors")) {
      SyntheticSpec s = *spec;
      s.dtype = DType::kBF16;
      std::fprintf(stderr, "writing synthetic checkpoint %s\n", dir.c_str());
      write_synthetic_checkpoint(s, dir);
    }
    std::vector<Row> rows;
    std::printf("%-6s %12s %12s %12s %12s %10s %9s\n", "dtype", "weights MB", "prompt t/s", "decode t/s", "read GB/s",
                "roofline", "fraction");
    bool over = false;
    for (const DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
      const Row r = run(dir, dtype, backend, device.index, prompt_tokens, decode_tokens);
      const double roofline = r.bandwidth / r.streamed_bytes;
      std::printf("%-6s %12.1f %12.1f %12.1f %12.1f %10.1f %9.2f\n", r.dtype.c_str(), r.weight_bytes / 1e6, r.prompt_tps,
                  r.decode_tps, r.bandwidth / 1e9, roofline, r.fraction());
      over = over || r.fraction() > 1.0;
      rows.push_back(r);
    }
    if (!csv.empty()) {
      std::ofstream out(csv);
      out << "dtype,weight_bytes,prompt_tokens_per_s,decode_tokens_per_s,streamed_bytes,read_bytes_per_s,fraction\n";
      for (const Row& r : rows) {
        out << r.dtype << ',' << r.weight_bytes << ',' << r.prompt_tps << ',' << r.decode_tps << ',' << r.streamed_bytes
            << ',' << r.bandwidth << ',' << r.fraction() << '\n';
      }
    }
    if (over) {
      std::fprintf(stderr, "gpu_decode_bench: a decode beat the measured bandwidth: the probe is wrong\n");
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_decode_bench: error: %s\n", e.what());
    return 1;
  }
}

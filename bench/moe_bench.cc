// What a mixture of experts costs against a dense model of the same active size, in one process:
// a synthetic Qwen3-MoE (--experts of --expert-width, --per-token picked) against a synthetic
// Qwen3 whose MLP is as wide as the picked experts together (--per-token x --expert-width), same
// attention, same blocks. Times decode steps (each a token through every block) and a prompt,
// best of --rounds, and prints milliseconds per token, the weight bytes each token reads (the
// mixture's: attention, router and its picked experts), and the mixture's time as a ratio of the
// dense model's: what routing, gathering and the experts' smaller products add. Writes a CSV row.
//
//   build/bin/moe_bench [--hidden 1024] [--layers 4] [--experts 64] [--per-token 8] [--expert-width 256]
//                       [--dtype f32|bf16|int8] [--steps 32] [--prompt 128] [--rounds 5] [--csv bench/results/moe.csv]

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include "bench/bench_rows.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/synthetic_checkpoint.h"

namespace {

using namespace sepal;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }


struct Timing {
  double decode = 1e30, prompt = 1e30;  // seconds per token, per prompt
};

// Best of `rounds`: `steps` decode steps after a prompt of 8, and a prompt of `prompt` tokens.
Timing time_blocks(const BlockStack& blocks, std::int64_t steps, std::int64_t prompt, std::int64_t rounds) {
  const std::int64_t h = blocks.config().hidden_size;
  Timing best;
  for (std::int64_t r = 0; r < rounds; ++r) {
    KvCache cache = blocks.new_cache(8 + steps);
    auto rows = bench::deterministic_rows(8 + steps, h, static_cast<std::uint32_t>(r + 1));
    blocks.forward(rows.data(), 8, cache);
    const auto t0 = Clock::now();
    for (std::int64_t i = 0; i < steps; ++i) blocks.forward(rows.data() + (8 + i) * h, 1, cache);
    best.decode = std::min(best.decode, seconds_since(t0) / static_cast<double>(steps));
    KvCache long_cache = blocks.new_cache(prompt);
    auto long_rows = bench::deterministic_rows(prompt, h, static_cast<std::uint32_t>(r + 100));
    const auto t1 = Clock::now();
    blocks.forward(long_rows.data(), prompt, long_cache);
    best.prompt = std::min(best.prompt, seconds_since(t1));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  std::int64_t hidden = 1024, layers = 4, experts = 64, per_token = 8, width = 256, steps = 32, prompt = 128, rounds = 5;
  std::string dtype_text = "f32", csv = "bench/results/moe.csv";
  po::options_description opts("moe_bench options");
  opts.add_options()("help", "show this help")("hidden", po::value(&hidden), "hidden size")(
      "layers", po::value(&layers), "blocks")("experts", po::value(&experts), "experts per block")(
      "per-token", po::value(&per_token), "experts each token takes")("expert-width", po::value(&width), "an expert's MLP width")(
      "dtype", po::value(&dtype_text), "weights in memory: f32, bf16 or int8")("steps", po::value(&steps), "decode steps timed")(
      "prompt", po::value(&prompt), "prompt tokens timed")("rounds", po::value(&rounds), "timed rounds (best taken)")(
      "csv", po::value(&csv), "CSV output");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, opts), vm);
    if (vm.count("help")) {
      std::cout << opts << "\n";
      return 0;
    }
    po::notify(vm);
    const auto dtype = parse_dtype(dtype_text);
    if (!dtype) fail("--dtype must be f32, bf16 or int8");
    if (steps < 1 || prompt < 1 || rounds < 1) fail("--steps, --prompt and --rounds must be positive");

    const auto dir = std::filesystem::temp_directory_path() / ("sepal-moe-bench-" + std::to_string(::getpid()));
    SyntheticSpec moe;
    moe.architecture = "Qwen3MoeForCausalLM";
    moe.hidden_size = hidden;
    moe.num_layers = layers;
    moe.num_heads = 16;
    moe.num_kv_heads = 4;
    moe.vocab_size = 512;
    moe.num_experts = experts;
    moe.experts_per_token = per_token;
    moe.moe_intermediate_size = width;
    moe.intermediate_size = per_token * width;
    moe.max_position_embeddings = std::max<std::int64_t>(8 + steps, prompt);
    SyntheticSpec dense = moe;
    dense.architecture = "Qwen3ForCausalLM";
    dense.num_experts = 0;
    dense.moe_intermediate_size = 0;
    validate(moe);
    validate(dense);
    std::fprintf(stderr, "moe_bench: writing the two checkpoints to %s\n", dir.c_str());
    write_synthetic_checkpoint(moe, dir / "moe");
    write_synthetic_checkpoint(dense, dir / "dense");
    auto load = [&](const char* name) {
      const ModelConfig config = read_model_config(dir / name);
      return BlockStack::load(Checkpoint::open(dir / name), config, 0, config.num_layers, WeightLoading(*dtype));
    };
    const BlockStack moe_blocks = load("moe"), dense_blocks = load("dense");
    std::filesystem::remove_all(dir);
    // Bytes a token reads: every weight of the dense model; the mixture's but its unpicked experts.
    const std::int64_t expert_bytes = moe_blocks.block_weights(0).experts[0].gate_proj.view.bytes() * 3;
    const std::int64_t moe_read = moe_blocks.weight_bytes() - layers * (experts - per_token) * expert_bytes;
    std::fprintf(stderr, "moe_bench: timing (%s, %d threads, %s)\n", dtype_text.c_str(), compute_threads(),
                 std::string(cpu_isa_name(active_cpu_isa())).c_str());
    // Alternate the two, so that both see the same minutes of a machine whose speed drifts.
    Timing m, d;
    for (std::int64_t r = 0; r < rounds; ++r) {
      const Timing a = time_blocks(moe_blocks, steps, prompt, 1), b = time_blocks(dense_blocks, steps, prompt, 1);
      m.decode = std::min(m.decode, a.decode), m.prompt = std::min(m.prompt, a.prompt);
      d.decode = std::min(d.decode, b.decode), d.prompt = std::min(d.prompt, b.prompt);
    }
    std::printf("%-8s %12s %12s %14s %14s\n", "model", "decode ms", "MB/token", "prompt tok/s", "held MB");
    std::printf("%-8s %12.3f %12.1f %14.0f %14.1f\n", "dense", d.decode * 1e3, dense_blocks.weight_bytes() / 1e6,
                static_cast<double>(prompt) / d.prompt, dense_blocks.weight_bytes() / 1e6);
    std::printf("%-8s %12.3f %12.1f %14.0f %14.1f\n", "moe", m.decode * 1e3, moe_read / 1e6, static_cast<double>(prompt) / m.prompt,
                moe_blocks.weight_bytes() / 1e6);
    std::printf("mixture against dense of its active size: decode %.2f times the time, prompt %.2f times\n", m.decode / d.decode,
                m.prompt / d.prompt);
    std::filesystem::create_directories(std::filesystem::path(csv).parent_path());
    const bool fresh = !std::filesystem::exists(csv);
    std::ofstream out(csv, std::ios::app);
    if (fresh) out << "dtype,hidden,layers,experts,per_token,expert_width,dense_decode_ms,moe_decode_ms,decode_ratio,dense_prompt_tok_s,moe_prompt_tok_s,prompt_ratio\n";
    out << dtype_text << "," << hidden << "," << layers << "," << experts << "," << per_token << "," << width << ","
        << d.decode * 1e3 << "," << m.decode * 1e3 << "," << m.decode / d.decode << "," << prompt / d.prompt << ","
        << prompt / m.prompt << "," << m.prompt / d.prompt << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe_bench: %s\n", e.what());
    return 1;
  }
}

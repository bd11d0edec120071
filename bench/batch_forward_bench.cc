// What batching sessions' steps costs in one process, without messages: for K sessions (K from
// --sessions), one decode step of every session through all blocks as one BlockStack::forward_batch
// against K forward() calls, and the LM head of K rows as one ModelEnds::logits_each_alone against
// K one-row logits(); best of --rounds, each session at context --context. Prints milliseconds
// per round and the rows per second each way, and checks that batched and alone give the same
// bits. Writes a CSV row per K.
//
//   build/bin/batch_forward_bench --model-dir DIR [--dtype f32|bf16|int8] [--kv-dtype f32|bf16] [--sessions 1,4,16]
//                                 [--context 64] [--rounds 5] [--csv bench/results/batch_forward.csv]

#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/bench_rows.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/safetensors.h"

namespace {

using namespace sepal;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<std::int64_t> parse_list(const std::string& s) {
  std::vector<std::int64_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    std::size_t used = 0;
    const long long v = std::stoll(item, &used);
    if (used != item.size() || v < 1 || v > 64) fail("--sessions takes counts from 1 to 64, got '", item, "'");
    out.push_back(v);
  }
  if (out.empty()) fail("--sessions is empty");
  return out;
}


struct Timing {
  double batched = 1e30, alone = 1e30;
};

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string model_dir, dtype_name = "f32", kv_dtype_name = "f32", sessions_list = "1,4,16", csv = "bench/results/batch_forward.csv";
  std::int64_t context = 64, rounds = 5;
  po::options_description opts("batch_forward_bench options");
  opts.add_options()("help", "show this help")("model-dir", po::value(&model_dir)->required(), "model directory")(
      "dtype", po::value(&dtype_name), "weights in memory: f32, bf16 or int8")(
      "kv-dtype", po::value(&kv_dtype_name), "the sessions' key/value caches: f32 or bf16")(
      "sessions", po::value(&sessions_list), "session counts, comma-separated")(
      "context", po::value(&context), "positions each session holds before the timed steps")(
      "rounds", po::value(&rounds), "timed rounds (best taken)")("csv", po::value(&csv), "CSV output");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, opts), vm);
    if (vm.count("help")) {
      std::cout << opts << "\n";
      return 0;
    }
    po::notify(vm);
    if (context < 1 || rounds < 1) fail("--context and --rounds must be at least 1");
    const std::vector<std::int64_t> counts = parse_list(sessions_list);
    const std::optional<DType> parsed = parse_dtype(dtype_name);
    if (!parsed || (*parsed != DType::kF32 && *parsed != DType::kBF16 && *parsed != DType::kI8))
      fail("--dtype must be f32, bf16 or int8, got '", dtype_name, "'");
    const DType dtype = *parsed;
    const std::optional<DType> kv_dtype = parse_dtype(kv_dtype_name);
    if (!kv_dtype || !kv_dtype_supported(*kv_dtype)) fail("--kv-dtype must be f32 or bf16, got '", kv_dtype_name, "'");
    WeightLoading loading(dtype);
    loading.kv_dtype = *kv_dtype;
    const ModelConfig config = read_model_config(model_dir);
    const Checkpoint checkpoint = Checkpoint::open(model_dir);
    const BlockStack stack = BlockStack::load(checkpoint, config, 0, config.num_layers, loading);
    const ModelEnds ends = ModelEnds::load(checkpoint, config, loading);
    const std::int64_t h = config.hidden_size, vocab = config.vocab_size, blocks = config.num_layers;
    std::printf("batch_forward_bench: %s at %s (caches %s), %lld blocks, %lld wide; %s kernels, %d threads; context %lld\n",
                model_dir.c_str(), dtype_name.c_str(), kv_dtype_name.c_str(), static_cast<long long>(blocks), static_cast<long long>(h),
                std::string(cpu_isa_name(active_cpu_isa())).c_str(), compute_threads(), static_cast<long long>(context));
    std::ofstream out(csv);
    if (!out) fail("cannot write ", csv);
    out << "dtype,sessions,blocks_batched_ms,blocks_alone_ms,head_batched_ms,head_alone_ms\n";
    double blocks_one = 0, head_one = 0;
    for (const std::int64_t k : counts) {
      // Two copies of every session: one stepped batched, one alone; they must stay equal.
      std::vector<KvCache> batched, alone;
      for (std::int64_t i = 0; i < k; ++i) {
        batched.push_back(stack.new_cache(context + rounds + 1, 0, blocks));
        alone.push_back(stack.new_cache(context + rounds + 1, 0, blocks));
        auto prompt = bench::deterministic_rows(context, h, static_cast<std::uint32_t>(i));
        auto copy = prompt;
        stack.forward(prompt.data(), context, batched.back(), 0);
        stack.forward(copy.data(), context, alone.back(), 0);
      }
      Timing blocks_t, head_t;
      for (std::int64_t r = 0; r < rounds; ++r) {
        std::vector<float> xb = bench::deterministic_rows(k, h, static_cast<std::uint32_t>(1000 + r)), xa = xb;
        std::vector<BatchedStep> steps;
        for (std::int64_t i = 0; i < k; ++i) steps.push_back(BatchedStep{xb.data() + i * h, 1, &batched[i]});
        auto t = Clock::now();
        stack.forward_batch(steps, 0, blocks);
        blocks_t.batched = std::min(blocks_t.batched, seconds_since(t));
        t = Clock::now();
        for (std::int64_t i = 0; i < k; ++i) stack.forward(xa.data() + i * h, 1, alone[i], 0);
        blocks_t.alone = std::min(blocks_t.alone, seconds_since(t));
        if (xa != xb) fail("a batched step's hidden states differ from the same step alone");
        std::vector<float> lb(static_cast<std::size_t>(k * vocab)), la(lb.size());
        t = Clock::now();
        ends.logits_each_alone(xb.data(), k, lb.data());
        head_t.batched = std::min(head_t.batched, seconds_since(t));
        t = Clock::now();
        for (std::int64_t i = 0; i < k; ++i) ends.logits(xa.data() + i * h, 1, la.data() + i * vocab);
        head_t.alone = std::min(head_t.alone, seconds_since(t));
        if (la != lb) fail("batched logits differ from each row's alone");
      }
      if (k == counts.front()) {
        blocks_one = blocks_t.alone / static_cast<double>(k);
        head_one = head_t.alone / static_cast<double>(k);
      }
      const auto rate = [k](double s) { return static_cast<double>(k) / s; };
      std::printf("%3lld sessions: blocks batched %7.2f ms (%6.1f rows/s, %5.2f x one row alone), alone %7.2f ms; "
                  "head batched %6.2f ms (%6.1f rows/s, %5.2f x), alone %6.2f ms\n",
                  static_cast<long long>(k), blocks_t.batched * 1e3, rate(blocks_t.batched),
                  rate(blocks_t.batched) * blocks_one, blocks_t.alone * 1e3, head_t.batched * 1e3,
                  rate(head_t.batched), rate(head_t.batched) * head_one, head_t.alone * 1e3);
      out << dtype_name << "," << k << "," << blocks_t.batched * 1e3 << "," << blocks_t.alone * 1e3 << ","
          << head_t.batched * 1e3 << "," << head_t.alone * 1e3 << "\n";
    }
    std::printf("identical bits batched and alone: yes; wrote %s\n", csv.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "batch_forward_bench: %s\n", e.what());
    return 1;
  }
}

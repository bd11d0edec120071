// Prompt and decode speed at batch 1 against the memory-bandwidth roofline, measured in the same
// run: roofline tokens/s = read bandwidth / bytes streamed per token (weights and the key/value
// cache attention reads), the bandwidth being the fastest read this machine does over a buffer of
// those bytes (bench/memory_bandwidth.h); a decode faster than that fails the benchmark. Rows: f32, bf16, LLM.int8(), and int8 on a model
// with outlier feature dimensions; ratios of int8 to f32. Beside each row's fraction (its best
// round against the probe's best pass), the paired fraction: one pass of the fastest read, then
// one decode step, --decode-tokens times, and the median of the steps' speeds over the passes'.
//
//   build/bin/decode_bench [--model-dir DIR] [--preset tinyllama-1.1b] [--prompt-tokens 128]
//                          [--decode-tokens 32] [--rounds 3] [--csv bench/results/decode.csv] [--mmap]
//
// Synthetic checkpoints are written to --model-dir (default /tmp/sepal-bench) when missing.

#include <algorithm>
#include <boost/program_options.hpp>
#include <iostream>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench/memory_bandwidth.h"
#include "kernels/cpu_isa.h"
#include "kernels/parallel.h"
#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/model_ends.h"
#include "model/synthetic_checkpoint.h"

namespace {

using namespace sepal;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Row {
  std::string dtype;
  double weight_bytes, streamed_bytes, prompt_tps, decode_tps, roofline_tps, fraction;
  double paired_fraction;  ///< median over pairs of one probe pass and one decode step
  bench::ReadBandwidth bandwidth;  ///< over a buffer of the streamed bytes
};

Row run(const std::filesystem::path& dir, const WeightLoading& loading, int prompt_tokens,
        int decode_tokens, int rounds, const std::string& label = "") {
  const DType dtype = loading.dtype;
  const ModelConfig config = read_model_config(dir);
  const Checkpoint ckpt = Checkpoint::open(dir);
  const ModelEnds ends = ModelEnds::load(ckpt, config, loading);
  const BlockStack blocks = BlockStack::load(ckpt, config, 0, config.num_layers, loading);
  // Bytes one decode step reads: every block, the final norm and the head (not the embedding
  // table, of which it reads one row), and the keys and values attention reads back (f32, at the
  // decode steps' mean context), in the caches' type.
  const double kv_read = 2.0 * static_cast<double>(dtype_size(loading.kv_dtype)) * static_cast<double>(config.num_layers * config.num_kv_heads * config.head_dim) *
                         (prompt_tokens + decode_tokens / 2.0);
  const double streamed = static_cast<double>(blocks.weight_bytes()) +
                          static_cast<double>(config.vocab_size * config.hidden_size * dtype_size(dtype)) +
                          (dtype == DType::kI8 ? 4.0 * static_cast<double>(config.vocab_size) : 0.0) + kv_read;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(prompt_tokens));
  for (int i = 0; i < prompt_tokens; ++i) ids[i] = 3 + (i * 7919) % static_cast<int>(config.vocab_size - 3);
  std::vector<float> hidden(static_cast<std::size_t>(prompt_tokens) * config.hidden_size);
  std::vector<float> logits(static_cast<std::size_t>(config.vocab_size));

  auto prompt_pass = [&](KvCache& cache) {
    ends.embed(ids.data(), prompt_tokens, hidden.data());
    blocks.forward(hidden.data(), prompt_tokens, cache);
    ends.logits(hidden.data() + (prompt_tokens - 1) * config.hidden_size, 1, logits.data());
  };
  {  // warm-up: faults every weight page in, so the timed runs measure compute and bandwidth
    KvCache warm = blocks.new_cache(prompt_tokens + 2);
    prompt_pass(warm);
  }
  // Rounds of one prompt and decode_tokens steps each, between runs of the bandwidth probe over a
  // buffer as large as what a token streams (a small model's weights may sit partly in the
  // last-level cache; the probe's buffer then does too). The best speeds and the best bandwidth are kept, all taken
  // over the same stretch of time: on a shared machine the bandwidth moves by tens of percent
  // from one minute to the next, and a probe taken at another moment than the decode misjudges it.
  double prompt_tps = 0, decode_tps = 0;
  bench::ReadBandwidth bandwidth;
  bench::ReadProbe reads(static_cast<std::int64_t>(streamed));
  auto probe = [&] {
    const bench::ReadBandwidth b = reads.fastest(2);
    if (b.bytes_per_second > bandwidth.bytes_per_second) bandwidth = b;
  };
  auto decode_step = [&](KvCache& cache, std::int32_t& token, int i) {
    ends.embed(&token, 1, hidden.data());
    blocks.forward(hidden.data(), 1, cache);
    ends.logits(hidden.data(), 1, logits.data());
    token = 3 + (token * 31 + i) % static_cast<int>(config.vocab_size - 3);
  };
  const bool tty = isatty(STDERR_FILENO);
  const std::string name(dtype_name(dtype));
  for (int round = 0; round < rounds; ++round) {
    probe();  // before and after every round
    KvCache cache = blocks.new_cache(prompt_tokens + decode_tokens + 1);
    auto t = Clock::now();
    prompt_pass(cache);
    prompt_tps = std::max(prompt_tps, prompt_tokens / since(t));
    std::int32_t token = 5;
    t = Clock::now();
    for (int i = 0; i < decode_tokens; ++i) {
      decode_step(cache, token, i);
      if (tty) std::fprintf(stderr, "\r  %s round %d/%d, decode %d/%d", name.c_str(), round + 1, rounds, i + 1, decode_tokens);
    }
    const double round_tps = decode_tokens / since(t);
    decode_tps = std::max(decode_tps, round_tps);
    // A log (not a terminal) gets a line a round instead of a rewritten one a token.
    if (!tty) std::fprintf(stderr, "  %s round %d/%d: decode %.1f tokens/s\n", name.c_str(), round + 1, rounds, round_tps);
    probe();
  }
  if (tty) std::fprintf(stderr, "\n");
  // Pairs taken side by side: one pass of the fastest read, then one decode step, each reading a
  // token's bytes once; the median of the steps' speeds over their passes'. Where the machine's
  // speed moves from one second to the next, the best round above is a mean over its minutes
  // and the best probe the best of many short passes; a pair compares the two in the same
  // moment.
  std::vector<double> pair_ratios;
  {
    KvCache cache = blocks.new_cache(prompt_tokens + decode_tokens + 1);
    prompt_pass(cache);
    std::int32_t token = 5;
    for (int i = 0; i < decode_tokens; ++i) {
      const double read = reads.pass(bandwidth);
      const auto t = Clock::now();
      decode_step(cache, token, i);
      pair_ratios.push_back(streamed / since(t) / read);
    }
  }
  std::nth_element(pair_ratios.begin(), pair_ratios.begin() + pair_ratios.size() / 2, pair_ratios.end());
  const double paired = pair_ratios[pair_ratios.size() / 2];
  const double roofline = bandwidth.bytes_per_second / streamed;
  const std::string kv = loading.kv_dtype == DType::kF32 ? "" : " kv-" + std::string(dtype_name(loading.kv_dtype));
  return Row{(label.empty() ? std::string(dtype_name(dtype)) + (loading.in_place ? " mmap" : "") : label) + kv,
             static_cast<double>(ends.weight_bytes() + blocks.weight_bytes()),
             streamed, prompt_tps, decode_tps, roofline, decode_tps / roofline, paired, bandwidth};
}

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string model_dir = "/tmp/sepal-bench", preset = "tinyllama-1.1b", csv = "bench/results/decode.csv";
  int prompt_tokens = 128, decode_tokens = 32, rounds = 3;
  bool mmap_rows = false;
  std::string kv_dtype_text = "f32", rows_text = "f32,bf16,int8,int8-outliers";
  po::options_description options("decode_bench");
  options.add_options()("help,h", "help")
      ("model-dir", po::value(&model_dir), "where synthetic checkpoints live (written if missing)")
      ("preset", po::value(&preset), "synthetic shape")
      ("prompt-tokens", po::value(&prompt_tokens), "prompt length")
      ("decode-tokens", po::value(&decode_tokens), "decode steps per round")
      ("rounds", po::value(&rounds), "rounds of one prompt and the decode steps; the best is kept")
      ("csv", po::value(&csv), "CSV output")
      ("mmap", po::bool_switch(&mmap_rows), "also time f32 and bf16 used in place from the file mapping")
      ("kv-dtype", po::value(&kv_dtype_text), "the key/value caches of every row: f32 or bf16")
      ("rows", po::value(&rows_text), "the rows to run, comma-separated: f32, bf16, int8, int8-outliers (default all)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "decode_bench: error: %s\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << options;
    return 0;
  }
  if (prompt_tokens < 1 || decode_tokens < 1 || rounds < 1) {
    std::fprintf(stderr, "decode_bench: error: --prompt-tokens, --decode-tokens and --rounds must be at least 1\n");
    return 2;
  }
  const auto kv_dtype = parse_dtype(kv_dtype_text);
  if (!kv_dtype || !kv_dtype_supported(*kv_dtype)) {
    std::fprintf(stderr, "decode_bench: error: --kv-dtype must be f32 or bf16, got '%s'\n", kv_dtype_text.c_str());
    return 2;
  }
  const std::vector<std::string> known{"f32", "bf16", "int8", "int8-outliers"};
  std::set<std::string> wanted;
  for (std::size_t at = 0; at <= rows_text.size();) {
    const std::size_t comma = std::min(rows_text.find(',', at), rows_text.size());
    const std::string name = rows_text.substr(at, comma - at);
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::fprintf(stderr, "decode_bench: error: --rows takes f32, bf16, int8 and int8-outliers, not '%s'\n", name.c_str());
      return 2;
    }
    wanted.insert(name);
    at = comma + 1;
  }
  // The loading of a row: weights as `dtype`, caches as --kv-dtype.
  const auto loading = [&](DType dtype, bool in_place = false) {
    WeightLoading l(dtype, in_place);
    l.kv_dtype = *kv_dtype;
    return l;
  };
  const auto spec = synthetic_preset(preset);
  if (!spec) {
    std::fprintf(stderr, "decode_bench: error: unknown preset %s\n", preset.c_str());
    return 2;
  }
  std::printf("decode_bench: preset %s, prompt %d tokens, decode %d tokens, best of %d rounds, %d threads, %s kernels\n",
              preset.c_str(), prompt_tokens, decode_tokens, rounds, compute_threads(),
              std::string(cpu_isa_name(active_cpu_isa())).c_str());

  auto checkpoint = [&](DType dtype, std::int64_t outlier_dims) {
    const auto dir = std::filesystem::path(model_dir) /
                     (preset + "-" + std::string(dtype_name(dtype)) + (outlier_dims ? "-outliers" : ""));
    if (!std::filesystem::exists(dir / "model.safetensors")) {
      SyntheticSpec s = *spec;
      s.dtype = dtype;
      s.outlier_dims = outlier_dims;
      std::fprintf(stderr, "writing synthetic checkpoint %s\n", dir.c_str());
      const bool tty = isatty(STDERR_FILENO);
      write_synthetic_checkpoint(s, dir, [tty](double f) {
        if (tty) std::fprintf(stderr, "\r  %3.0f%%", f * 100);
      });
      if (tty) std::fprintf(stderr, "\n");
    }
    return dir;
  };
  std::vector<Row> rows;
  std::map<std::string, Row> by_name;  // the rows without mmap, for the ratios
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const std::string name(dtype_name(dtype));
    if (!wanted.contains(name)) continue;
    const auto dir = checkpoint(dtype, 0);
    rows.push_back(run(dir, loading(dtype), prompt_tokens, decode_tokens, rounds));
    by_name[name] = rows.back();
    if (mmap_rows) {
      rows.push_back(run(dir, loading(dtype, /*in_place=*/true), prompt_tokens, decode_tokens, rounds));
      by_name[name + " mmap"] = rows.back();
    }
  }
  // LLM.int8(), quantized from the bf16 checkpoint while loading; then a model whose block norms
  // make 8 hidden dimensions outliers, so every projection takes the decomposition's float part.
  if (wanted.contains("int8")) {
    rows.push_back(run(checkpoint(DType::kBF16, 0), loading(DType::kI8), prompt_tokens, decode_tokens, rounds));
    by_name["int8"] = rows.back();
  }
  if (wanted.contains("int8-outliers")) {
    rows.push_back(run(checkpoint(DType::kBF16, 8), loading(DType::kI8), prompt_tokens, decode_tokens, rounds,
                       "int8 outliers"));
    by_name["int8-outliers"] = rows.back();
  }
  const auto both = [&](const char* a, const char* b) { return by_name.contains(a) && by_name.contains(b); };

  std::printf("\n%-14s %10s %14s %10s %10s %22s %12s %9s %7s\n", "dtype", "weights GB", "streamed/token",
              "prompt t/s", "decode t/s", "read GB/s (kernel, thr)", "roofline t/s", "fraction", "paired");
  bool beaten = false, outran = false;
  for (const auto& r : rows) {
    const std::string probe = r.bandwidth.kernel + ", " + std::to_string(r.bandwidth.threads);
    std::printf("%-14s %10.3f %11.3f GB %10.2f %10.2f %8.2f (%-12s) %12.2f %9.3f %7.3f\n", r.dtype.c_str(),
                r.weight_bytes / 1e9, r.streamed_bytes / 1e9, r.prompt_tps, r.decode_tps,
                r.bandwidth.bytes_per_second / 1e9, probe.c_str(), r.roofline_tps, r.fraction, r.paired_fraction);
    beaten = beaten || r.fraction > 1.0;
    outran = outran || r.paired_fraction > 1.0;
  }
  if (beaten) {
    std::printf("decode_bench: a decode read its weights faster than the bandwidth probe: the probe is wrong, "
                "so no fraction above can be trusted\n");
  }
  std::printf("paired: the median, over %d pairs, of a decode step's speed over that of the probe's fastest read "
              "just before it\n", decode_tokens);
  if (outran) {
    std::printf("decode_bench: in the median pair a decode step read faster than the probe's fastest read did "
                "in the same moment: that read may not be this machine's fastest\n");
  }
  if (both("f32", "bf16")) {
    std::printf("bf16 / f32 decode speed: %.2fx", by_name["bf16"].decode_tps / by_name["f32"].decode_tps);
    if (both("f32 mmap", "bf16 mmap")) {
      std::printf(" (huge-page copies), %.2fx (mmap in place)", by_name["bf16 mmap"].decode_tps / by_name["f32 mmap"].decode_tps);
    }
    std::printf("\n");
  }
  if (both("f32", "int8")) {
    const Row &f32 = by_name["f32"], &int8 = by_name["int8"];
    std::printf("\nint8 against f32 (same run): weight bytes %.3f, decode %.2fx, prompt %.2fx\n",
                int8.weight_bytes / f32.weight_bytes, int8.decode_tps / f32.decode_tps, int8.prompt_tps / f32.prompt_tps);
  }
  if (both("int8", "int8-outliers")) {
    const Row &int8 = by_name["int8"], &outliers = by_name["int8-outliers"];
    std::printf("int8 with 8 outlier dimensions against int8 without: decode %.2fx, prompt %.2fx\n",
                outliers.decode_tps / int8.decode_tps, outliers.prompt_tps / int8.prompt_tps);
  }
  std::filesystem::create_directories(std::filesystem::path(csv).parent_path());
  std::ofstream out(csv);
  out << "preset,dtype,threads,bandwidth_gbps,weight_bytes,streamed_bytes_per_token,prompt_tokens_per_s,"
         "decode_tokens_per_s,roofline_tokens_per_s,roofline_fraction,paired_fraction\n";
  for (const auto& r : rows) {
    out << preset << ',' << r.dtype << ',' << compute_threads() << ',' << r.bandwidth.bytes_per_second / 1e9 << ','
        << r.weight_bytes << ',' << r.streamed_bytes << ',' << r.prompt_tps << ',' << r.decode_tps << ','
        << r.roofline_tps << ',' << r.fraction << ',' << r.paired_fraction << '\n';
  }
  std::printf("wrote %s\n", csv.c_str());
  return beaten ? 1 : 0;
}

// The prompt GEMMs against this machine's arithmetic peak (bench/compute_peak.h) and against the
// path prompts took before (the avx2 level: OpenBLAS for f32 and bf16, as Debian's build runs it
// with OPENBLAS_CORETYPE as the environment sets it; int8 in groups of 4 tokens), measured in the
// same run. Products: one block's, as the model runs them (q/k/v together, o, gate/up together,
// down), for 128 tokens, on the stories-110m and tinyllama-1.1b shapes.
//
//   build/bin/gemm_bench [--tokens 128] [--csv bench/results/gemm.csv]
//
// Prints a table and writes the CSV (plot: bench/plot_gemm.py).

#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <vector>

#include "bench/compute_peak.h"
#include "kernels/cpu_isa.h"
#include "kernels/dtype.h"
#include "kernels/matmul.h"
#include "kernels/parallel.h"
#include "kernels/quantize.h"
#include "model/synthetic_checkpoint.h"

namespace {

using namespace sepal;
using Clock = std::chrono::steady_clock;

// One weight matrix in the three dtypes.
struct Matrix {
  std::int64_t rows, cols;
  std::vector<float> f32, scales;
  std::vector<std::uint16_t> bf16;
  std::vector<std::int8_t> i8;

  Matrix(std::int64_t r, std::int64_t c, std::mt19937& rng) : rows(r), cols(c) {
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    f32.resize(static_cast<std::size_t>(r * c));
    for (float& v : f32) v = u(rng);
    for (float v : f32) bf16.push_back(f32_to_bf16(v));
    i8.resize(f32.size());
    for (std::int64_t row = 0; row < r; ++row)
      scales.push_back(quantize_row_i8(f32.data() + row * c, c, i8.data() + row * c));
  }

  WeightView view(DType dtype) const {
    if (dtype == DType::kBF16) return {dtype, rows, cols, bf16.data()};
    if (dtype == DType::kI8) return {dtype, rows, cols, i8.data(), scales.data()};
    return {DType::kF32, rows, cols, f32.data()};
  }
};

// The products of one block: groups of matrices sharing an input.
struct BlockProducts {
  std::vector<std::vector<Matrix>> groups;
  double flops_per_token = 0;
};

BlockProducts block_products(const SyntheticSpec& s, std::mt19937& rng) {
  const std::int64_t h = s.hidden_size, hd = s.head_dim ? s.head_dim : h / s.num_heads;
  const std::int64_t q = s.num_heads * hd, kv = s.num_kv_heads * hd, inter = s.intermediate_size;
  BlockProducts b;
  b.groups.push_back({});
  b.groups.back().emplace_back(q, h, rng);
  b.groups.back().emplace_back(kv, h, rng);
  b.groups.back().emplace_back(kv, h, rng);
  b.groups.push_back({});
  b.groups.back().emplace_back(h, q, rng);
  b.groups.push_back({});
  b.groups.back().emplace_back(inter, h, rng);
  b.groups.back().emplace_back(inter, h, rng);
  b.groups.push_back({});
  b.groups.back().emplace_back(h, inter, rng);
  for (const auto& g : b.groups)
    for (const Matrix& m : g) b.flops_per_token += 2.0 * static_cast<double>(m.rows * m.cols);
  return b;
}

// Seconds for one pass over the block's products (best of `repeats`).
double time_block(const BlockProducts& b, DType dtype, std::int64_t n, CpuIsa isa, int repeats) {
  std::int64_t widest = 0;
  for (const auto& g : b.groups)
    for (const Matrix& m : g) widest = std::max({widest, m.rows, m.cols});
  const std::vector<float> x(static_cast<std::size_t>(n * widest), 0.25f);
  std::vector<std::vector<float>> y;
  for (const auto& g : b.groups)
    for (const Matrix& m : g) y.emplace_back(static_cast<std::size_t>(n * m.rows));
  double best = 1e30;
  for (int r = 0; r < repeats + 1; ++r) {  // the first pass warms up
    const auto start = Clock::now();
    std::size_t out = 0;
    for (const auto& g : b.groups) {
      std::vector<WeightView> ws;
      std::vector<float*> ys;
      for (const Matrix& m : g) {
        ws.push_back(m.view(dtype));
        ys.push_back(y[out++].data());
      }
      matmul_many(x.data(), n, ws, ys, isa);
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (r > 0) best = std::min(best, seconds);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  int tokens = 128;
  std::string csv = "bench/results/gemm.csv";
  po::options_description options("gemm_bench");
  options.add_options()("help,h", "help")("tokens", po::value(&tokens), "tokens per product (a prompt)")(
      "csv", po::value(&csv), "CSV output");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "gemm_bench: error: %s\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << options;
    return 0;
  }
  if (tokens < 1) {
    std::fprintf(stderr, "gemm_bench: error: --tokens must be at least 1\n");
    return 2;
  }
  if (!cpu_supports(CpuIsa::kAvx512)) {
    std::fprintf(stderr, "gemm_bench: error: this CPU lacks AVX-512; the register-tile GEMMs do not run here\n");
    return 2;
  }
  const CpuIsa isa = active_cpu_isa();
  const bench::ComputePeak peak = bench::measure_compute_peak(compute_threads());
  std::printf("gemm_bench: %d tokens, %d threads, %s kernels\n", tokens, compute_threads(),
              std::string(cpu_isa_name(isa)).c_str());
  std::printf("peak: clock %.2f GHz (dependent multiplies), %.2f 512-bit FMA/cycle, %.2f VPDPBUSD/cycle per core",
              peak.clock_hz / 1e9, peak.fma_per_cycle, peak.vnni_per_cycle);
  if (peak.amx_per_cycle > 0)
    std::printf(", 1/%.1f TDPBSSD and 1/%.1f TDPBF16PS/cycle", 1 / peak.amx_per_cycle, 1 / peak.amx_bf16_per_cycle);
  std::printf("; f32 %.0f GFLOP/s = %d threads x %.0f FMA x 16 lanes x 2 x clock; bf16 (%s) %.0f GFLOP/s; "
              "int8 (%s) %.0f GOP/s\n\n",
              peak.f32_flops / 1e9, peak.threads, std::round(peak.fma_per_cycle),
              peak.amx_per_cycle > 0 ? "AMX tiles, a third for three bf16 parts" : "FMA", peak.bf16_flops / 1e9,
              peak.amx_per_cycle > 0 ? "AMX tiles" : "VPDPBUSD", peak.int8_ops / 1e9);
  std::printf("%-15s %-5s %12s %9s %14s %12s %8s\n", "shape", "dtype", "GFLOP/s", "of peak", "baseline GF/s",
              "speedup", "tok/s");
  std::filesystem::create_directories(std::filesystem::path(csv).parent_path());
  std::ofstream out(csv);
  out << "preset,dtype,tokens,threads,gflops,peak_gflops,fraction_of_peak,baseline_gflops,speedup,block_tokens_per_s\n";
  std::mt19937 rng(1);
  for (const char* preset : {"stories-110m", "tinyllama-1.1b"}) {
    const BlockProducts block = block_products(*synthetic_preset(preset), rng);
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kI8}) {
      std::fprintf(stderr, "  %s %s ...\r", preset, std::string(dtype_name(dtype)).c_str());
      const double native = time_block(block, dtype, tokens, isa, 5);
      const double baseline = time_block(block, dtype, tokens, CpuIsa::kAvx2, 3);
      const double flops = block.flops_per_token * tokens;
      const double rate = flops / native, peak_rate = dtype == DType::kI8    ? peak.int8_ops
                                                          : dtype == DType::kBF16 ? peak.bf16_flops
                                                                                  : peak.f32_flops;
      std::printf("%-15s %-5s %12.1f %9.3f %14.1f %11.2fx %8.0f\n", preset, std::string(dtype_name(dtype)).c_str(),
                  rate / 1e9, rate / peak_rate, flops / baseline / 1e9, baseline / native, tokens / native);
      out << preset << ',' << dtype_name(dtype) << ',' << tokens << ',' << compute_threads() << ',' << rate / 1e9 << ','
          << peak_rate / 1e9 << ',' << rate / peak_rate << ',' << flops / baseline / 1e9 << ',' << baseline / native
          << ',' << tokens / native << '\n';
    }
  }
  std::printf("\n(tok/s: tokens per second through one block's products alone; bf16 and int8 against their own peaks)\n");
  std::printf("wrote %s\n", csv.c_str());
  return 0;
}

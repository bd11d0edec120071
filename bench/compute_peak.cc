#include "bench/compute_peak.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kernels/cpu_isa.h"

namespace sepal::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Cycles per second: 64 dependent adds per iteration, one cycle each.
double measure_clock() {
  constexpr long kIterations = 20'000'000;
  double best = 0;
  for (int run = 0; run < 3; ++run) {
    long x = 0;
    const auto start = Clock::now();
    for (long i = 0; i < kIterations; ++i) {
      asm volatile(
          ".rept 64\n\t"
          "addq $1, %0\n\t"
          ".endr"
          : "+r"(x));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, 64.0 * kIterations / seconds);
  }
  return best;
}

constexpr long kRounds = 20'000'000;

// 16 independent chains of one instruction (on zeroed registers: no denormals), in assembly so
// that the compiler can neither spill the chains nor drop them. Instructions per second.
#define SEPAL_PEAK_LOOP(INSTRUCTION)                                                                   \
  long rounds = kRounds;                                                                               \
  const auto start = Clock::now();                                                                     \
  asm volatile(                                                                                        \
      "vpxord %%zmm30, %%zmm30, %%zmm30\n\t"                                                            \
      "vpxord %%zmm31, %%zmm31, %%zmm31\n\t"                                                            \
      ".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"                                               \
      "vpxord %%zmm\\r, %%zmm\\r, %%zmm\\r\n\t"                                                       \
      ".endr\n\t"                                                                                      \
      "1:\n\t"                                                                                         \
      ".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"                                               \
      INSTRUCTION " %%zmm30, %%zmm31, %%zmm\\r\n\t"                                                     \
      ".endr\n\t"                                                                                      \
      "dec %[n]\n\t"                                                                                   \
      "jnz 1b"                                                                                         \
      : [n] "+r"(rounds)                                                                               \
      :                                                                                                \
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
        "xmm12", "xmm13", "xmm14", "xmm15", "xmm30", "xmm31", "cc");                                    \
  return 16.0 * kRounds / std::chrono::duration<double>(Clock::now() - start).count();

__attribute__((target("avx512f"))) double fma_rate() { SEPAL_PEAK_LOOP("vfmadd231ps") }

__attribute__((target("avx512f,avx512vnni"))) double vnni_rate() { SEPAL_PEAK_LOOP("vpdpbusd") }

#undef SEPAL_PEAK_LOOP

template <typename F>
double best_of(F&& f) {
  double best = 0;
  for (int run = 0; run < 3; ++run) best = std::max(best, f());
  return best;
}

}  // namespace

ComputePeak measure_compute_peak(int threads) {
  ComputePeak p;
  p.threads = std::max(1, threads);
  p.clock_hz = measure_clock();
  p.fma_per_cycle = best_of(fma_rate) / p.clock_hz;
  if (cpu_supports(CpuIsa::kAvx512Vnni)) p.vnni_per_cycle = best_of(vnni_rate) / p.clock_hz;
  p.f32_flops = p.threads * std::round(p.fma_per_cycle) * 16 * 2 * p.clock_hz;
  p.int8_ops = p.threads * std::round(p.vnni_per_cycle) * 64 * 2 * p.clock_hz;
  return p;
}

}  // namespace sepal::bench

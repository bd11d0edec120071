#include "bench/compute_peak.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

#include "kernels/cpu_isa.h"

namespace sepal::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Cycles per second: 64 dependent 64-bit multiplies per iteration, three cycles each (their
// latency on every x86-64 core since 2011). A chain of adds of an immediate no longer works: newer
// cores (Golden Cove on) fold several into one cycle.
double measure_clock() {
  constexpr long kIterations = 5'000'000;
  double best = 0;
  for (int run = 0; run < 3; ++run) {
    long x = 1;
    const long one = 1;
    const auto start = Clock::now();
    for (long i = 0; i < kIterations; ++i) {
      asm volatile(
          ".rept 64\n\t"
          "imulq %1, %0\n\t"
          ".endr"
          : "+r"(x)
          : "r"(one));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, 3.0 * 64.0 * kIterations / seconds);
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

// Tile products per second (TDPBSSD, or TDPBF16PS with bf16): six independent accumulator tiles, each 16 x 16 int32, from two tiles of
// zeros (the tiles' throughput, not their latency, bounds it).
template <bool kBf16>
__attribute__((target("amx-tile,amx-int8,amx-bf16"))) double amx_rate() {
  struct alignas(64) {
    std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
    std::uint16_t bytes_per_line[16] = {64, 64, 64, 64, 64, 64, 64, 64};
    std::uint8_t lines[16] = {16, 16, 16, 16, 16, 16, 16, 16};
  } config;
  alignas(64) static const std::int8_t zeros[16 * 64] = {};
  constexpr long kTileRounds = kRounds / 20;
  _tile_loadconfig(&config);
  _tile_loadd(6, zeros, 64);
  _tile_loadd(7, zeros, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(5);
  const auto start = Clock::now();
  for (long r = 0; r < kTileRounds; ++r) {
    if constexpr (kBf16) {
      _tile_dpbf16ps(0, 6, 7);
    } else {
      _tile_dpbssd(0, 6, 7);
    }
    if constexpr (kBf16) {
      _tile_dpbf16ps(1, 6, 7);
    } else {
      _tile_dpbssd(1, 6, 7);
    }
    if constexpr (kBf16) {
      _tile_dpbf16ps(2, 6, 7);
    } else {
      _tile_dpbssd(2, 6, 7);
    }
    if constexpr (kBf16) {
      _tile_dpbf16ps(3, 6, 7);
    } else {
      _tile_dpbssd(3, 6, 7);
    }
    if constexpr (kBf16) {
      _tile_dpbf16ps(4, 6, 7);
    } else {
      _tile_dpbssd(4, 6, 7);
    }
    if constexpr (kBf16) {
      _tile_dpbf16ps(5, 6, 7);
    } else {
      _tile_dpbssd(5, 6, 7);
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  _tile_release();
  return 6.0 * kTileRounds / seconds;
}

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
  p.bf16_flops = p.f32_flops;
  p.int8_ops = p.threads * std::round(p.vnni_per_cycle) * 64 * 2 * p.clock_hz;
  if (active_cpu_isa() >= CpuIsa::kAmx) {
    p.amx_per_cycle = best_of(amx_rate<false>) / p.clock_hz;
    p.amx_bf16_per_cycle = best_of(amx_rate<true>) / p.clock_hz;
    // One TDPBSSD: 16 x 16 outputs of 64 products each; cores issue one every 16 cycles.
    p.int8_ops = p.threads * std::round(p.amx_per_cycle * 16) / 16 * 16 * 16 * 64 * 2 * p.clock_hz;
    // One TDPBF16PS: 16 x 16 outputs of 32 products; an f32 activation takes three of them.
    p.bf16_flops = p.threads * std::round(p.amx_bf16_per_cycle * 16) / 16 * 16 * 16 * 32 * 2 * p.clock_hz / 3;
  }
  return p;
}

}  // namespace sepal::bench

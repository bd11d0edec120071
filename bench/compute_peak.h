#pragma once
// This machine's arithmetic peak, from its parts, each measured: the clock (a chain of dependent
// integer multiplies, three cycles each), how many 512-bit FMAs (and VNNI int8 dot products, or
// AMX int8 tile products where the kernels use AMX) a core issues per cycle (independent chains,
// best of a few runs), the vector width (16 f32 lanes; 64 int8 products per VPDPBUSD lane group;
// 16 x 16 x 64 per TDPBSSD) and the thread count. The peak is their product, so a GEMM's
// fraction of it says how much of the machine the kernel uses.
//
// Thread-safety: call from one thread; it starts threads of its own.

namespace sepal::bench {

struct ComputePeak {
  double clock_hz = 0;            ///< one core, measured with the others idle
  double fma_per_cycle = 0;       ///< 512-bit FMAs per cycle per core
  double vnni_per_cycle = 0;      ///< 512-bit VPDPBUSD per cycle per core (0 without VNNI)
  double amx_per_cycle = 0;       ///< TDPBSSD per cycle per core (0 where the kernels do not use AMX)
  double amx_bf16_per_cycle = 0;  ///< TDPBF16PS per cycle per core (likewise)
  int threads = 0;                ///< the kernels' threads
  double f32_flops = 0;           ///< threads × round(fma_per_cycle) × 16 lanes × 2 × clock
  double int8_ops = 0;            ///< threads × round(vnni_per_cycle) × 64 products × 2 × clock, or with
                                  ///< AMX threads × amx_per_cycle (to 1/16) × 16 × 16 × 64 × 2 × clock
  double bf16_flops = 0;          ///< f32_flops, or with AMX threads × amx_bf16_per_cycle (to 1/16) ×
                                  ///< 16 × 16 × 32 × 2 × clock / 3 (three bf16 parts per activation)
};

/// Measures the peak with `threads` threads (AVX-512 F required; VNNI optional).
ComputePeak measure_compute_peak(int threads);

}  // namespace sepal::bench

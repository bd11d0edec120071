#pragma once
// The x86-64 instruction-set levels the CPU kernels are compiled for, and which one this machine
// runs. One binary carries every level; the best supported one is chosen at run time.

#include <optional>
#include <string_view>

#include "kernels/dtype.h"

namespace sepal {

/// A level of CPU kernels, in increasing order of capability.
enum class CpuIsa {
  kGeneric,
  kAvx2,
  kAvx512,      ///< AVX-512 F/BW/VL/DQ
  kAvx512Vnni,  ///< and VNNI (int8 dot products into int32)
  kAmx,         ///< and AMX tiles with int8 and bf16 (prompts' int8 products, the same bits as
                ///< kAvx512Vnni's without outlier columns; their outlier parts, bf16 products
                ///< and training gradients, rounded differently)
};

/// Name of a level ("generic", "avx2", "avx512", "avx512vnni", "amx").
std::string_view cpu_isa_name(CpuIsa isa);

/// Parses a level name; nullopt when unknown.
std::optional<CpuIsa> parse_cpu_isa(std::string_view name);

/// True when this CPU (and OS) can run kernels of the given level. For kAmx the process asks
/// Linux for the tile state once (arch_prctl ARCH_REQ_XCOMP_PERM); a refusal means no.
bool cpu_supports(CpuIsa isa);

/// The lowest level whose kernels give the same bits as `isa`'s for weights of type `weights`,
/// in inference and in training: what a host announces as its numerics, so that replicas on
/// machines with and without AMX count as alike where they are. With f32 weights kAmx computes
/// what kAvx512Vnni does; with bf16 ones its products round differently, and with int8 ones its
/// prompts have the VNNI bits where no column is an outlier, but their outlier parts and its
/// training gradients do not.
CpuIsa numerics_level(CpuIsa isa, DType weights);

/// The level the kernels use: the best supported one, or a lower one named by the environment
/// variable SEPAL_CPU_ISA (read once; a level the CPU lacks is ignored). Thread-safe.
CpuIsa active_cpu_isa();

}  // namespace sepal

#include "kernels/cpu_isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

namespace sepal {

std::string_view cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kGeneric:
      return "generic";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx512Vnni:
      return "avx512vnni";
    case CpuIsa::kAmx:
      return "amx";
  }
  return "?";
}

std::optional<CpuIsa> parse_cpu_isa(std::string_view name) {
  if (name == "generic") return CpuIsa::kGeneric;
  if (name == "avx2") return CpuIsa::kAvx2;
  if (name == "avx512") return CpuIsa::kAvx512;
  if (name == "avx512vnni") return CpuIsa::kAvx512Vnni;
  if (name == "amx") return CpuIsa::kAmx;
  return std::nullopt;
}

namespace {
// CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports does not know "f16c").
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
}

// CPUID leaf 7: EDX bits 22 (AMX-BF16), 24 (AMX-TILE) and 25 (AMX-INT8), ECX bit 6
// (AVX512-VBMI2, whose byte compression gathers int8 prompts' outlier weights), and in sub-leaf 1
// EAX bit 5 (AVX512-BF16, for splitting activations into bf16 parts); and Linux's permission to
// use the tile data (asked once; Linux 5.16 and later enable it per process on request). Every
// CPU with AMX so far has them all.
bool amx_usable() {
  static const bool usable = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    constexpr unsigned kAmxBits = (1u << 22) | (1u << 24) | (1u << 25);
    if ((edx & kAmxBits) != kAmxBits || (ecx & (1u << 6)) == 0) return false;
    if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) || (eax & (1u << 5)) == 0) return false;
#if defined(__linux__) && defined(SYS_arch_prctl)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtileData = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) == 0;
#else
    return false;
#endif
  }();
  return usable;
}
}  // namespace

bool cpu_supports(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kGeneric:
      return true;
    case CpuIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case CpuIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case CpuIsa::kAvx512Vnni:
      return cpu_supports(CpuIsa::kAvx512) && __builtin_cpu_supports("avx512vnni");
    case CpuIsa::kAmx:
      return cpu_supports(CpuIsa::kAvx512Vnni) && amx_usable();
  }
  return false;
}

CpuIsa numerics_level(CpuIsa isa, DType weights) {
  return isa == CpuIsa::kAmx && weights == DType::kF32 ? CpuIsa::kAvx512Vnni : isa;
}

namespace {
CpuIsa detect_active_isa() {
  CpuIsa best = CpuIsa::kGeneric;
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni, CpuIsa::kAmx}) {
    if (cpu_supports(isa)) best = isa;
  }
  if (const char* requested = std::getenv("SEPAL_CPU_ISA")) {
    if (auto isa = parse_cpu_isa(requested); isa && cpu_supports(*isa) && *isa < best) best = *isa;
  }
  return best;
}
}  // namespace

CpuIsa active_cpu_isa() {
  static const CpuIsa isa = detect_active_isa();
  return isa;
}

}  // namespace sepal

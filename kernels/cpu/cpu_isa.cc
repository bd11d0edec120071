#include "kernels/cpu_isa.h"

#include <cpuid.h>

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
  }
  return "?";
}

std::optional<CpuIsa> parse_cpu_isa(std::string_view name) {
  if (name == "generic") return CpuIsa::kGeneric;
  if (name == "avx2") return CpuIsa::kAvx2;
  if (name == "avx512") return CpuIsa::kAvx512;
  if (name == "avx512vnni") return CpuIsa::kAvx512Vnni;
  return std::nullopt;
}

namespace {
// CPUID leaf 1, ECX bit 29 (clang's __builtin_cpu_supports does not know "f16c").
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
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
  }
  return false;
}

namespace {
CpuIsa detect_active_isa() {
  CpuIsa best = CpuIsa::kGeneric;
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAvx512Vnni}) {
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

#include "kernels/cpu/stream_prefetch.h"

#include <cpuid.h>

#include <cstring>

namespace sepal::cpu {
namespace {

// CPUID leaf 0 names the make in EBX, EDX, ECX (Hygon's are Zen cores too).
bool made_by_amd() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
  char vendor[12];
  std::memcpy(vendor, &ebx, 4);
  std::memcpy(vendor + 4, &edx, 4);
  std::memcpy(vendor + 8, &ecx, 4);
  return std::memcmp(vendor, "AuthenticAMD", 12) == 0 || std::memcmp(vendor, "HygonGenuine", 12) == 0;
}

}  // namespace

StreamPrefetch stream_prefetch() {
  static const StreamPrefetch how = made_by_amd() ? StreamPrefetch{true, 4096} : StreamPrefetch{false, 8192};
  return how;
}

}  // namespace sepal::cpu

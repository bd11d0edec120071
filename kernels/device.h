#pragma once
// Where a computation runs: the CPU, or one CUDA GPU. A plain value, chosen at run time
// (`--device cpu|cuda[:N]`); what a device can do is asked of its backend (kernels/backend.h),
// never decided by #ifdef in callers.
//
// All functions are pure and thread-safe.

#include <string>
#include <string_view>

namespace sepal {

enum class DeviceKind : unsigned char { kCpu, kCuda };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  ///< which GPU (cuda only)

  bool is_cpu() const { return kind == DeviceKind::kCpu; }
  friend bool operator==(const Device&, const Device&) = default;
};

/// "cpu", "cuda:0", ...
std::string device_name(const Device& device);

/// Parses "cpu", "cuda" (GPU 0) or "cuda:N". Throws sepal::Error in one line naming the text
/// otherwise.
Device parse_device(std::string_view text);

}  // namespace sepal

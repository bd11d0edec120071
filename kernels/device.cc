#include "kernels/device.h"

#include <charconv>

#include "kernels/error.h"

namespace sepal {

std::string device_name(const Device& device) {
  return device.is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(device.index);
}

Device parse_device(std::string_view text) {
  if (text == "cpu") return Device{};
  if (text == "cuda") return Device{DeviceKind::kCuda, 0};
  if (text.starts_with("cuda:")) {
    const std::string_view digits = text.substr(5);
    int index = -1;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (error == std::errc() && end == digits.data() + digits.size() && !digits.empty() && index >= 0 && index < 1024) {
      return Device{DeviceKind::kCuda, index};
    }
  }
  fail("unknown device \"", text, "\": expected cpu, cuda or cuda:N (N a GPU's index)");
}

}  // namespace sepal

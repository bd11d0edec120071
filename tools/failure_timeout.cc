#include "tools/failure_timeout.h"

#include <cmath>
#include <cstdint>

#include "tools/commands.h"

namespace sepal::tools {

void check_failure_timeout(double seconds) {
  // Under half a second the 100 ms keepalives and a busy node's scheduling delays make false
  // failures; over an hour a hung host would hold its sessions for good.
  if (!std::isfinite(seconds) || seconds < 0.5 || seconds > 3600) {
    throw UsageError{"--failure-timeout must be a number of seconds from 0.5 to 3600"};
  }
}

std::chrono::milliseconds failure_timeout_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(seconds * 1000)));
}

}  // namespace sepal::tools

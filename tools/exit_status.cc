#include "tools/exit_status.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace sepal::tools {

bool join_failure_may_pass(const Status& status) {
  switch (status.code()) {
    case StatusCode::kTimeout:
    case StatusCode::kPeerFailed:
    case StatusCode::kUnavailable:
      return true;
    default:
      return false;
  }
}

std::chrono::milliseconds join_timeout_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::min(seconds, 86400.0) * 1000));
}

int exit_try_again(const char* command, const std::string& message) {
  std::fprintf(stderr, "sepal %s: error: %s (exit status %d: a new try may succeed)\n", command, message.c_str(),
               kExitTryAgain);
  return kExitTryAgain;
}

}  // namespace sepal::tools

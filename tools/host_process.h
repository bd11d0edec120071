#pragma once
// A block host process: loads the blocks the balancer assigns, serves them, follows moves, and
// ends when the client says so, when the client's process (peer 0) is gone, or, gracefully, on
// SIGTERM or SIGINT (it tells the balancer, refuses new work, and leaves the membership).

#include <string>

#include "model/weights.h"
#include "tools/swarm_process.h"

namespace sepal::tools {

struct HostSettings {
  std::string model_dir;
  WeightLoading loading{DType::kF32};
  std::int64_t max_blocks = 0;  ///< 0: every block
  double throughput = 0;        ///< 0: measure
  std::int64_t cache_budget_bytes = std::int64_t{2} << 30;
  std::int64_t max_sessions_per_client = 64;
  std::int64_t max_cache_bytes_per_client = 0;  ///< 0: half of the budget
  std::int64_t max_step_tokens = 4096;
};

/// Serves until the swarm ends; returns the process exit code.
int run_host(SwarmProcess& swarm, const HostSettings& settings);

}  // namespace sepal::tools

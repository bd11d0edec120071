#pragma once
// --failure-timeout, shared by the commands that run swarm nodes (generate, perplexity, tune and
// serve-api through tools/swarm_flags.h; serve): how long a peer may be silent before this
// process takes it for dead.

#include <chrono>

namespace sepal::tools {

/// Throws UsageError unless `seconds` is a number from 0.5 to 3600.
void check_failure_timeout(double seconds);
/// The checked value as milliseconds.
std::chrono::milliseconds failure_timeout_ms(double seconds);

}  // namespace sepal::tools

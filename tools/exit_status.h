#pragma once
// Exit statuses of the sepal command besides 0 (done), 1 (an error) and 2 (bad usage).

#include <chrono>
#include <string>

#include "runtime/status.h"

namespace sepal::tools {

/// EX_TEMPFAIL (sysexits.h): this run stopped, and a new run may succeed. `sepal tune` exits with
/// it when a signal stopped it after a checkpoint (Slurm requeues the job); `sepal serve --join`
/// and `sepal status` when joining a swarm failed for a passing reason, and the slurm/ scripts
/// start them again.
inline constexpr int kExitTryAgain = 75;

/// Whether a failure to join a swarm may pass in a new process: a timeout, a failed link, an MPI
/// error on the way (a process's broken MPI connection to the swarm is not mended in-process).
/// A refusal (a wrong secret), bad input and a bad model are not.
bool join_failure_may_pass(const Status& status);

/// --join-timeout's seconds (checked above 0) as milliseconds, at most a day.
std::chrono::milliseconds join_timeout_ms(double seconds);

/// Prints "sepal CMD: error: MESSAGE" and says that a new try may succeed; returns kExitTryAgain.
int exit_try_again(const char* command, const std::string& message);

}  // namespace sepal::tools

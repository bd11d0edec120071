#pragma once
// The `--threads` flag every model command takes: how many threads the CPU kernels use.

namespace sepal::tools {

/// The most `--threads` accepts: far above any CPU count a process is given, low enough that a
/// typo (an extra digit) is refused in one line instead of failing to start thousands of threads.
inline constexpr int kMaxThreadsFlag = 1024;

/// Checks `threads` (0: every CPU this process may use, else 1 to kMaxThreadsFlag) and sets the
/// kernels' thread count. Throws UsageError for a value out of range.
void apply_threads_flag(int threads);

}  // namespace sepal::tools

#include "tools/thread_flag.h"

#include <string>

#include "kernels/parallel.h"
#include "tools/commands.h"

namespace sepal::tools {

void apply_threads_flag(int threads) {
  if (threads < 0 || threads > kMaxThreadsFlag) {
    throw UsageError{"--threads must be between 0 (every CPU) and " + std::to_string(kMaxThreadsFlag) + ", got " +
                     std::to_string(threads)};
  }
  if (threads > 0) set_compute_threads(threads);
}

}  // namespace sepal::tools

#pragma once
// Minimal logging for the runtime and actors: one line per event, to stderr, with the process's
// peer id, logged once where a problem is detected (UCX's logging rule). The threshold comes from
// SEPAL_LOG=debug|info|warn|error (default warn); SEPAL_LOG_TIME=1 starts each line with the time.
//
// Thread-safety: log lines from different threads do not interleave.

#include <sstream>
#include <string>

namespace sepal {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

/// Whether messages of `level` are printed.
bool log_enabled(LogLevel level);
/// Prints one line.
void log_line(LogLevel level, const std::string& line);
/// Sets the prefix naming this process (e.g. "rank 2"), once it is known.
void set_log_prefix(const std::string& prefix);

template <typename... Args>
void log(LogLevel level, const Args&... parts) {
  if (!log_enabled(level)) return;
  std::ostringstream out;
  (out << ... << parts);
  log_line(level, out.str());
}

}  // namespace sepal

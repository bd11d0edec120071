#include "runtime/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

#include <sys/time.h>

namespace sepal {
namespace {

std::mutex g_mutex;
std::string g_prefix;

LogLevel threshold() {
  static const LogLevel level = [] {
    const char* v = std::getenv("SEPAL_LOG");
    if (!v) return LogLevel::kWarn;
    if (!std::strcmp(v, "debug")) return LogLevel::kDebug;
    if (!std::strcmp(v, "info")) return LogLevel::kInfo;
    if (!std::strcmp(v, "error")) return LogLevel::kError;
    return LogLevel::kWarn;
  }();
  return level;
}

// SEPAL_LOG_TIME=1: each line starts with the wall-clock time (UTC, to the millisecond), so the
// logs of several processes can be laid side by side.
bool timestamps() {
  static const bool on = [] {
    const char* v = std::getenv("SEPAL_LOG_TIME");
    return v && !std::strcmp(v, "1");
  }();
  return on;
}

// "HH:MM:SS.mmm " or "".
std::string time_prefix() {
  if (!timestamps()) return {};
  timeval now{};
  gettimeofday(&now, nullptr);
  tm utc{};
  gmtime_r(&now.tv_sec, &utc);
  char text[32];
  std::snprintf(text, sizeof(text), "%02d:%02d:%02d.%03d ", utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(now.tv_usec / 1000));
  return text;
}

}  // namespace

bool log_enabled(LogLevel level) { return level >= threshold(); }

void set_log_prefix(const std::string& prefix) {
  std::lock_guard lock(g_mutex);
  g_prefix = prefix;
}

void log_line(LogLevel level, const std::string& line) {
  static const char* names[] = {"debug", "info", "warn", "error"};
  const std::string time = time_prefix();
  std::lock_guard lock(g_mutex);
  std::fprintf(stderr, "%ssepal%s%s [%s] %s\n", time.c_str(), g_prefix.empty() ? "" : " ", g_prefix.c_str(),
               names[static_cast<int>(level)], line.c_str());
}

}  // namespace sepal

#include "runtime/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

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

}  // namespace

bool log_enabled(LogLevel level) { return level >= threshold(); }

void set_log_prefix(const std::string& prefix) {
  std::lock_guard lock(g_mutex);
  g_prefix = prefix;
}

void log_line(LogLevel level, const std::string& line) {
  static const char* names[] = {"debug", "info", "warn", "error"};
  std::lock_guard lock(g_mutex);
  std::fprintf(stderr, "sepal%s%s [%s] %s\n", g_prefix.empty() ? "" : " ", g_prefix.c_str(),
               names[static_cast<int>(level)], line.c_str());
}

}  // namespace sepal

#pragma once
// Errors of the numerical layers (kernels/, model/): preconditions are checked and a violated one
// throws sepal::Error. The message is one line a user can act on; SEPAL_CHECK adds file and line
// because a failed internal invariant is a bug to report, not an input to fix.

#include <sstream>
#include <stdexcept>
#include <string>

namespace sepal {

/// An error the caller can report as one line; thrown by kernels/ and model/.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
[[noreturn]] void throw_check_failure(const char* file, int line, const char* condition,
                                      const std::string& message);
}  // namespace detail

/// Throws sepal::Error with the concatenation of the arguments.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::concat(args...));
}

}  // namespace sepal

/// Checks an internal invariant; on failure throws sepal::Error naming file, line and condition.
#define SEPAL_CHECK(condition, ...)                                                  \
  do {                                                                               \
    if (!(condition)) [[unlikely]] {                                                 \
      ::sepal::detail::throw_check_failure(__FILE__, __LINE__, #condition,           \
                                           ::sepal::detail::concat("" __VA_ARGS__)); \
    }                                                                                \
  } while (false)

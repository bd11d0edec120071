#pragma once
// Errors as values for the runtime and the actors: every fallible call returns Status or
// Result<T>; nothing in runtime/ throws across its interface.
//
// Thread-safety: values; safe to copy and move between threads.

#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <variant>

namespace sepal {

/// What kind of failure a Status reports.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    ///< the caller asked for something impossible
  kMalformed,          ///< bytes from outside do not decode
  kNotFound,           ///< no such actor, session, peer
  kTimeout,            ///< no answer in time
  kPeerFailed,         ///< the peer died or its link is down
  kUnavailable,        ///< transient: retry later
  kRefused,            ///< the other side said no (auth, budget)
  kResourceExhausted,  ///< memory or capacity limit
  kCancelled,          ///< shut down before completion
  kInternal,           ///< a bug
  kFailedPrecondition, ///< the receiver lacks state the request relies on (send it again in full)
};
/// The highest code (codes from outside above it are malformed).
inline constexpr StatusCode kLastStatusCode = StatusCode::kFailedPrecondition;

/// Name of a code, e.g. "timeout".
const char* status_code_name(StatusCode code);

/// Success, or a code with a one-line message.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "code: message", or "ok".
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

/// Builds a Status from streamed parts: error(StatusCode::kTimeout, "no reply from ", peer).
template <typename... Args>
Status error(StatusCode code, const Args&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return Status(code, out.str());
}

/// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : state_(std::move(status)) {}  // NOLINT

  bool is_ok() const { return std::holds_alternative<T>(state_); }
  /// The error; Status::ok() when there is a value.
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(state_); }
  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace sepal

/// Returns the Status of `expr` from the enclosing function when it is not ok.
#define SEPAL_RETURN_IF_ERROR(expr)            \
  do {                                         \
    ::sepal::Status sepal_status_ = (expr);    \
    if (!sepal_status_.is_ok()) return sepal_status_; \
  } while (false)

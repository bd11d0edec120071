#include "runtime/status.h"

namespace sepal {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kMalformed: return "malformed";
    case StatusCode::kNotFound: return "not found";
    case StatusCode::kTimeout: return "timeout";
    case StatusCode::kPeerFailed: return "peer failed";
    case StatusCode::kUnavailable: return "unavailable";
    case StatusCode::kRefused: return "refused";
    case StatusCode::kResourceExhausted: return "resource exhausted";
    case StatusCode::kCancelled: return "cancelled";
    case StatusCode::kInternal: return "internal";
    case StatusCode::kFailedPrecondition: return "failed precondition";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

}  // namespace sepal

#include "kernels/error.h"

namespace sepal::detail {

void throw_check_failure(const char* file, int line, const char* condition,
                         const std::string& message) {
  throw Error(concat("internal check failed at ", file, ":", line, ": ", condition,
                     message.empty() ? "" : ": ", message));
}

}  // namespace sepal::detail

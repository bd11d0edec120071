#pragma once
// Softmax and its log-domain companions over one vector.

#include <cstdint>

namespace sepal {

/// x = softmax(x) in place (max-subtracted; a row of -inf stays finite only if one entry is finite).
void softmax(float* x, std::int64_t count);

/// log(sum(exp(x))) computed stably in double precision.
double log_sum_exp(const float* x, std::int64_t count);

}  // namespace sepal

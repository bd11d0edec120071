#pragma once
// Softmax and its log-domain companions over one vector.

#include <cstdint>

namespace sepal {

/// x = softmax(x) in place (max-subtracted; a row of -inf stays finite only if one entry is finite).
void softmax(float* x, std::int64_t count);

/// log(sum(exp(x))): the maximum m, then Σ exp(x[i] - m) summed in double, m + log of it. With
/// AVX-512 the exponentials are f32 ones within 2 ulp (a vocabulary-wide row, as perplexity and
/// the training loss take one a token, in a tenth of the time of libm's); without, double. A row
/// of -inf gives -inf; a NaN gives NaN.
double log_sum_exp(const float* x, std::int64_t count);

/// x[i] = scale * exp(x[i] - shift) for i < count, in place: with shift = log_sum_exp(x), the
/// softmax scaled (the gradient of a cross-entropy loss but for its target's -scale).
void exp_shifted(float* x, std::int64_t count, double shift, float scale);

}  // namespace sepal

#pragma once
// Int8 quantization used by LLM.int8() weights and activations.
//
// Vector-wise (absmax) quantization of a row v of length n: scale = max|v| / 127 and
// q[i] = round(v[i] / scale), so q lies in [-127, 127] and v[i] ≈ q[i] * scale. An all-zero row
// has scale 0. Weights are quantized once per output row at load; activations per token at run
// time (kernels/matmul.h).
//
// Thread-safety: pure functions.

#include <cstdint>
#include <string>

#include "kernels/cpu_isa.h"

namespace sepal {

/// Default magnitude from which an activation's input column is an outlier (LLM.int8()'s 6.0).
inline constexpr float kDefaultOutlierThreshold = 6.0f;

/// Quantizes v[0, n) into q and returns the scale. Non-finite input throws sepal::Error. The
/// same bytes and scale at every CPU level (AVX-512 sixteen values at a time, the scalar code
/// below it); the first form uses the active level.
float quantize_row_i8(const float* v, std::int64_t n, std::int8_t* q);
float quantize_row_i8(const float* v, std::int64_t n, std::int8_t* q, CpuIsa isa);

/// out[i] = q[i] * scale.
void dequantize_row_i8(const std::int8_t* q, std::int64_t n, float scale, float* out);

/// Checks quantized weights that came from outside (a file or a message): `scale_count` scales
/// for `rows` rows, each finite and >= 0. Returns an empty string when they are valid, otherwise
/// a one-line description naming `what` and the first problem.
std::string check_quantized_scales(const std::string& what, std::int64_t rows, const float* scales,
                                   std::int64_t scale_count);

}  // namespace sepal

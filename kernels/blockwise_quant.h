#pragma once
// Blockwise dynamic 8-bit quantization, for hidden states on the wire (as Petals sends them).
//
// A row of values is cut into blocks of kBlockwiseBlock values (the last may be shorter); each
// block keeps its absmax as an f32, and each value becomes the index of the nearest entry of the
// dynamic code: 256 increasing values in [-1, 1] holding 0, ±1 and, for each decimal exponent
// e = -6..0, 2^(e+6) magnitudes 10^e · m spread linearly over m in [0.1, 1] (the midpoints of
// equal intervals). Small values thus keep their relative precision inside a block that also holds
// large ones. The negative side lacks the single smallest magnitude, 0.55e-6, to make room for -1.
//
// Quantizing a dequantized row gives back the same codes, so a value that crosses several hops
// is not degraded at each one.
//
// Thread-safety: pure functions.

#include <array>
#include <cstdint>

#include "kernels/cpu_isa.h"

namespace sepal {

/// Values per block (one f32 absmax each).
inline constexpr std::int64_t kBlockwiseBlock = 256;

/// The 256 code values, increasing.
const std::array<float, 256>& dynamic_code();

/// Blocks in a row of n values.
constexpr std::int64_t blockwise_blocks(std::int64_t n) { return (n + kBlockwiseBlock - 1) / kBlockwiseBlock; }

/// Quantizes x[0, n) into codes[0, n) and absmax[0, blockwise_blocks(n)). Throws sepal::Error
/// when x holds NaN or infinity. Every CPU level gives the same codes; `isa` picks the kernels
/// (the active level by default).
void quantize_blockwise(const float* x, std::int64_t n, std::uint8_t* codes, float* absmax);
void quantize_blockwise(const float* x, std::int64_t n, std::uint8_t* codes, float* absmax, CpuIsa isa);

/// out[i] = code[codes[i]] * absmax[block of i]. The absmax values must be finite and >= 0
/// (check them first when they came from outside).
void dequantize_blockwise(const std::uint8_t* codes, const float* absmax, std::int64_t n, float* out);

}  // namespace sepal

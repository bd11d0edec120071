#pragma once
// FP8 checkpoints, their weights in F8_E4M3 (1 sign, 4 exponent bits of bias 7, 3 mantissa
// bits; no infinities, S.1111.111 is NaN), a weight X of [rows, cols] being fp8(x) × its scale:
//   - transformers' fine-grained FP8 (quantization_config {"quant_method": "fp8",
//     "weight_block_size": [BH, BW]}: DeepSeek-V3 and R1, Qwen3's -FP8 releases):
//     X_scale_inv [ceil(rows / BH), ceil(cols / BW)], a scale per BH × BW block;
//   - compressed-tensors' float-quantized FP8 (llm-compressor's FP8 and FP8-dynamic models):
//     X_scale [rows, 1], a scale per row, or one scale for the tensor.
// Scales are F32, BF16 or F16.
//
// Thread-safety: pure functions of their arguments.

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "model/safetensors.h"

namespace sepal {

/// The block size {BH, BW} of a quantization_config's "weight_block_size" ({128, 128} when it has
/// none). Throws sepal::Error naming `where` unless it is two whole numbers from 1 to 65536.
std::array<std::int64_t, 2> fp8_weight_block_size(const nlohmann::json& quantization_config, const std::string& where);

/// The value of E4M3 byte `code` (NaN for 0x7F and 0xFF).
float fp8_e4m3_value(std::uint8_t code);

/// Replaces each F8_E4M3 tensor X of `tensors` (TensorRef::float8) and its scales (X_scale_inv,
/// in blocks of `block_size` {BH, BW}; else X_scale) with X dequantized: f32 [rows, cols],
/// computed when X is first asked for (an entry of `conversions`). Throws sepal::Error naming
/// `where` and the tensor for a weight without its scales or block scales without their weight,
/// a weight that is not a matrix, scales whose shape does not fit it, or (when converted) a NaN or
/// an infinity.
void unpack_fp8_tensors(std::map<std::string, TensorRef>& tensors,
                        std::map<std::string, Checkpoint::Conversion>& conversions,
                        std::array<std::int64_t, 2> block_size, const std::string& where);

}  // namespace sepal

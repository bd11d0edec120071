#pragma once
// FP8 checkpoints as transformers' fine-grained FP8 writes them (quantization_config
// {"quant_method": "fp8", "weight_block_size": [BH, BW]}: DeepSeek-V3 and R1, Qwen3's -FP8
// releases): a weight X of [rows, cols] stored as X in F8_E4M3 (1 sign, 4 exponent bits of bias
// 7, 3 mantissa bits; no infinities, S.1111.111 is NaN) and X_scale_inv [ceil(rows / BH),
// ceil(cols / BW)] (F32, BF16 or F16), one scale per BH × BW block: the weight is fp8(x) × scale.
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

/// Replaces each F8_E4M3 tensor X of `tensors` (TensorRef::float8) and its X_scale_inv with X as
/// transformers dequantizes it: f32 [rows, cols], fp8(x) × the scale of its block of
/// `block_size` {BH, BW}, computed when X is first asked for (an entry of `conversions`). Throws
/// sepal::Error naming `where` and the tensor for a weight without its scales or scales without
/// their weight, a weight that is not a matrix, scales whose shape does not cover it in blocks
/// of `block_size`, or (when converted) a NaN.
void unpack_fp8_tensors(std::map<std::string, TensorRef>& tensors,
                        std::map<std::string, Checkpoint::Conversion>& conversions,
                        std::array<std::int64_t, 2> block_size, const std::string& where);

}  // namespace sepal

#pragma once
// MXFP4 (the OCP microscaling format): groups of 32 FP4 (E2M1) values sharing one power-of-two
// scale. GPT-OSS's released checkpoints hold their experts this way, as transformers writes them:
// a tensor X stored as X_blocks [..., rows, G, 16] (bytes of two values each, the lower nibble the
// first) and X_scales [..., rows, G] (E8M0: the scale is 2^(byte - 127)), each row G · 32 values.
//
// Thread-safety: pure functions of their arguments.

#include <cstdint>
#include <map>
#include <string>

#include "model/safetensors.h"

namespace sepal {

/// The value of FP4 code `nibble` (0 to 15): ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}, the sign its high bit.
float fp4_value(std::uint8_t nibble);

/// Replaces each pair X_blocks, X_scales of `tensors` (their bytes read as unsigned) with X as
/// transformers dequantizes it: bf16 [experts, G · 32, rows], each matrix transposed (the layout of
/// GPT-OSS's bf16 checkpoints), its values computed when X is first asked for (an entry of
/// `conversions`). Throws sepal::Error naming `where` and the tensor for a half of a pair, shapes
/// that disagree, or a tensor that is not three-dimensional once unpacked.
void unpack_mxfp4_tensors(std::map<std::string, TensorRef>& tensors,
                          std::map<std::string, Checkpoint::Conversion>& conversions, const std::string& where);

}  // namespace sepal

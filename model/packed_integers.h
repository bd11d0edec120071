#pragma once
// Checkpoints whose weights are small integers packed into I32 words, with a scale and a zero
// point for each group of input columns: a weight W [out, in] is W[o][i] = s · (q − z), the
// group of column i being i / group_size (or g_idx[i], where the checkpoint stores that order).
//   - GPTQ (AutoGPTQ, GPTQModel, optimum; quant_method "gptq"): X.qweight [in / p, out], input
//     rows packed p = 32 / bits to a word, the first in the lowest bits; X.qzeros [groups, out / p]
//     packed along the outputs; X.scales [groups, out]; X.g_idx [in] optional. checkpoint_format
//     "gptq" stores each zero point one less than it is (z = stored + 1, as AutoGPTQ reads it),
//     "gptq_v2" as it is.
//   - AWQ (AutoAWQ's GEMM layout; quant_method "awq"): 4 bits; X.qweight [in, out / 8],
//     X.qzeros [groups, out / 8], X.scales [groups, out]; the 8 outputs of a word interleaved,
//     output 8w + k in nibble {0, 4, 1, 5, 2, 6, 3, 7}[k] of word w.
//   - compressed-tensors' pack-quantized (llm-compressor's W4A16, W8A16): X.weight_packed
//     [out, in / p] packed along the inputs, each value stored plus 2^(bits − 1);
//     X.weight_scale [out, groups]; X.weight_zero_point [out / p, groups] packed along the
//     outputs, stored as the values are (absent when symmetric: z = 0); X.weight_shape [2];
//     X.weight_g_idx [in] optional.
//   - compressed-tensors' int-quantized (llm-compressor's W8A8 INT8): X.weight I8 [out, in] as it
//     is, X.weight_scale [out, 1], [out, groups] or one for the tensor, X.weight_zero_point I8 of
//     the scale's shape when asymmetric; activations quantized on the fly, which sepal computes
//     in its own precision instead.
// Scales are F16, BF16 or F32. Each such weight becomes X.weight, f32 [out, in], computed when
// first asked for.
//
// Thread-safety: pure functions of their arguments.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "model/safetensors.h"

namespace sepal {

/// How a checkpoint packs its integer weights, from its quantization_config.
struct PackedIntegers {
  enum class Layout { kGptq, kAwq, kCompressedTensors, kCompressedTensorsInt8 };
  Layout layout = Layout::kGptq;
  int bits = 4;                 ///< 2, 4 or 8 (AWQ: 4)
  std::int64_t group_size = 0;  ///< input columns a scale covers; 0: all of a row's
  int zero_offset = 0;          ///< added to each stored zero point (GPTQ's own format: 1)
};

/// The packing a quantization_config describes: GPTQ, AWQ, or compressed-tensors with format
/// "pack-quantized" or "int-quantized"; nullopt for any other quant_method (and compressed-tensors'
/// other formats). Throws sepal::Error naming `where` and the setting for one sepal cannot read:
/// 3 bits, AWQ's GEMV or Marlin layouts or no zero points, float or dynamic compressed-tensors
/// weights, int-quantized weights of other than 8 bits or activations with static scales,
/// pack-quantized ones with quantized activations, a group size that is not a whole number,
/// groups of different settings.
std::optional<PackedIntegers> packed_integers(const nlohmann::json& quantization_config, const std::string& where);

/// Replaces each packed weight of `tensors` (the parts named above, I32 words read as
/// TensorRef::int_words; int-quantized ones: I8 X.weight beside X.weight_scale) with X.weight,
/// f32 [out, in], dequantized when first asked for (an entry of `conversions`). Throws sepal::Error naming `where` and the tensor for a part without the
/// others, shapes that do not fit each other or the group size, a g_idx naming a group that is
/// not there, or (when converted) a scale that is not finite.
void unpack_packed_integers(std::map<std::string, TensorRef>& tensors,
                            std::map<std::string, Checkpoint::Conversion>& conversions, const PackedIntegers& packing,
                            const std::string& where);

}  // namespace sepal

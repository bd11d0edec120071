#pragma once
// bitsandbytes' 4-bit checkpoints (QLoRA's NF4 and FP4: quantization_config {"quant_method":
// "bitsandbytes", "load_in_4bit": true}), as transformers saves them. A weight W of shape [out, in]
// is stored as
//   X.weight                              U8, two 4-bit codes a byte over W's values in order, the
//                                         first in the high nibble;
//   X.weight.quant_map                    F32 [16], the value of each code;
//   X.weight.absmax                       the scale of each block of `blocksize` values: F32, or,
//                                         with double quantization, U8 codes into
//   X.weight.nested_quant_map             F32 [256], scaled by
//   X.weight.nested_absmax                F32, one a block of `nested_blocksize` scales, the
//                                         mean `nested_offset` added back;
//   X.weight.quant_state.bitsandbytes__nf4 (or __fp4)  U8, the JSON of quant_type, blocksize,
//                                         dtype, shape and the nested_ settings.
// W's value i is quant_map[code i] × scale of block i / blocksize, rounded to `dtype` (bf16 or
// f16), as bitsandbytes computes it.
//
// Thread-safety: pure functions of their arguments.

#include <map>
#include <string>

#include "model/safetensors.h"

namespace sepal {

/// Replaces each 4-bit weight of `tensors` (the parts above; U8 read as TensorRef::int_words 1)
/// with X.weight, f32 [out, in], dequantized when first asked for (an entry of `conversions`).
/// Throws sepal::Error naming `where` and the tensor for a quant_state that is not such JSON, a
/// part missing, or parts whose sizes disagree with the shape and block sizes; when converted,
/// for scales or code values that are not finite.
void unpack_bnb4_tensors(std::map<std::string, TensorRef>& tensors, std::map<std::string, Checkpoint::Conversion>& conversions,
                         const std::string& where);

}  // namespace sepal

#pragma once
// Hidden states as block hosts and clients send them: f32, or compressed to 8 bits a value with
// blockwise dynamic quantization (kernels/blockwise_quant.h), about a quarter of the bytes.
//
// A compressed tensor is u8 of shape [n, row_bytes]: each token's row is its blocks' absmax
// values (f32, little-endian) followed by its hidden_size codes, so a token's encoding does not
// depend on the tokens sent with it. Receivers accept both forms; a host answers in the form it
// was sent.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <vector>

#include "runtime/status.h"
#include "runtime/tensor_payload.h"

namespace sepal {

/// Bytes of one compressed row of `hidden_size` values.
std::int64_t compressed_row_bytes(std::int64_t hidden_size);

/// hidden[n, hidden_size] as a payload: compressed when `compress`, else f32. Throws sepal::Error
/// when compressing values that hold NaN or infinity.
TensorPayload encode_hidden(const float* hidden, std::int64_t n, std::int64_t hidden_size, bool compress);

/// True when `t` is in the compressed form.
inline bool is_compressed_hidden(const TensorPayload& t) { return t.type == ElementType::kU8; }

/// The f32 values of a payload of either form for `hidden_size`; kInvalidArgument naming the
/// problem for a wrong type, shape or byte count, or an absmax that is NaN, infinite or negative.
Result<std::vector<float>> decode_hidden(const TensorPayload& t, std::int64_t hidden_size);

/// Tokens in a payload of either form (its first dimension; 0 when it has none).
inline std::int64_t hidden_tokens(const TensorPayload& t) { return t.shape.empty() ? 0 : t.shape[0]; }

}  // namespace sepal

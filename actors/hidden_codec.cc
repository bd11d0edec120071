#include "actors/hidden_codec.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "kernels/blockwise_quant.h"

namespace sepal {

std::int64_t compressed_row_bytes(std::int64_t hidden_size) {
  return hidden_size + 4 * blockwise_blocks(hidden_size);
}

TensorPayload encode_hidden(const float* hidden, std::int64_t n, std::int64_t hidden_size, bool compress) {
  if (!compress) {
    return TensorPayload::copy_of(ElementType::kF32, {n, hidden_size}, hidden, static_cast<std::size_t>(n * hidden_size));
  }
  const std::int64_t blocks = blockwise_blocks(hidden_size), row_bytes = compressed_row_bytes(hidden_size);
  auto bytes = std::make_shared<std::vector<std::uint8_t>>(static_cast<std::size_t>(n * row_bytes));
  std::vector<float> absmax(static_cast<std::size_t>(blocks));
  for (std::int64_t t = 0; t < n; ++t) {
    std::uint8_t* row = bytes->data() + t * row_bytes;
    quantize_blockwise(hidden + t * hidden_size, hidden_size, row + 4 * blocks, absmax.data());
    std::memcpy(row, absmax.data(), static_cast<std::size_t>(4 * blocks));
  }
  return share_vector<std::uint8_t>(ElementType::kU8, {n, row_bytes}, std::move(bytes));
}

Result<std::vector<float>> decode_hidden(const TensorPayload& t, std::int64_t hidden_size) {
  auto shape_text = [&] {
    std::string s;
    for (auto d : t.shape) s += (s.empty() ? "" : ", ") + std::to_string(d);
    return "[" + s + "]";
  };
  if (t.type == ElementType::kF32) {
    if (t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] != hidden_size ||
        t.bytes != static_cast<std::size_t>(t.shape[0] * hidden_size) * 4) {
      return error(StatusCode::kInvalidArgument, "hidden states must be [n, ", hidden_size, "], got ", shape_text());
    }
    std::vector<float> out(static_cast<std::size_t>(t.shape[0] * hidden_size));
    std::memcpy(out.data(), t.data, t.bytes);
    return out;
  }
  if (t.type != ElementType::kU8) {
    return error(StatusCode::kInvalidArgument, "hidden states must be f32 or 8-bit compressed (u8), got ",
                 element_type_name(t.type));
  }
  const std::int64_t blocks = blockwise_blocks(hidden_size), row_bytes = compressed_row_bytes(hidden_size);
  if (t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] != row_bytes ||
      t.bytes != static_cast<std::size_t>(t.shape[0] * row_bytes)) {
    return error(StatusCode::kInvalidArgument, "compressed hidden states of size ", hidden_size, " must be [n, ",
                 row_bytes, "] bytes (", blocks, " scales and ", hidden_size, " codes a token), got ", shape_text());
  }
  const std::int64_t n = t.shape[0];
  std::vector<float> out(static_cast<std::size_t>(n * hidden_size));
  std::vector<float> absmax(static_cast<std::size_t>(blocks));
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(t.data);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t* row = bytes + i * row_bytes;
    std::memcpy(absmax.data(), row, static_cast<std::size_t>(4 * blocks));
    for (std::int64_t b = 0; b < blocks; ++b) {
      if (!std::isfinite(absmax[b]) || absmax[b] < 0) {
        return error(StatusCode::kInvalidArgument, "compressed hidden states: scale ", b, " of token ", i,
                     " is ", absmax[b], " (must be finite and >= 0)");
      }
    }
    dequantize_blockwise(row + 4 * blocks, absmax.data(), hidden_size, out.data() + i * hidden_size);
  }
  return out;
}

}  // namespace sepal

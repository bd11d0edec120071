#pragma once
// ggml's tensor encodings as GGUF files store them, turned into f32: F32, F16, BF16, the 32-value
// block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and MXFP4 (GPT-OSS's experts), and the
// 256-value K-quants Q2_K to Q6_K and IQ4_XS. The layouts are ggml's (ggml-common.h); each value is computed in f32 as ggml's reference
// dequantization computes it, so a weight here is the weight llama.cpp uses.
//
// Thread-safety: pure functions.

#include <cstddef>
#include <cstdint>

namespace sepal {

/// Decodes `n` values of ggml type `type` (a multiple of its block size) from `data` into `out`.
/// Throws sepal::Error for a type sepal does not read (model/gguf.h ggml_block_layout).
void dequantize_ggml(std::uint32_t type, const std::byte* data, std::int64_t n, float* out);

}  // namespace sepal

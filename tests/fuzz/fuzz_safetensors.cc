// Fuzz target: a safetensors file from any bytes. Parsing must succeed or throw sepal::Error
// with a message; every tensor it accepts must lie inside the file; MXFP4 pairs, FP8 weights
// with their scales (blocks of 1 to 4 a side, from the first bytes) and packed integer weights
// with their parts (GPTQ, AWQ or compressed-tensors' two, from the next bytes) and bitsandbytes' 4-bit
// weights unpack (each value computed) or are refused with a message.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "model/bnb4.h"
#include "model/fp8.h"
#include "model/mxfp4.h"
#include "model/packed_integers.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(data[i]);
  try {
    auto file = sepal::MappedFile::in_memory(std::move(bytes), "fuzz.safetensors");
    auto tensors = sepal::read_safetensors(file);
    volatile std::uint8_t sink = 0;
    for (const auto& [name, t] : tensors) {
      for (std::size_t i = 0; i < t.bytes; ++i) sink = sink ^ static_cast<std::uint8_t>(t.data[i]);
    }
    std::map<std::string, sepal::Checkpoint::Conversion> conversions;
    sepal::unpack_mxfp4_tensors(tensors, conversions, "fuzz");
    const std::int64_t bh = size > 0 ? 1 + data[0] % 4 : 1, bw = size > 1 ? 1 + data[1] % 4 : 1;
    sepal::unpack_fp8_tensors(tensors, conversions, {bh, bw}, "fuzz");
    sepal::PackedIntegers packing;  // GPTQ, AWQ or compressed-tensors; bits and group size from the next bytes
    packing.layout = static_cast<sepal::PackedIntegers::Layout>(size > 2 ? data[2] % 4 : 0);
    packing.bits = packing.layout == sepal::PackedIntegers::Layout::kAwq                     ? 4
                   : packing.layout == sepal::PackedIntegers::Layout::kCompressedTensorsInt8 ? 8
                   : size > 3                                                             ? 2 << (data[3] % 3)
                                                                                          : 4;
    packing.group_size = size > 4 ? data[4] % 5 : 0;
    packing.zero_offset = size > 5 ? data[5] % 2 : 0;
    sepal::unpack_packed_integers(tensors, conversions, packing, "fuzz");
    sepal::unpack_bnb4_tensors(tensors, conversions, "fuzz");
    for (auto& [name, convert] : conversions) {
      sepal::TensorRef& t = tensors.at(name);
      if (t.elements() > (std::int64_t{1} << 22)) continue;  // a size the fuzzer need not allocate
      convert(t);
      for (std::size_t i = 0; i < t.bytes; ++i) sink = sink ^ static_cast<std::uint8_t>(t.data[i]);
    }
  } catch (const sepal::Error&) {
  }
  return 0;
}

// Fuzz target for frame decoding: any bytes must decode to a message or a kMalformed Status,
// never crash, read out of bounds, or allocate without bound. Built with libFuzzer by
// scripts/fuzz.sh (fuzz_wire), and run on mutated frames by the wire_fuzz_smoke ctest.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "runtime/wire.h"
#include "tests/runtime/wire_messages.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto frame = sepal::Buffer::allocate(size);
  if (!frame) return 0;
  if (size) std::memcpy(frame->data(), data, size);
  auto envelope = sepal::decode_envelope(*frame);
  if (!envelope.is_ok()) return 0;
  std::shared_ptr<const sepal::Buffer> shared = frame;
  auto everything = sepal::decode_message<sepal::test::Everything>(shared);
  if (everything.is_ok()) {
    // Touch every decoded tensor byte: a wrong bound would show up here under ASan.
    volatile std::uint8_t sink = 0;
    for (const auto* t : {&everything->first, &everything->second}) {
      for (std::size_t i = 0; i < t->bytes; ++i) sink = sink ^ static_cast<std::uint8_t>(t->data[i]);
    }
  }
  (void)sepal::decode_message<sepal::test::Small>(shared);
  (void)sepal::decode_error(shared);
  return 0;
}

// Runs the wire fuzz target on random mutations of valid frames for a given number of seconds
// (default 5) without libFuzzer: a crash fails the test. scripts/fuzz.sh (fuzz_wire) does the
// coverage-guided run with libFuzzer and AddressSanitizer.
#include <chrono>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "tests/runtime/wire_messages.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::vector<std::uint8_t> valid_frame(std::mt19937_64& rng) {
  using namespace sepal;
  test::Everything m;
  m.u8 = static_cast<std::uint8_t>(rng());
  m.i64 = static_cast<std::int64_t>(rng());
  m.text = std::string(rng() % 40, 'x');
  m.numbers.assign(rng() % 10, 7);
  m.inners.resize(rng() % 3);
  if (rng() % 2) m.maybe = test::Inner{3, "inner"};
  std::vector<float> a(rng() % 100), b(rng() % 30);
  m.first = TensorPayload::copy_of(ElementType::kF32, {static_cast<std::int64_t>(a.size())}, a.data(), a.size());
  m.second = TensorPayload::copy_of(ElementType::kF32, {1, static_cast<std::int64_t>(b.size())}, b.data(), b.size());
  const auto frame = encode(Envelope{}, m).flatten();
  return {reinterpret_cast<const std::uint8_t*>(frame->data()),
          reinterpret_cast<const std::uint8_t*>(frame->data()) + frame->size()};
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 5.0;
  std::mt19937_64 rng(12345);
  const auto start = std::chrono::steady_clock::now();
  long runs = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    auto bytes = valid_frame(rng);
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    const int mutations = 1 + static_cast<int>(rng() % 8);
    for (int m = 0; m < mutations; ++m) {
      switch (rng() % 4) {
        case 0: if (!bytes.empty()) bytes[rng() % bytes.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8)); break;
        case 1: if (!bytes.empty()) bytes[rng() % bytes.size()] = static_cast<std::uint8_t>(rng()); break;
        case 2: bytes.resize(rng() % (bytes.size() + 1)); break;
        case 3: {  // plant a large little-endian integer where a length may be
          if (bytes.size() >= 8) {
            const std::uint64_t v = rng() % 2 ? ~0ull : (rng() % (1ull << 33));
            std::memcpy(bytes.data() + rng() % (bytes.size() - 7), &v, 8);
          }
          break;
        }
      }
      LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      ++runs;
    }
  }
  std::printf("wire_fuzz_smoke: %ld mutated frames decoded in %.0f s without a crash\n", runs, seconds);
  return 0;
}

#pragma once
// Deterministic hidden-state rows for the block benchmarks: the same values on every machine and
// run, so that two timed paths see the same inputs.

#include <cstdint>
#include <vector>

namespace sepal::bench {

/// n rows of `width` values in [-1, 1), from a linear congruential sequence seeded by `seed`.
inline std::vector<float> deterministic_rows(std::int64_t n, std::int64_t width, std::uint32_t seed) {
  std::vector<float> out(static_cast<std::size_t>(n * width));
  std::uint32_t s = seed * 2654435761u + 1;
  for (float& v : out) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<float>(s >> 8) / 8388608.0f - 1.0f;
  }
  return out;
}

}  // namespace sepal::bench

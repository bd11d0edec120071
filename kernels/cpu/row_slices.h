#pragma once
// How the streaming kernels split a matrix's rows between threads: one contiguous slice per
// thread, each a multiple of 16 rows so that each slice of the output starts on a cache line.
// Slices are claimed, not assigned, so a worker that wakes late finds the caller has taken its
// slice. One slice per thread, not four: every slice is a stream the prefetchers must pick up
// anew, and on the 110M shape (matrices of 0.6 to 3 MB) four per thread cost int8 decode about a
// tenth of its speed (measured side by side, 2 threads). Internal to kernels/cpu.

#include <algorithm>
#include <cstdint>
#include <span>

#include "kernels/matmul.h"
#include "kernels/parallel.h"

namespace sepal::cpu {

/// Calls f(r0, r1) for slices covering [0, rows), in parallel; as one slice on the calling thread
/// for fewer than 64 rows.
template <typename F>
void for_each_row_slice(std::int64_t rows, F&& f) {
  if (rows < 64) {
    f(std::int64_t{0}, rows);
    return;
  }
  const std::int64_t units = (rows + 15) / 16;
  const std::int64_t slices =
      std::min<std::int64_t>(units, static_cast<std::int64_t>(compute_threads()));
  parallel_for(slices, [&](std::int64_t i) {
    const std::int64_t r0 = std::min(rows, units * i / slices * 16);
    const std::int64_t r1 = std::min(rows, units * (i + 1) / slices * 16);
    if (r0 < r1) f(r0, r1);
  });
}

/// The same over several matrices' rows laid end to end (one parallel pass for all of them):
/// calls f(i, r0, r1) for rows [r0, r1) of matrix ws[i].
template <typename F>
void for_each_row_slice(std::span<const WeightView> ws, F&& f) {
  std::int64_t total = 0;
  for (const WeightView& w : ws) total += w.rows;
  for_each_row_slice(total, [&](std::int64_t g0, std::int64_t g1) {
    std::int64_t base = 0;
    for (std::size_t i = 0; i < ws.size() && base < g1; base += ws[i].rows, ++i) {
      const std::int64_t r0 = std::max(g0, base) - base,
                         r1 = std::min(g1, base + ws[i].rows) - base;
      if (r0 < r1) f(i, r0, r1);
    }
  });
}

/// Rows [r0, r1) of a matrix whose rows take row_bytes each, for n tokens in groups of
/// kStreamingMaxTokens: calls f(t0, count, a, b) for every group over tiles [a, b) of about
/// kTileBytes, every group over one tile before the next tile, so a tile is read from memory once
/// and from cache by the other groups.
inline constexpr std::int64_t kTileBytes = 96 << 10;

template <typename F>
void for_each_tile_and_group(std::int64_t r0, std::int64_t r1, std::int64_t row_bytes, std::int64_t n, F&& f) {
  const std::int64_t tile = std::max<std::int64_t>(16, kTileBytes / std::max<std::int64_t>(row_bytes, 1) / 16 * 16);
  for (std::int64_t a = r0; a < r1; a += tile) {
    const std::int64_t b = std::min(r1, a + tile);
    for (std::int64_t t0 = 0; t0 < n; t0 += kStreamingMaxTokens) f(t0, std::min(kStreamingMaxTokens, n - t0), a, b);
  }
}

}  // namespace sepal::cpu

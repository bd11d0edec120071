#pragma once
// How the streaming kernels split a matrix's rows between threads: one contiguous slice per
// thread, read in memory order, in ranges of multiples of 16 rows so that each range of the
// output starts on a cache line; threads that finish early take what is left of the others'.
// One slice per thread, not four: every slice is a stream the prefetchers must pick up anew, and
// on the 110M shape (matrices of 0.6 to 3 MB) four per thread cost int8 decode about a tenth of
// its speed (measured side by side, 2 threads). Internal to kernels/cpu.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <span>

#include "kernels/matmul.h"
#include "kernels/parallel.h"

namespace sepal::cpu {

namespace row_slices_detail {

// One thread's slice in units of 16 rows: its owner claims chunks from the front, a thread done
// with its own slice claims them from the back, both with one compare-and-swap on a word of its
// own cache line (front in the low half, back in the high half).
struct alignas(64) Slice {
  std::atomic<std::uint64_t> range{0};
  std::atomic<bool> started{false};

  void set(std::uint32_t front, std::uint32_t back) {
    range.store(std::uint64_t{back} << 32 | front, std::memory_order_relaxed);
    started.store(false, std::memory_order_relaxed);
  }
  // Claims up to n units from the front (from_back false) or the back; false once empty.
  bool claim(std::uint32_t n, bool from_back, std::uint32_t& a, std::uint32_t& b) {
    std::uint64_t old = range.load(std::memory_order_relaxed);
    for (;;) {
      const auto front = static_cast<std::uint32_t>(old), back = static_cast<std::uint32_t>(old >> 32);
      if (front >= back) return false;
      const std::uint32_t take = std::min(n, back - front);
      a = from_back ? back - take : front;
      b = a + take;
      const std::uint64_t now = from_back ? (std::uint64_t{a} << 32 | front) : (std::uint64_t{back} << 32 | b);
      if (range.compare_exchange_weak(old, now, std::memory_order_relaxed)) return true;
    }
  }
};

}  // namespace row_slices_detail

/// Calls f(r0, r1) for ranges covering [0, rows) once each, in parallel: one contiguous slice per
/// thread, read from its start in chunks of about kChunkBytes (row_bytes a row); a thread done
/// with its slice takes the chunks left at the end of another's (or that slice from its start, if
/// its owner has not begun), so a thread that woke late or reads slower holds no one up (waiting
/// for the slower of 2 threads was about 7% of a 110M int8 decode's profile, now under 2%). Every
/// range is a multiple of 16 rows but the last. As one range on the calling thread for fewer than 64 rows.
inline constexpr std::int64_t kChunkBytes = 32 << 10;

template <typename F>
void for_each_row_slice(std::int64_t rows, std::int64_t row_bytes, F&& f) {
  if (rows < 64) {
    f(std::int64_t{0}, rows);
    return;
  }
  const std::int64_t units = (rows + 15) / 16;
  const std::int64_t slices =
      std::min<std::int64_t>({units, static_cast<std::int64_t>(compute_threads()), 64});
  if (slices == 1) {
    f(std::int64_t{0}, rows);
    return;
  }
  row_slices_detail::Slice parts[64];
  for (std::int64_t i = 0; i < slices; ++i)
    parts[i].set(static_cast<std::uint32_t>(units * i / slices), static_cast<std::uint32_t>(units * (i + 1) / slices));
  const auto chunk = static_cast<std::uint32_t>(
      std::clamp<std::int64_t>(kChunkBytes / std::max<std::int64_t>(16 * row_bytes, 1), 1, units));
  const auto run = [&](std::uint32_t a, std::uint32_t b) { f(a * std::int64_t{16}, std::min(rows, b * std::int64_t{16})); };
  parallel_for(slices, [&](std::int64_t i) {
    std::uint32_t a = 0, b = 0;
    parts[i].started.store(true, std::memory_order_relaxed);
    while (parts[i].claim(chunk, false, a, b)) run(a, b);
    for (std::int64_t j = (i + 1) % slices; j != i; j = (j + 1) % slices) {
      const bool from_back = parts[j].started.load(std::memory_order_relaxed);
      while (parts[j].claim(chunk, from_back, a, b)) run(a, b);
    }
  });
}

/// The same over several matrices' rows laid end to end (one parallel pass for all of them):
/// calls f(i, r0, r1) for rows [r0, r1) of matrix ws[i].
template <typename F>
void for_each_row_slice(std::span<const WeightView> ws, F&& f) {
  std::int64_t total = 0;
  for (const WeightView& w : ws) total += w.rows;
  const std::int64_t row_bytes = ws.empty() ? 0 : ws[0].cols * static_cast<std::int64_t>(dtype_size(ws[0].dtype));
  for_each_row_slice(total, row_bytes, [&](std::int64_t g0, std::int64_t g1) {
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

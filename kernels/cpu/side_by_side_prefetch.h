#pragma once
// Where a kernel that reads R rows side by side (R streams, one per row, advancing together)
// prefetches: `ahead` bytes further along the same row, or, past the row's end, as far into the
// same row of the next block of R rows. The block consumes R bytes of the stream for each byte a
// row advances, so this is R * ahead bytes of lookahead everywhere, where a fixed offset from
// the row would fall, near the row's end, on the rows the block is reading at that moment.
// Prefetches do not fault: the address may lie past the matrix. Internal to kernels/cpu.

#include <cstdint>

namespace sepal::cpu {

inline const char* side_by_side_ahead(const void* row, std::int64_t at, std::int64_t row_bytes,
                                      int rows_side_by_side, std::int64_t ahead) {
  const auto* p = static_cast<const char*>(row);
  const std::int64_t to = at + ahead;
  return to < row_bytes ? p + to : p + rows_side_by_side * row_bytes + (to - row_bytes);
}

}  // namespace sepal::cpu

#pragma once
// How the streaming kernels split a matrix's rows between threads: each thread one contiguous
// slice, a multiple of 16 rows so that each slice of the output starts on a cache line. Internal
// to kernels/cpu.

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace sepal::cpu {

/// Calls f(r0, r1) for each thread's slice of [0, rows), in parallel; on the calling thread alone
/// (one slice) inside a parallel region or for fewer than 64 rows.
template <typename F>
void for_each_row_slice(std::int64_t rows, F&& f) {
  if (omp_in_parallel() || rows < 64) {
    f(std::int64_t{0}, rows);
    return;
  }
#pragma omp parallel
  {
    const std::int64_t threads = omp_get_num_threads();
    const std::int64_t id = omp_get_thread_num();
    const std::int64_t units = (rows + 15) / 16;
    const std::int64_t r0 = std::min(rows, units * id / threads * 16);
    const std::int64_t r1 = std::min(rows, units * (id + 1) / threads * 16);
    if (r0 < r1) f(r0, r1);
  }
}

}  // namespace sepal::cpu

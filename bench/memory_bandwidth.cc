#include "bench/memory_bandwidth.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/parallel.h"

namespace sepal::bench {
namespace {

// Sums 64-byte lines with AVX-512 when available; the sum keeps the loads from being elided.
__attribute__((target("avx512f"))) float sum_avx512(const float* p, std::int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::int64_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"))) float sum_avx2(const float* p, std::int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0;
  for (float v : out) s += v;
  return s;
}

}  // namespace

double measure_read_bandwidth(std::int64_t bytes, int repeats) {
  void* mem = ::mmap(nullptr, static_cast<std::size_t>(bytes), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("cannot allocate the bandwidth buffer");
  ::madvise(mem, static_cast<std::size_t>(bytes), MADV_HUGEPAGE);
  auto* data = static_cast<float*>(mem);
  const std::int64_t n = bytes / 4;
  const std::int64_t slices = compute_threads();
  parallel_for(slices, [&](std::int64_t s) { std::fill(data + n * s / slices, data + n * (s + 1) / slices, 1.0f); });
  const bool avx512 = __builtin_cpu_supports("avx512f");
  double best = 0.0;
  volatile float sink = 0.0f;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<float> totals(static_cast<std::size_t>(slices));
    parallel_for(slices, [&](std::int64_t s) {
      const std::int64_t begin = n * s / slices / 64 * 64, end = n * (s + 1) / slices / 64 * 64;
      totals[static_cast<std::size_t>(s)] = avx512 ? sum_avx512(data + begin, end - begin) : sum_avx2(data + begin, end - begin);
    });
    float total = 0.0f;
    for (float t : totals) total += t;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    sink = sink + total;
    best = std::max(best, static_cast<double>(bytes) / seconds);
  }
  ::munmap(mem, static_cast<std::size_t>(bytes));
  return best;
}

}  // namespace sepal::bench

#include "bench/memory_bandwidth.h"

#include <immintrin.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/parallel.h"

namespace sepal::bench {
namespace {

using ReadKernel = float (*)(const float*, std::int64_t);

// Each sums its slice (the sum keeps the loads from being elided), 64 floats a step.
__attribute__((target("avx512f"))) float sum_avx512_x4(const float* p, std::int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::int64_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx512f"))) float sum_avx512_x8(const float* p, std::int64_t n) {
  __m512 a[8];
  for (auto& v : a) v = _mm512_setzero_ps();
  std::int64_t i = 0;
  for (; i + 128 <= n; i += 128) {
    for (int k = 0; k < 8; ++k) a[k] = _mm512_add_ps(a[k], _mm512_load_ps(p + i + 16 * k));
  }
  for (; i + 16 <= n; i += 16) a[0] = _mm512_add_ps(a[0], _mm512_load_ps(p + i));
  for (int k = 1; k < 8; ++k) a[0] = _mm512_add_ps(a[0], a[k]);
  return _mm512_reduce_add_ps(a[0]);
}

// Every line prefetched `Ahead` bytes before it is read, into the first-level cache, the second,
// or non-temporal (the decode kernels take the second or non-temporal by the CPU's make).
template <std::int64_t Ahead, int Hint>
__attribute__((target("avx512f"))) float sum_avx512_prefetch(const float* p, std::int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::int64_t i = 0; i + 64 <= n; i += 64) {
    const char* ahead = reinterpret_cast<const char*>(p + i) + Ahead;
    for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, static_cast<_mm_hint>(Hint));
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"))) float sum_avx2_x4(const float* p, std::int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (std::int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0;
  for (float v : out) s += v;
  return s;
}

struct Candidate {
  const char* name;
  ReadKernel kernel;
};

const std::vector<Candidate>& candidates() {
  static const std::vector<Candidate> all = [] {
    std::vector<Candidate> kernels;
    if (__builtin_cpu_supports("avx512f")) {
      kernels.push_back({"avx512 x4", sum_avx512_x4});
      kernels.push_back({"avx512 x8", sum_avx512_x8});
      kernels.push_back({"avx512 prefetch 4K L1", sum_avx512_prefetch<4096, _MM_HINT_T0>});
      kernels.push_back({"avx512 prefetch 8K L1", sum_avx512_prefetch<8192, _MM_HINT_T0>});
      kernels.push_back({"avx512 prefetch 8K L2", sum_avx512_prefetch<8192, _MM_HINT_T1>});
      kernels.push_back({"avx512 prefetch 4K NTA", sum_avx512_prefetch<4096, _MM_HINT_NTA>});
      kernels.push_back({"avx512 prefetch 8K NTA", sum_avx512_prefetch<8192, _MM_HINT_NTA>});
    }
    kernels.push_back({"avx2 x4", sum_avx2_x4});
    return kernels;
  }();
  return all;
}

// Seconds for `threads` threads (the caller and threads - 1 others, each on its own CPU where
// the process may use several) to read their contiguous slices of data[0, n) once: from the
// release of the threads, started and waiting beforehand, to the end of the last slice.
double timed_pass(ReadKernel kernel, const float* data, std::int64_t n, int threads, float& sink) {
  using Clock = std::chrono::steady_clock;
  std::vector<float> sums(static_cast<std::size_t>(threads));
  std::vector<Clock::time_point> ends(static_cast<std::size_t>(threads));
  std::atomic<bool> go{false};
  auto slice = [&](int t) {
    while (!go.load(std::memory_order_acquire)) _mm_pause();
    const std::int64_t begin = n * t / threads / 128 * 128, end = n * (t + 1) / threads / 128 * 128;
    sums[static_cast<std::size_t>(t)] = kernel(data + begin, end - begin);
    ends[static_cast<std::size_t>(t)] = Clock::now();
  };
  std::vector<std::thread> others;
  std::atomic<int> ready{0};
  for (int t = 1; t < threads; ++t)
    others.emplace_back([&, t] {
      ready.fetch_add(1);
      slice(t);
    });
  while (ready.load() < threads - 1) std::this_thread::yield();
  const auto start = Clock::now();
  go.store(true, std::memory_order_release);
  slice(0);
  for (auto& th : others) th.join();
  const auto last = *std::max_element(ends.begin(), ends.end());
  for (float s : sums) sink += s;
  return std::chrono::duration<double>(last - start).count();
}

}  // namespace

ReadProbe::ReadProbe(std::int64_t bytes) {
  bytes_ = std::max<std::int64_t>(bytes / 4096 * 4096, 64 << 20);
  void* mem = ::mmap(nullptr, static_cast<std::size_t>(bytes_), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("cannot allocate the bandwidth buffer");
  ::madvise(mem, static_cast<std::size_t>(bytes_), MADV_HUGEPAGE);
  data_ = static_cast<float*>(mem);
  std::fill(data_, data_ + bytes_ / 4, 1.0f);  // faulted in (as huge pages where the kernel gives them)
}

ReadProbe::~ReadProbe() {
  ::munmap(data_, static_cast<std::size_t>(bytes_));
  if (sink_ == 42.0f) std::fprintf(stderr, " ");  // the sums are used
}

ReadBandwidth ReadProbe::fastest(int repeats) {
  ReadBandwidth best;
  const int max_threads = std::max(1, compute_threads());
  const auto& kernels = candidates();
  for (std::size_t k = 0; k < kernels.size(); ++k) {
    for (int threads = 1; threads <= max_threads; ++threads) {
      (void)timed_pass(kernels[k].kernel, data_, bytes_ / 4, threads, sink_);  // warm-up: TLBs filled
      for (int r = 0; r < repeats; ++r) {
        const double rate = static_cast<double>(bytes_) / timed_pass(kernels[k].kernel, data_, bytes_ / 4, threads, sink_);
        if (rate > best.bytes_per_second) best = {rate, kernels[k].name, threads, static_cast<int>(k)};
      }
    }
  }
  return best;
}

double ReadProbe::pass(const ReadBandwidth& how) {
  const auto& kernels = candidates();
  if (how.kernel_index < 0 || how.kernel_index >= static_cast<int>(kernels.size()) || how.threads < 1)
    throw std::invalid_argument("ReadProbe::pass: not a result of fastest()");
  return static_cast<double>(bytes_) /
         timed_pass(kernels[static_cast<std::size_t>(how.kernel_index)].kernel, data_, bytes_ / 4, how.threads, sink_);
}

}  // namespace sepal::bench

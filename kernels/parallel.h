#pragma once
// The CPU kernels' threads: one pool per process, shared by every thread that calls a kernel.
//
// Why not OpenMP: libgomp gives each calling thread its own team, and once a process holds more
// team threads than CPUs (a block host computes on its scheduler's threads and loads on its main
// thread) every team stops spinning between parallel regions and sleeps instead; an idle team's
// threads spin for milliseconds after a region, taking the cores from the other ranks on the
// node. Both cost a block host a fifth of its speed next to one process. This pool has one set
// of workers, spins between regions for a fraction of a millisecond, then sleeps. Its workers'
// CPU affinity leaves out the CPU of the thread that calls parallel_for, so the kernel cannot
// stack a worker on its caller while another CPU idles.
//
// Thread-safety: every function may be called from any thread. parallel_for calls from different
// threads run one after the other; a parallel_for inside a task runs inline on that task's thread.

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace sepal {

/// How many threads the CPU kernels use, the calling thread included (at least 1). Default: the
/// CPUs this process may run on.
int compute_threads();

/// Sets the count for later kernel calls (n >= 1); waits for a running parallel_for to finish,
/// so a task must not call it.
void set_compute_threads(int n);

namespace detail {
using TaskFn = void (*)(void* body, std::int64_t task);
void parallel_for_erased(std::int64_t tasks, TaskFn fn, void* body);
}  // namespace detail

/// Calls body(task) for every task in [0, tasks), spread over the pool; tasks are claimed one at
/// a time, so a thread that falls behind takes fewer. Returns when every task is done; rethrows
/// the first exception a task threw (the other tasks still run). Per-thread scratch space belongs
/// in thread_local storage: which thread runs a task is not fixed.
template <typename Body>
void parallel_for(std::int64_t tasks, Body&& body) {
  using B = std::remove_reference_t<Body>;
  detail::parallel_for_erased(
      tasks, [](void* b, std::int64_t task) { (*static_cast<B*>(b))(task); },
      const_cast<void*>(static_cast<const void*>(&body)));
}

/// Calls span(begin, end) over [0, count): once over all of it up to 65536 elements, else in
/// chunks of 16384 spread over the pool. For element-wise kernels, whose results do not depend on
/// the chunks.
template <typename Span>
void parallel_spans(std::int64_t count, Span&& span) {
  constexpr std::int64_t kChunk = 1 << 14;
  if (count <= (1 << 16)) return span(std::int64_t{0}, count);
  parallel_for((count + kChunk - 1) / kChunk, [&](std::int64_t c) { span(c * kChunk, std::min(count, (c + 1) * kChunk)); });
}

}  // namespace sepal

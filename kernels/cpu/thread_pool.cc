// The pool behind kernels/parallel.h.
//
// One job runs at a time (callers queue on run_mutex_). A job is published by bumping
// generation_; workers spin on it for kSpin after their last job, then sleep on a condition
// variable (std::atomic::wait is not used: libstdc++ 12's can miss a notify_all).
// Each job is a fresh object that workers share: a worker that wakes late finds every task of an
// old job claimed and does nothing, so no job can be run twice or with a stale body.
#include <cblas.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "kernels/error.h"
#include "kernels/parallel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SEPAL_CPU_RELAX() _mm_pause()
#else
#define SEPAL_CPU_RELAX() std::this_thread::yield()
#endif

namespace sepal {
namespace {

// Long enough to span the serial work between two kernels of a forward pass (microseconds), short
// enough that a rank whose turn in the pipeline is over leaves the cores to the next one.
constexpr auto kSpin = std::chrono::microseconds(50);

// OpenBLAS is called inside the pool's tasks, on panels of a product: its own threads would only
// oversubscribe the cores.
[[maybe_unused]] const bool kBlasSingleThreaded = [] {
  openblas_set_num_threads(1);
  return true;
}();

thread_local bool t_in_task = false;

int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env && *env) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (*end == '\0' && n >= 1 && n <= 4096) return static_cast<int>(n);
    std::fprintf(stderr, "sepal: ignoring OMP_NUM_THREADS=%s (not a thread count)\n", env);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

struct Job {
  detail::TaskFn fn = nullptr;
  void* body = nullptr;
  std::int64_t tasks = 0;
  std::atomic<std::int64_t> next{0};
  std::atomic<std::int64_t> done{0};
  std::mutex error_mutex;
  std::exception_ptr error;

  void work() {
    t_in_task = true;
    for (;;) {
      const std::int64_t task = next.fetch_add(1, std::memory_order_relaxed);
      if (task >= tasks) break;
      try {
        fn(body, task);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
      }
      done.fetch_add(1, std::memory_order_release);
    }
    t_in_task = false;
  }
};

class ThreadPool {
 public:
  // Never destroyed (as LevelDB's Env::Default): a kernel may still run on another thread while
  // the process exits, and the sleeping workers end with the process.
  static ThreadPool& instance() {
    static ThreadPool* pool = new ThreadPool;
    return *pool;
  }

  // Lock-free: a task may ask (a kernel inside a task sizes its slices) while its job holds
  // run_mutex_.
  int threads() const { return threads_.load(std::memory_order_relaxed); }

  void resize(int threads) {
    std::lock_guard lock(run_mutex_);
    if (threads == threads_.load()) return;
    stop_workers();
    threads_.store(threads);
  }

  void run(std::int64_t tasks, detail::TaskFn fn, void* body) {
    std::unique_lock lock(run_mutex_);
    if (threads_.load() == 1 || tasks == 1) {
      lock.unlock();
      run_inline(tasks, fn, body);
      return;
    }
    if (workers_.empty()) start_workers();
    keep_workers_off_this_cpu();
    auto job = std::make_shared<Job>();
    job->fn = fn;
    job->body = body;
    job->tasks = tasks;
    {
      std::lock_guard job_lock(job_mutex_);
      job_ = job;
    }
    publish();
    job->work();
    // Wait for the tasks other threads claimed; they may have been preempted, so yield after a
    // while instead of holding a core they need.
    for (int spins = 0; job->done.load(std::memory_order_acquire) < tasks; ++spins) {
      if (spins < 4096)
        SEPAL_CPU_RELAX();
      else
        std::this_thread::yield();
    }
    {
      std::lock_guard job_lock(job_mutex_);
      job_.reset();
    }
    if (job->error) std::rethrow_exception(job->error);
  }

  static void run_inline(std::int64_t tasks, detail::TaskFn fn, void* body) {
    const bool was_in_task = t_in_task;
    t_in_task = true;
    std::exception_ptr error;
    for (std::int64_t task = 0; task < tasks; ++task) {
      try {
        fn(body, task);
      } catch (...) {
        if (!error) error = std::current_exception();
      }
    }
    t_in_task = was_in_task;
    if (error) std::rethrow_exception(error);
  }

 private:
  ThreadPool() : threads_(default_threads()) {}

  // Holding run_mutex_.
  void start_workers() {
    stopping_.store(false, std::memory_order_relaxed);
    caller_cpu_ = -1;
    // The starting thread's CPUs; the workers inherit them too.
    CPU_ZERO(&process_cpus_);
    (void)sched_getaffinity(0, sizeof(process_cpus_), &process_cpus_);
    // A worker waits for the generation after this one: the job about to be published.
    const std::uint64_t now = generation_.load();
    const int n = threads_.load();
    try {
      for (int i = 1; i < n; ++i) workers_.emplace_back([this, now] {
        pthread_setname_np(pthread_self(), "sepal-compute");
        work(now);
      });
    } catch (const std::system_error& e) {  // the process's thread limit, or memory for stacks
      const auto started = workers_.size();
      stop_workers();
      throw Error("cannot start " + std::to_string(n - 1) + " kernel threads (started " + std::to_string(started) +
                  "): " + e.what() + "; ask for fewer threads");
    }
  }

  // Keeps the workers off the CPU the calling thread runs on (they may use every other CPU of the
  // process). Measured on the 2-core machine: the kernel sometimes woke a worker onto its waker's
  // CPU and left both there for 30 ms while the other CPU idled, doubling a forward pass.
  // The mask changes only when the caller has moved, so this is one sched_getcpu() per job.
  void keep_workers_off_this_cpu() {
    const int cpu = sched_getcpu();
    if (cpu < 0 || cpu == caller_cpu_ || !CPU_ISSET(cpu, &process_cpus_) || CPU_COUNT(&process_cpus_) < 2) return;
    caller_cpu_ = cpu;
    cpu_set_t others = process_cpus_;
    CPU_CLR(cpu, &others);
    for (auto& w : workers_) pthread_setaffinity_np(w.native_handle(), sizeof(others), &others);
  }

  // Wakes the workers for a new generation (a job, or stopping).
  void publish() {
    generation_.fetch_add(1);
    if (sleepers_.load() == 0) return;  // every worker is spinning and will see it
    { std::lock_guard lock(sleep_mutex_); }
    sleep_cv_.notify_all();
  }

  // Holding run_mutex_.
  void stop_workers() {
    if (workers_.empty()) return;
    stopping_.store(true, std::memory_order_relaxed);
    publish();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  void work(std::uint64_t seen) {
    for (;;) {
      std::uint64_t now = generation_.load();
      if (now == seen) {
        const auto start = std::chrono::steady_clock::now();
        for (int spins = 1; (now = generation_.load()) == seen; ++spins) {
          SEPAL_CPU_RELAX();
          if (spins % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin) {
            std::unique_lock lock(sleep_mutex_);
            sleepers_.fetch_add(1);
            sleep_cv_.wait(lock, [&] { return generation_.load() != seen; });
            sleepers_.fetch_sub(1);
          }
        }
      }
      seen = now;
      if (stopping_.load(std::memory_order_relaxed)) return;
      std::shared_ptr<Job> job;
      {
        std::lock_guard job_lock(job_mutex_);
        job = job_;
      }
      if (job) job->work();
    }
  }

  std::mutex run_mutex_;     // one job at a time; guards workers_ and changes of threads_
  std::atomic<int> threads_;
  std::vector<std::thread> workers_;
  cpu_set_t process_cpus_{};  // where the process may run, read when the workers start
  int caller_cpu_ = -1;       // the CPU the workers were last kept off
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> generation_{0};  // bumped for every job and for stopping
  std::mutex sleep_mutex_;
  std::condition_variable sleep_cv_;
  std::atomic<int> sleepers_{0};  // workers asleep (or about to be) on sleep_cv_
  std::mutex job_mutex_;
  std::shared_ptr<Job> job_;
};

}  // namespace

int compute_threads() { return ThreadPool::instance().threads(); }

void set_compute_threads(int n) {
  if (n < 1) n = 1;
  ThreadPool::instance().resize(n);
}

namespace detail {

void parallel_for_erased(std::int64_t tasks, TaskFn fn, void* body) {
  if (tasks <= 0) return;
  if (t_in_task) {  // nested: the enclosing job already uses every thread
    ThreadPool::run_inline(tasks, fn, body);
    return;
  }
  ThreadPool::instance().run(tasks, fn, body);
}

}  // namespace detail
}  // namespace sepal

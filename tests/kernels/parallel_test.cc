// The kernels' thread pool (kernels/parallel.h): every task runs once, errors come back to the
// caller, nested and concurrent calls are safe, and the kernels give bit-identical results
// whatever the thread count.
#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/row_slices.h"
#include "kernels/dtype.h"
#include "kernels/matmul.h"
#include "kernels/parallel.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

// Restores the process's thread count when a test ends.
class ParallelTest : public ::testing::Test {
 protected:
  void TearDown() override { set_compute_threads(saved_); }
  const int saved_ = compute_threads();
};

TEST_F(ParallelTest, EveryTaskRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    set_compute_threads(threads);
    EXPECT_EQ(compute_threads(), threads);
    for (std::int64_t tasks : {0, 1, 2, 7, 1000, 100000}) {
      std::vector<std::atomic<int>> runs(static_cast<std::size_t>(tasks));
      parallel_for(tasks, [&](std::int64_t i) { runs[static_cast<std::size_t>(i)].fetch_add(1); });
      for (std::int64_t i = 0; i < tasks; ++i) {
        ASSERT_EQ(runs[static_cast<std::size_t>(i)].load(), 1)
            << threads << " threads, " << tasks << " tasks, task " << i;
      }
    }
  }
}

TEST_F(ParallelTest, ThreadCountBelowOneMeansOne) {
  set_compute_threads(0);
  EXPECT_EQ(compute_threads(), 1);
}

TEST_F(ParallelTest, WorkSpreadsOverThePool) {
  set_compute_threads(2);
  std::mutex mutex;
  std::set<std::thread::id> ids;
  parallel_for(64, [&](std::int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::lock_guard lock(mutex);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(ids.size(), 2u);
}

// The workers stay off the caller's CPU, so the kernel cannot stack them there while another
// CPU idles. The caller is pinned for the test so that its CPU is known.
TEST_F(ParallelTest, WorkersStayOffTheCallersCpu) {
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof(saved), &saved), 0);
  if (CPU_COUNT(&saved) < 2) GTEST_SKIP() << "needs 2 CPUs";
  // Fresh workers, started before the pin: threads inherit their creator's affinity.
  set_compute_threads(1);
  set_compute_threads(2);
  parallel_for(2, [](std::int64_t) {});
  int caller_cpu = 0;
  while (!CPU_ISSET(caller_cpu, &saved)) ++caller_cpu;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(caller_cpu, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  const auto caller = std::this_thread::get_id();
  std::mutex mutex;
  int worker_tasks = 0, on_caller_cpu = 0;
  for (int round = 0; round < 20; ++round) {
    parallel_for(64, [&](std::int64_t) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (std::this_thread::get_id() == caller) return;
      cpu_set_t mask;
      sched_getaffinity(0, sizeof(mask), &mask);
      std::lock_guard lock(mutex);
      ++worker_tasks;
      if (CPU_ISSET(caller_cpu, &mask)) ++on_caller_cpu;
    });
  }
  sched_setaffinity(0, sizeof(saved), &saved);
  EXPECT_GT(worker_tasks, 0);
  EXPECT_EQ(on_caller_cpu, 0);
}

TEST_F(ParallelTest, FirstExceptionReachesTheCallerAfterEveryTask) {
  set_compute_threads(3);
  std::atomic<int> ran{0};
  EXPECT_THROW(parallel_for(100,
                            [&](std::int64_t i) {
                              ran.fetch_add(1);
                              if (i % 10 == 3) throw std::runtime_error("task failed");
                            }),
               std::runtime_error);
  EXPECT_EQ(ran.load(), 100);
  std::atomic<int> after{0};
  parallel_for(50, [&](std::int64_t) { after.fetch_add(1); });
  EXPECT_EQ(after.load(), 50);  // the pool still works
}

TEST_F(ParallelTest, NestedCallsRunInline) {
  set_compute_threads(3);
  std::vector<std::atomic<int>> runs(40 * 30);
  parallel_for(40, [&](std::int64_t i) {
    parallel_for(30,
                 [&](std::int64_t j) { runs[static_cast<std::size_t>(i * 30 + j)].fetch_add(1); });
  });
  for (const auto& r : runs) ASSERT_EQ(r.load(), 1);
}

// A kernel called inside a task sizes its slices and runs inline, without waiting for the job
// that runs it (a deadlock would end in ctest's timeout).
TEST_F(ParallelTest, KernelsInsideATaskRunInline) {
  set_compute_threads(2);
  const std::int64_t rows = 256, cols = 64;
  const auto w = test::random_floats(static_cast<std::size_t>(rows * cols), 3, 0.1f);
  const auto x = test::random_floats(static_cast<std::size_t>(cols), 4);
  const WeightView view{DType::kF32, rows, cols, w.data()};
  std::vector<float> direct(static_cast<std::size_t>(rows));
  matmul(x.data(), 1, view, direct.data());
  std::vector<std::vector<float>> nested(8, std::vector<float>(static_cast<std::size_t>(rows)));
  parallel_for(8, [&](std::int64_t i) { matmul(x.data(), 1, view, nested[static_cast<std::size_t>(i)].data()); });
  for (const auto& y : nested) EXPECT_EQ(y, direct);
}

TEST_F(ParallelTest, ConcurrentCallersGetTheirOwnResults) {
  set_compute_threads(3);
  constexpr int kCallers = 4, kRounds = 200, kTasks = 97;
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      std::vector<std::int64_t> out(kTasks);
      for (int round = 0; round < kRounds; ++round) {
        parallel_for(kTasks, [&](std::int64_t i) {
          out[static_cast<std::size_t>(i)] = c * 1000000 + round * 1000 + i;
        });
        for (std::int64_t i = 0; i < kTasks; ++i) {
          if (out[static_cast<std::size_t>(i)] != c * 1000000 + round * 1000 + i)
            wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(ParallelTest, ResizingBetweenCallsKeepsWorking) {
  for (int round = 0; round < 20; ++round) {
    set_compute_threads(1 + round % 4);
    std::atomic<std::int64_t> sum{0};
    parallel_for(1000, [&](std::int64_t i) { sum.fetch_add(i); });
    ASSERT_EQ(sum.load(), 999 * 1000 / 2);
  }
}

// The streaming kernels' row slices cover every row once, in ranges of whole 16-row units, for
// any thread count; a slice whose owner stalls is finished by the other thread from its end.
TEST_F(ParallelTest, RowSlicesCoverEveryRowOnceAndStalledSlicesAreTaken) {
  for (int threads : {1, 2, 3, 5}) {
    set_compute_threads(threads);
    for (std::int64_t rows : {0, 1, 63, 64, 65, 1000, 4099}) {
      std::vector<std::atomic<int>> runs(static_cast<std::size_t>(rows));
      std::atomic<bool> misaligned{false};
      cpu::for_each_row_slice(rows, 512, [&](std::int64_t r0, std::int64_t r1) {
        if (r0 % 16 != 0 || (r1 % 16 != 0 && r1 != rows)) misaligned = true;
        for (std::int64_t r = r0; r < r1; ++r) runs[static_cast<std::size_t>(r)].fetch_add(1);
      });
      EXPECT_FALSE(misaligned) << threads << " threads, " << rows << " rows";
      for (std::int64_t r = 0; r < rows; ++r)
        ASSERT_EQ(runs[static_cast<std::size_t>(r)].load(), 1) << threads << " threads, " << rows << " rows, row " << r;
    }
  }
  // 2 threads, 1024 rows of 2 KiB: slices [0, 512) and [512, 1024) in chunks of 16 rows. The
  // owner of the first slice holds its first chunk until the rest of its slice has been done.
  set_compute_threads(2);
  const std::int64_t rows = 1024;
  std::vector<std::atomic<int>> runs(static_cast<std::size_t>(rows));
  std::atomic<int> done_in_first{0};
  std::mutex mutex;
  std::set<std::thread::id> first_slice_threads;
  bool waited_out = false;
  cpu::for_each_row_slice(rows, 2048, [&](std::int64_t r0, std::int64_t r1) {
    if (r0 < 512) {
      std::lock_guard lock(mutex);
      first_slice_threads.insert(std::this_thread::get_id());
    }
    if (r0 == 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (done_in_first.load() < 512 - (r1 - r0) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      waited_out = done_in_first.load() < 512 - (r1 - r0);
    }
    for (std::int64_t r = r0; r < r1; ++r) {
      runs[static_cast<std::size_t>(r)].fetch_add(1);
      if (r < 512 && r0 != 0) done_in_first.fetch_add(1);
    }
  });
  EXPECT_FALSE(waited_out) << "nobody took the stalled slice's rows";
  EXPECT_EQ(first_slice_threads.size(), 2u);
  for (std::int64_t r = 0; r < rows; ++r) ASSERT_EQ(runs[static_cast<std::size_t>(r)].load(), 1) << "row " << r;
}

// Each output element is computed by one task in a fixed order, so the thread count must not
// change a single bit: decode, the blocked prompt paths (f32, bf16, int8) and attention.
TEST_F(ParallelTest, KernelsAreBitIdenticalAcrossThreadCounts) {
  const std::int64_t rows = 300, cols = 192;
  const auto wf = test::random_floats(static_cast<std::size_t>(rows * cols), 5, 0.1f);
  std::vector<std::uint16_t> wb;
  for (float v : wf) wb.push_back(f32_to_bf16(v));
  std::vector<std::int8_t> wq(static_cast<std::size_t>(rows * cols));
  std::vector<float> scales(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (std::int64_t k = 0; k < cols; ++k)
      amax = std::max(amax, std::fabs(wf[static_cast<std::size_t>(r * cols + k)]));
    scales[static_cast<std::size_t>(r)] = amax / 127.0f;
    for (std::int64_t k = 0; k < cols; ++k) {
      wq[static_cast<std::size_t>(r * cols + k)] = static_cast<std::int8_t>(std::lround(
          wf[static_cast<std::size_t>(r * cols + k)] / scales[static_cast<std::size_t>(r)]));
    }
  }
  const WeightView views[] = {
      {DType::kF32, rows, cols, wf.data()},
      {DType::kBF16, rows, cols, wb.data()},
      {DType::kI8, rows, cols, wq.data(), scales.data(), 6.0f},
  };
  for (const WeightView& w : views) {
    for (std::int64_t n : {1, 3, 17}) {
      auto x = test::random_floats(static_cast<std::size_t>(n * cols), 6);
      x[7] = 9.0f;  // one outlier column for the int8 decomposition
      std::vector<float> one(static_cast<std::size_t>(n * rows)), many(one.size());
      set_compute_threads(1);
      matmul(x.data(), n, w, one.data());
      set_compute_threads(3);
      matmul(x.data(), n, w, many.data());
      ASSERT_EQ(one, many) << dtype_name(w.dtype) << " with " << n << " tokens";
    }
  }
  const AttentionDims dims{8, 2, 32};
  const std::int64_t n = 5, start = 60, capacity = 80;
  const auto q = test::random_floats(static_cast<std::size_t>(n * dims.heads * dims.head_dim), 7);
  const auto k =
      test::random_floats(static_cast<std::size_t>(dims.kv_heads * capacity * dims.head_dim), 8);
  const auto v = test::random_floats(k.size(), 9);
  std::vector<float> one(q.size()), many(q.size());
  set_compute_threads(1);
  attention_causal(q.data(), n, start, k.data(), v.data(), capacity, dims, one.data());
  set_compute_threads(3);
  attention_causal(q.data(), n, start, k.data(), v.data(), capacity, dims, many.data());
  EXPECT_EQ(one, many);
}

}  // namespace
}  // namespace sepal

// Rows asked by many threads at once are computed together, each as alone: the batcher's own
// contract on a function that records its batches, and the LM head shared by generation threads.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "model/model_ends.h"
#include "model/row_batcher.h"
#include "model/safetensors.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

TEST(RowBatcher, RowsThatWaitTogetherGoInOneBatchAndEachGetsItsOwnResult) {
  RowBatcher batcher(2, 1, 16);
  constexpr int kThreads = 8;
  std::vector<std::int64_t> sizes;  // written by whichever thread computes, one batch at a time
  const RowBatcher::Compute sum = [&](const float* rows, std::int64_t n, float* out) {
    if (sizes.empty()) {
      // The first batch holds until every other thread waits: they then form the second batch.
      while (batcher.waiting() < kThreads - 1) std::this_thread::yield();
    }
    sizes.push_back(n);
    for (std::int64_t i = 0; i < n; ++i) out[i] = rows[2 * i] + rows[2 * i + 1];
  };
  std::vector<float> results(kThreads, -1.0f);
  std::vector<std::thread> threads;
  std::atomic<bool> first_in{false};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      if (t > 0) {
        while (!first_in.load()) std::this_thread::yield();
      }
      const float row[2] = {static_cast<float>(t), 100.0f};
      if (t == 0) first_in.store(true);
      batcher.row(row, &results[static_cast<std::size_t>(t)], sum);
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(results[static_cast<std::size_t>(t)], 100.0f + static_cast<float>(t));
  EXPECT_EQ(sizes, (std::vector<std::int64_t>{1, kThreads - 1}));
  EXPECT_EQ(batcher.batches(), (std::pair<std::int64_t, std::int64_t>{2, kThreads}));
  // A failing computation fails every row of its batch, and the batcher goes on.
  const RowBatcher::Compute broken = [](const float*, std::int64_t, float*) { throw std::runtime_error("broken"); };
  float out = 0;
  const float row[2] = {1, 2};
  EXPECT_THROW(batcher.row(row, &out, broken), std::runtime_error);
  batcher.row(row, &out, sum);
  EXPECT_EQ(out, 3.0f);
}

// Members stay in step: a batch waits for a member that comes back a little later than the others
// (within twice the time members stay away), does not wait for ever for one that stops asking,
// and no longer waits for one that left.
TEST(RowBatcher, ABatchWaitsForItsMembersForABoundedTime) {
  RowBatcher batcher(1, 1, 16);
  std::mutex sizes_mutex;
  std::vector<std::int64_t> sizes;
  const RowBatcher::Compute copy = [&](const float* rows, std::int64_t n, float* out) {
    std::lock_guard lock(sizes_mutex);
    sizes.push_back(n);
    std::copy(rows, rows + n, out);
  };
  auto a = batcher.join(), b = batcher.join();
  EXPECT_EQ(batcher.members(), 2);
  // Rounds: both away for 100 ms between rows, b back 5 ms after a. From the second round on
  // (once away times are measured) a waits for b: one batch a round.
  constexpr int kRounds = 4;
  std::thread late([&] {
    for (int r = 0; r < kRounds; ++r) {
      std::this_thread::sleep_for(std::chrono::milliseconds(105));
      float in = 2, out = 0;
      batcher.row(&in, &out, copy, b.get());
      EXPECT_EQ(out, 2.0f);
    }
  });
  for (int r = 0; r < kRounds; ++r) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    float in = 1, out = 0;
    batcher.row(&in, &out, copy, a.get());
    EXPECT_EQ(out, 1.0f);
  }
  late.join();
  {
    std::lock_guard lock(sizes_mutex);
    ASSERT_GE(sizes.size(), 2u);
    EXPECT_EQ(sizes.back(), 2) << "the last round ran without waiting for b";
    sizes.clear();
  }
  // b stops asking but stays a member: a's row still runs, alone, after its patience.
  float in = 3, out = 0;
  batcher.row(&in, &out, copy, a.get());
  EXPECT_EQ(out, 3.0f);
  // b leaves: a's rows run at once, alone.
  b.reset();
  EXPECT_EQ(batcher.members(), 1);
  batcher.row(&in, &out, copy, a.get());
  EXPECT_EQ(sizes, (std::vector<std::int64_t>{1, 1}));
}

// The thread that gathers a batch is woken when the last member's row arrives, not left asleep
// until its patience runs out: a's row (after 600 ms away, so a's patience is 1.2 s from b's
// last row) is done within 300 ms of b's, not 550 ms later.
TEST(RowBatcher, ABatchRunsWhenItsLastMemberArrives) {
  RowBatcher batcher(1, 1, 16);
  const RowBatcher::Compute copy = [](const float* rows, std::int64_t n, float* out) { std::copy(rows, rows + n, out); };
  auto a = batcher.join(), b = batcher.join();
  std::atomic<std::int64_t> b_asked_ns{0};
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(650));
    float in = 2, out = 0;
    b_asked_ns = std::chrono::steady_clock::now().time_since_epoch().count();
    batcher.row(&in, &out, copy, b.get());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  float in = 1, out = 0;
  batcher.row(&in, &out, copy, a.get());
  const auto done = std::chrono::steady_clock::now().time_since_epoch().count();
  late.join();
  EXPECT_EQ(batcher.batches(), (std::pair<std::int64_t, std::int64_t>{1, 2})) << "a did not wait for b";
  EXPECT_LT(std::chrono::nanoseconds(done - b_asked_ns.load()), std::chrono::milliseconds(300))
      << "a's batch waited for its patience after b's row had come";
}

// Generation threads' head rows: whatever batches they land in, each row's logits are the bits
// logits() gives it alone.
TEST(RowBatcher, TheSharedHeadGivesEachThreadTheLogitsOfItsRowAlone) {
  const auto dir = test::models_dir() / "tinystories-656K";
  const ModelConfig config = read_model_config(dir);
  const Checkpoint checkpoint = Checkpoint::open(dir);
  for (const DType dtype : {DType::kF32, DType::kI8}) {
    const ModelEnds ends = ModelEnds::load(checkpoint, config, dtype);
    constexpr int kThreads = 6, kRows = 20;
    std::vector<std::thread> threads;
    std::atomic<int> mismatches{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<float> got(static_cast<std::size_t>(config.vocab_size)), want(got.size());
        for (int r = 0; r < kRows; ++r) {
          const auto row = test::random_floats(static_cast<std::size_t>(config.hidden_size), 1000 * t + r);
          ends.logits_of_row(row.data(), got.data());
          ends.logits(row.data(), 1, want.data());
          if (got != want) ++mismatches;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(mismatches.load(), 0) << dtype_name(dtype);
    EXPECT_EQ(ends.head_batches().second, kThreads * kRows);
  }
}

}  // namespace
}  // namespace sepal

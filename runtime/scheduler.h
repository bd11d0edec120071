#pragma once
// Where actor work runs. ThreadPoolScheduler runs tasks on a few threads with a real clock;
// ManualScheduler runs nothing until a test asks, one task at a time, on a virtual clock, so that
// actor tests step through a conversation message by message with no sleeps (as CAF's
// deterministic fixture does).
//
// Thread-safety: post() and post_at() are thread-safe on both. ManualScheduler's run_* and
// advance() belong to the test thread.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace sepal {

/// Runs tasks, now or at a time.
class Scheduler {
 public:
  using Clock = std::chrono::steady_clock;
  using Task = std::function<void()>;
  /// A timer posted with post_at, to cancel it.
  struct Timer {
    Clock::time_point when;
    std::uint64_t id = 0;
    friend auto operator<=>(const Timer&, const Timer&) = default;
  };
  virtual ~Scheduler() = default;
  /// Runs `task` soon.
  virtual void post(Task task) = 0;
  /// Runs `task` at or after `when` (by now()).
  virtual Timer post_at(Clock::time_point when, Task task) = 0;
  /// Drops `timer`'s task unless it is already due: true when it will not run. (A request's
  /// timeout is cancelled when the reply comes, so that it does not wake a thread later for nothing.)
  virtual bool cancel(const Timer& timer) = 0;
  /// The scheduler's clock.
  virtual Clock::time_point now() const = 0;
};

/// A fixed pool of worker threads plus one timer thread.
class ThreadPoolScheduler final : public Scheduler {
 public:
  explicit ThreadPoolScheduler(int threads);
  ~ThreadPoolScheduler() override;
  void post(Task task) override;
  Timer post_at(Clock::time_point when, Task task) override;
  bool cancel(const Timer& timer) override;
  Clock::time_point now() const override { return Clock::now(); }
  /// Stops the threads after the tasks already posted; later posts are dropped. Idempotent.
  void shutdown();

 private:
  void work();
  void time();

  std::mutex mutex_;
  std::condition_variable ready_, timer_ready_;
  std::deque<Task> tasks_;
  std::map<Timer, Task> timers_;
  std::uint64_t next_timer_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  std::thread timer_;
};

/// Runs tasks only when told, on a virtual clock that moves only when told.
class ManualScheduler final : public Scheduler {
 public:
  ManualScheduler();
  void post(Task task) override;
  Timer post_at(Clock::time_point when, Task task) override;
  bool cancel(const Timer& timer) override;
  Clock::time_point now() const override;

  /// Runs the oldest ready task; false when none is ready.
  bool run_one();
  /// Runs ready tasks (including ones they post) until none is left; returns how many ran.
  int run_all(int limit = 100000);
  /// Moves the clock forward, making due timers ready (in time order); does not run them.
  void advance(Clock::duration by);
  /// Tasks ready to run.
  std::size_t ready() const;

 private:
  mutable std::mutex mutex_;
  std::deque<Task> tasks_;
  std::map<Timer, Task> timers_;
  std::uint64_t next_timer_ = 0;
  Clock::time_point now_;
};

}  // namespace sepal

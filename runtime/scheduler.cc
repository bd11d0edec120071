#include "runtime/scheduler.h"

#include <pthread.h>

namespace sepal {

ThreadPoolScheduler::ThreadPoolScheduler(int threads) {
  // Named so that `top -H` and `perf sched` tell a process's threads apart.
  for (int i = 0; i < std::max(1, threads); ++i) {
    workers_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "sepal-actors");
      work();
    });
  }
  timer_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "sepal-timers");
    time();
  });
}

ThreadPoolScheduler::~ThreadPoolScheduler() { shutdown(); }

void ThreadPoolScheduler::shutdown() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  ready_.notify_all();
  timer_ready_.notify_all();
  for (auto& w : workers_) w.join();
  timer_.join();
}

void ThreadPoolScheduler::post(Task task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    tasks_.push_back(std::move(task));
  }
  ready_.notify_one();
}

Scheduler::Timer ThreadPoolScheduler::post_at(Clock::time_point when, Task task) {
  bool earliest = false;
  Timer timer;
  {
    std::lock_guard lock(mutex_);
    timer = Timer{when, next_timer_++};
    if (stopping_) return timer;
    earliest = timers_.empty() || when < timers_.begin()->first.when;
    timers_.emplace(timer, std::move(task));
  }
  // The timer thread sleeps until the earliest timer: a later one needs no wake-up (every
  // request arms its timeout, so this saves a context switch per request).
  if (earliest) timer_ready_.notify_one();
  return timer;
}

bool ThreadPoolScheduler::cancel(const Timer& timer) {
  // The timer thread may wake for the cancelled deadline and find nothing due: harmless.
  std::lock_guard lock(mutex_);
  return timers_.erase(timer) > 0;
}

void ThreadPoolScheduler::work() {
  std::unique_lock lock(mutex_);
  while (true) {
    ready_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // stopping, and the queue is drained
    Task task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    lock.lock();
  }
}

void ThreadPoolScheduler::time() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (timers_.empty()) {
      timer_ready_.wait(lock);
      continue;
    }
    const auto when = timers_.begin()->first.when;
    if (Clock::now() < when) {
      timer_ready_.wait_until(lock, when);
      continue;
    }
    Task task = std::move(timers_.begin()->second);
    timers_.erase(timers_.begin());
    tasks_.push_back(std::move(task));
    ready_.notify_one();
  }
}

ManualScheduler::ManualScheduler() : now_(Clock::time_point{} + std::chrono::hours(1)) {}

void ManualScheduler::post(Task task) {
  std::lock_guard lock(mutex_);
  tasks_.push_back(std::move(task));
}

Scheduler::Timer ManualScheduler::post_at(Clock::time_point when, Task task) {
  std::lock_guard lock(mutex_);
  const Timer timer{when, next_timer_++};
  timers_.emplace(timer, std::move(task));
  return timer;
}

bool ManualScheduler::cancel(const Timer& timer) {
  std::lock_guard lock(mutex_);
  return timers_.erase(timer) > 0;
}

Scheduler::Clock::time_point ManualScheduler::now() const {
  std::lock_guard lock(mutex_);
  return now_;
}

bool ManualScheduler::run_one() {
  Task task;
  {
    std::lock_guard lock(mutex_);
    if (tasks_.empty()) return false;
    task = std::move(tasks_.front());
    tasks_.pop_front();
  }
  task();
  return true;
}

int ManualScheduler::run_all(int limit) {
  int ran = 0;
  while (ran < limit && run_one()) ++ran;
  return ran;
}

void ManualScheduler::advance(Clock::duration by) {
  std::lock_guard lock(mutex_);
  now_ += by;
  while (!timers_.empty() && timers_.begin()->first.when <= now_) {
    tasks_.push_back(std::move(timers_.begin()->second));
    timers_.erase(timers_.begin());
  }
}

std::size_t ManualScheduler::ready() const {
  std::lock_guard lock(mutex_);
  return tasks_.size();
}

}  // namespace sepal

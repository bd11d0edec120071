#include "model/row_batcher.h"

#include <algorithm>
#include <vector>

namespace sepal {

RowBatcher::RowBatcher(std::int64_t in_width, std::int64_t out_width, std::int64_t max_rows)
    : in_width_(in_width), out_width_(out_width), max_rows_(std::max<std::int64_t>(max_rows, 1)) {}

RowBatcher::Membership::~Membership() {
  std::lock_guard lock(batcher_.mutex_);
  batcher_.members_.erase(this);
  batcher_.arrived_.notify_all();
}

std::unique_ptr<RowBatcher::Membership> RowBatcher::join() {
  std::unique_ptr<Membership> m(new Membership(*this));
  std::lock_guard lock(mutex_);
  m->back = Clock::now();
  members_.insert(m.get());
  return m;
}

RowBatcher::Clock::time_point RowBatcher::gathered_by() const {
  if (static_cast<std::int64_t>(queue_.size()) >= max_rows_) return Clock::time_point::min();
  // The members' typical time away: the median of their averages, so that a few slow members (a
  // stalled stream) do not make the others wait longer for everyone.
  std::vector<double> aways;
  for (const Membership* m : members_) {
    if (m->away_seconds > 0) aways.push_back(m->away_seconds);
  }
  if (aways.empty()) return Clock::time_point::min();
  std::nth_element(aways.begin(), aways.begin() + static_cast<std::ptrdiff_t>(aways.size() / 2), aways.end());
  const double typical = aways[aways.size() / 2];
  const auto patience = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(2 * typical));
  // The latest moment a missing member stops being waited for.
  auto by = Clock::time_point::min();
  for (const Membership* m : members_) {
    if (!m->queued) by = std::max(by, m->back + patience);
  }
  return by;
}

void RowBatcher::row(const float* in, float* out, const Compute& compute, Membership* member) {
  Request mine{in, out, member, false, {}};
  std::unique_lock lock(mutex_);
  const auto gathered_before = gathered_by();
  if (member) {
    const double away = std::chrono::duration<double>(Clock::now() - member->back).count();
    member->away_seconds = member->away_seconds > 0 ? 0.75 * member->away_seconds + 0.25 * away : away;
    member->queued = true;
  }
  queue_.push_back(&mine);
  // The thread that gathers the next batch waits until gathered_by(): wake it only when this row
  // brought that moment earlier (the last member came, the batch filled), not at every arrival.
  if (gathered_by() < gathered_before) arrived_.notify_all();
  while (!mine.done) {
    if (busy_ || queue_.front() != &mine) {
      finished_.wait(lock);
      continue;
    }
    // This thread's row is the oldest: it gathers the next batch and computes it.
    if (const auto by = gathered_by(); Clock::now() < by) {
      arrived_.wait_until(lock, by);
      continue;
    }
    busy_ = true;
    std::vector<Request*> batch;
    while (!queue_.empty() && static_cast<std::int64_t>(batch.size()) < max_rows_) {
      batch.push_back(queue_.front());
      queue_.pop_front();
    }
    lock.unlock();
    const auto n = static_cast<std::int64_t>(batch.size());
    std::exception_ptr failed;
    try {
      if (n == 1) {
        compute(batch[0]->in, 1, batch[0]->out);
      } else {
        std::vector<float> rows(static_cast<std::size_t>(n * in_width_)), outs(static_cast<std::size_t>(n * out_width_));
        for (std::int64_t i = 0; i < n; ++i) std::copy(batch[i]->in, batch[i]->in + in_width_, rows.begin() + i * in_width_);
        compute(rows.data(), n, outs.data());
        for (std::int64_t i = 0; i < n; ++i) {
          std::copy(outs.begin() + i * out_width_, outs.begin() + (i + 1) * out_width_, batch[i]->out);
        }
      }
    } catch (...) {
      failed = std::current_exception();
    }
    lock.lock();
    const auto now = Clock::now();
    for (Request* r : batch) {
      r->failed = failed;
      r->done = true;
      if (r->member) {
        r->member->queued = false;
        r->member->back = now;
      }
    }
    ++batches_;
    rows_ += n;
    busy_ = false;
    finished_.notify_all();
  }
  if (mine.failed) std::rethrow_exception(mine.failed);
}

std::pair<std::int64_t, std::int64_t> RowBatcher::batches() const {
  std::lock_guard lock(mutex_);
  return {batches_, rows_};
}

std::int64_t RowBatcher::waiting() const {
  std::lock_guard lock(mutex_);
  return static_cast<std::int64_t>(queue_.size());
}

std::int64_t RowBatcher::members() const {
  std::lock_guard lock(mutex_);
  return static_cast<std::int64_t>(members_.size());
}

}  // namespace sepal

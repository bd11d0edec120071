#include "model/row_batcher.h"

#include <algorithm>
#include <vector>

namespace sepal {

RowBatcher::RowBatcher(std::int64_t in_width, std::int64_t out_width, std::int64_t max_rows)
    : in_width_(in_width), out_width_(out_width), max_rows_(std::max<std::int64_t>(max_rows, 1)) {}

void RowBatcher::row(const float* in, float* out, const Compute& compute) {
  Request mine{in, out};
  std::unique_lock lock(mutex_);
  queue_.push_back(&mine);
  while (!mine.done) {
    if (busy_) {
      finished_.wait(lock);
      continue;
    }
    // This thread computes the next batch: the oldest requests, which may or may not hold its own.
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
    for (Request* r : batch) {
      r->failed = failed;
      r->done = true;
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

}  // namespace sepal

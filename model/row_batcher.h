#pragma once
// Single rows that many threads ask of one function at the same time, computed together: a
// caller alone computes at once; callers that arrive while a batch runs queue, and the next batch
// (up to max_rows of them) is computed by one of them while the others wait (flat combining). What
// several generation threads share: the LM head, whose weights one batch reads once per
// kStreamingMaxTokens rows instead of once per row.
//
// Thread-safety: row() may be called from any number of threads.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>

namespace sepal {

class RowBatcher {
 public:
  /// `compute(rows[n, in_width], n, out[n, out_width])` must give each row what it gives that row
  /// alone (the batch a row lands in is not chosen by its caller), and every caller of one
  /// batcher must pass the same computation (whichever caller runs a batch runs its own).
  using Compute = std::function<void(const float* rows, std::int64_t n, float* out)>;
  RowBatcher(std::int64_t in_width, std::int64_t out_width, std::int64_t max_rows);

  /// out[out_width] = compute of one row in[in_width]; rethrows what compute threw for its batch.
  void row(const float* in, float* out, const Compute& compute);
  /// Batches computed so far, and the rows they held.
  std::pair<std::int64_t, std::int64_t> batches() const;
  /// Rows waiting for a batch now.
  std::int64_t waiting() const;

 private:
  struct Request {
    const float* in = nullptr;
    float* out = nullptr;
    bool done = false;
    std::exception_ptr failed;
  };
  std::int64_t in_width_, out_width_, max_rows_;
  mutable std::mutex mutex_;
  std::condition_variable finished_;
  std::deque<Request*> queue_;
  bool busy_ = false;
  std::int64_t batches_ = 0, rows_ = 0;
};

}  // namespace sepal

#pragma once
// Single rows that many threads ask of one function at the same time, computed together: callers
// that arrive while a batch runs queue, and the next batch (up to max_rows of them) is computed by
// one of them while the others wait (flat combining). What several generation threads share: the
// LM head, whose weights one batch reads once for all its rows.
//
// Callers that ask again and again (a generation, one row a token) may join as members. A batch
// then waits for a row from every member, so that generations that run side by side stay in step
// (one head batch, then every session's step reaching the hosts together, where they batch too)
// instead of splitting into groups that each pay for a full read of the weights. It waits no longer
// than the members' patience: twice the typical time a member stays away between two rows (a
// round through the hosts; the median over the members of each one's average, so a few slow
// members do not lengthen it). A member away longer than that (stalled, or slow to ask) is not
// waited for until it comes back. A batcher without members computes at once, as does one whose members
// are all here.
//
// Thread-safety: row(), join() and the counters may be called from any number of threads; a
// Membership belongs to one caller.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <set>

namespace sepal {

class RowBatcher {
 public:
  using Clock = std::chrono::steady_clock;
  /// `compute(rows[n, in_width], n, out[n, out_width])` must give each row what it gives that row
  /// alone (the batch a row lands in is not chosen by its caller), and every caller of one
  /// batcher must pass the same computation (whichever caller runs a batch runs its own).
  using Compute = std::function<void(const float* rows, std::int64_t n, float* out)>;
  RowBatcher(std::int64_t in_width, std::int64_t out_width, std::int64_t max_rows);

  /// One member's registration; leaving (destruction) stops batches from waiting for it.
  class Membership {
   public:
    ~Membership();
    Membership(const Membership&) = delete;
    Membership& operator=(const Membership&) = delete;

   private:
    friend class RowBatcher;
    explicit Membership(RowBatcher& batcher) : batcher_(batcher) {}
    RowBatcher& batcher_;
    Clock::time_point back;    ///< when its last row was done (or it joined)
    double away_seconds = 0;   ///< average time away between rows (0: not measured)
    bool queued = false;
  };
  /// Joins as a member; see the file comment.
  std::unique_ptr<Membership> join();

  /// out[out_width] = compute of one row in[in_width]; rethrows what compute threw for its batch.
  /// `member` (may be null) must have joined this batcher and have no other row waiting.
  void row(const float* in, float* out, const Compute& compute, Membership* member = nullptr);
  /// Batches computed so far, and the rows they held.
  std::pair<std::int64_t, std::int64_t> batches() const;
  /// Rows waiting for a batch now.
  std::int64_t waiting() const;
  /// Members now.
  std::int64_t members() const;

 private:
  struct Request {
    const float* in = nullptr;
    float* out = nullptr;
    Membership* member = nullptr;
    bool done = false;
    std::exception_ptr failed;
  };
  // Holding mutex_: when the next batch may run (now, or Clock::time_point::min() for now).
  Clock::time_point gathered_by() const;

  std::int64_t in_width_, out_width_, max_rows_;
  mutable std::mutex mutex_;
  std::condition_variable finished_;  // a batch finished: its rows are done, the next may start
  std::condition_variable arrived_;   // a row arrived or a member left (for the oldest row's thread)
  std::deque<Request*> queue_;
  std::set<Membership*> members_;
  bool busy_ = false;
  std::int64_t batches_ = 0, rows_ = 0;
};

}  // namespace sepal

#include "runtime/wan_transport.h"

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <queue>
#include <thread>

namespace sepal {

struct WanTransport::Scheduler {
  using Clock = std::chrono::steady_clock;
  struct Held {
    Clock::time_point release;
    std::uint64_t order;
    PeerId to;
    std::shared_ptr<OutgoingFrame> frame;
    bool operator>(const Held& o) const { return release != o.release ? release > o.release : order > o.order; }
  };

  Transport* inner;
  WanConfig config;
  std::uint64_t seed;
  Clock::time_point origin = Clock::now();
  std::mutex mutex;
  std::condition_variable wake;
  std::priority_queue<Held, std::vector<Held>, std::greater<>> held;
  std::map<PeerId, WanLink> links;
  std::uint64_t next_order = 0;
  bool stopping = false;
  std::thread thread;

  Status hold(PeerId to, OutgoingFrame frame) {
    std::lock_guard lock(mutex);
    if (stopping) return error(StatusCode::kCancelled, "transport stopped");
    auto it = links.find(to);
    if (it == links.end()) it = links.emplace(to, WanLink(config, seed * 1000003 + to)).first;
    const auto now = std::chrono::duration_cast<WanLink::Duration>(Clock::now() - origin);
    const auto at = origin + it->second.delivery_time(now, frame.size());
    held.push(Held{at, next_order++, to, std::make_shared<OutgoingFrame>(std::move(frame))});
    wake.notify_one();
    return Status::ok();
  }

  void run() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      if (held.empty()) {
        wake.wait(lock);
        continue;
      }
      const auto at = held.top().release;
      if (Clock::now() < at) {
        wake.wait_until(lock, at);
        continue;
      }
      Held h = held.top();
      held.pop();
      lock.unlock();
      (void)inner->send(h.to, std::move(*h.frame));  // a failed peer is reported by the inner transport
      lock.lock();
    }
  }
};

WanTransport::WanTransport(std::unique_ptr<Transport> inner, WanConfig config, std::uint64_t seed)
    : inner_(std::move(inner)), scheduler_(std::make_unique<Scheduler>()) {
  scheduler_->inner = inner_.get();
  scheduler_->config = config;
  scheduler_->seed = seed + inner_->self();
}

WanTransport::~WanTransport() { stop(); }

PeerId WanTransport::self() const { return inner_->self(); }
std::string WanTransport::name() const { return inner_->name() + "+wan"; }
std::vector<PeerId> WanTransport::peers() const { return inner_->peers(); }

Status WanTransport::start(TransportHandler* handler) {
  SEPAL_RETURN_IF_ERROR(inner_->start(handler));
  scheduler_->thread = std::thread([s = scheduler_.get()] {
    pthread_setname_np(pthread_self(), "sepal-wan");
    s->run();
  });
  return Status::ok();
}

Status WanTransport::send(PeerId to, OutgoingFrame frame) {
  SEPAL_RETURN_IF_ERROR(frame.status());
  const auto peers = inner_->peers();
  if (std::find(peers.begin(), peers.end(), to) == peers.end()) {
    return error(StatusCode::kPeerFailed, "peer ", to, " is unknown or has failed");
  }
  return scheduler_->hold(to, std::move(frame));
}

void WanTransport::stop() {
  {
    std::lock_guard lock(scheduler_->mutex);
    if (scheduler_->stopping) return;
    // Frames still held are flushed now rather than lost: stop() flushes, as Transport says.
    while (!scheduler_->held.empty()) {
      auto h = scheduler_->held.top();
      scheduler_->held.pop();
      (void)inner_->send(h.to, std::move(*h.frame));
    }
    scheduler_->stopping = true;
  }
  scheduler_->wake.notify_all();
  if (scheduler_->thread.joinable()) scheduler_->thread.join();
  inner_->stop();
}

}  // namespace sepal

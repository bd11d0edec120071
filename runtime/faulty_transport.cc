#include "runtime/faulty_transport.h"

#include <algorithm>

namespace sepal {

FaultyTransport::FaultyTransport(std::unique_ptr<Transport> inner) : inner_(std::move(inner)) {}

FaultyTransport::~FaultyTransport() { stop(); }

void FaultyTransport::drop_next(PeerId peer, int count) {
  std::lock_guard lock(mutex_);
  drops_[peer] += count;
}

void FaultyTransport::delay(PeerId peer, std::chrono::milliseconds d) {
  std::lock_guard lock(mutex_);
  delays_[peer] = d;
}

void FaultyTransport::partition(PeerId peer) {
  std::lock_guard lock(mutex_);
  partitioned_.insert(peer);
}

void FaultyTransport::heal(PeerId peer) {
  std::lock_guard lock(mutex_);
  partitioned_.erase(peer);
}

void FaultyTransport::kill_link(PeerId peer) {
  TransportHandler* handler = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (!killed_.insert(peer).second) return;
    handler = handler_;
  }
  if (handler) handler->on_peer_failed(peer, error(StatusCode::kPeerFailed, "link to peer ", peer, " was killed"));
}

std::vector<PeerId> FaultyTransport::peers() const {
  auto all = inner_->peers();
  std::lock_guard lock(mutex_);
  all.erase(std::remove_if(all.begin(), all.end(), [&](PeerId p) { return killed_.count(p) > 0; }), all.end());
  return all;
}

Status FaultyTransport::start(TransportHandler* handler) {
  {
    std::lock_guard lock(mutex_);
    handler_ = handler;
  }
  return inner_->start(this);
}

Status FaultyTransport::send(PeerId to, OutgoingFrame frame) {
  std::chrono::milliseconds wait{0};
  {
    std::lock_guard lock(mutex_);
    if (killed_.count(to)) return error(StatusCode::kPeerFailed, "link to peer ", to, " was killed");
    if (partitioned_.count(to)) return Status::ok();  // vanishes, as on a partitioned network
    if (auto it = drops_.find(to); it != drops_.end() && it->second > 0) {
      --it->second;
      return Status::ok();
    }
    if (auto it = delays_.find(to); it != delays_.end()) wait = it->second;
    if (wait.count() > 0 && !stopping_) {
      auto shared = std::make_shared<OutgoingFrame>(std::move(frame));
      delayed_.emplace_back([this, to, shared, wait] {
        std::this_thread::sleep_for(wait);
        (void)inner_->send(to, std::move(*shared));
      });
      return Status::ok();
    }
  }
  return inner_->send(to, std::move(frame));
}

void FaultyTransport::stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    threads.swap(delayed_);
  }
  for (auto& t : threads) t.join();
  inner_->stop();
}

TransportHandler* FaultyTransport::handler() {
  std::lock_guard lock(mutex_);
  return handler_;
}

void FaultyTransport::begin_delivery() {
  if (TransportHandler* h = handler()) h->begin_delivery();
}

void FaultyTransport::end_delivery() {
  if (TransportHandler* h = handler()) h->end_delivery();
}

void FaultyTransport::on_frame(PeerId from, std::shared_ptr<const Buffer> frame) {
  TransportHandler* handler;
  {
    std::lock_guard lock(mutex_);
    if (partitioned_.count(from) || killed_.count(from)) return;
    handler = handler_;
  }
  handler->on_frame(from, std::move(frame));
}

void FaultyTransport::on_peer_failed(PeerId peer, const Status& why) {
  TransportHandler* handler;
  {
    std::lock_guard lock(mutex_);
    if (killed_.count(peer)) return;  // already reported when the link was killed
    killed_.insert(peer);
    handler = handler_;
  }
  handler->on_peer_failed(peer, why);
}

}  // namespace sepal

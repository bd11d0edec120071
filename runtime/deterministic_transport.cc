#include "runtime/deterministic_transport.h"

namespace sepal {

class DeterministicEndpoint final : public Transport {
 public:
  DeterministicEndpoint(std::shared_ptr<DeterministicNetwork> network, PeerId id)
      : network_(std::move(network)), id_(id) {}
  PeerId self() const override { return id_; }
  std::string name() const override { return "deterministic"; }
  std::vector<PeerId> peers() const override {
    std::lock_guard lock(network_->mutex_);
    std::vector<PeerId> out;
    for (PeerId p = 0; p < network_->alive_.size(); ++p) {
      if (p != id_ && network_->alive_[p]) out.push_back(p);
    }
    return out;
  }
  Status start(TransportHandler* handler) override {
    std::lock_guard lock(network_->mutex_);
    network_->handlers_[id_] = handler;
    return Status::ok();
  }
  Status send(PeerId to, OutgoingFrame frame) override {
    SEPAL_RETURN_IF_ERROR(frame.status());
    std::lock_guard lock(network_->mutex_);
    if (to >= network_->alive_.size()) return error(StatusCode::kNotFound, "no peer ", to);
    if (!network_->alive_[to]) return error(StatusCode::kPeerFailed, "peer ", to, " has failed");
    auto buffer = frame.flatten();
    network_->log_.push_back({id_, to, decode_envelope(*buffer).value()});
    auto network = network_;
    const PeerId from = id_;
    network_->scheduler_.post([network, from, to, buffer] {
      TransportHandler* handler = nullptr;
      {
        std::lock_guard lock(network->mutex_);
        if (!network->alive_[to] || !network->alive_[from]) return;
        handler = network->handlers_[to];
      }
      if (handler) handler->on_frame(from, buffer);
    });
    return Status::ok();
  }
  void stop() override {}
  std::vector<std::byte> address() const override { return {std::byte{static_cast<unsigned char>(id_)}}; }
  Status connect(PeerId id, std::span<const std::byte>, const LinkKey&) override {
    std::lock_guard lock(network_->mutex_);
    return id < network_->alive_.size() ? Status::ok() : error(StatusCode::kNotFound, "no endpoint ", id);
  }

 private:
  std::shared_ptr<DeterministicNetwork> network_;
  PeerId id_;
};

std::shared_ptr<DeterministicNetwork> DeterministicNetwork::create(ManualScheduler& scheduler) {
  return std::shared_ptr<DeterministicNetwork>(new DeterministicNetwork(scheduler));
}

std::unique_ptr<Transport> DeterministicNetwork::endpoint() {
  std::lock_guard lock(mutex_);
  handlers_.push_back(nullptr);
  alive_.push_back(true);
  return std::make_unique<DeterministicEndpoint>(shared_from_this(), static_cast<PeerId>(alive_.size() - 1));
}

std::vector<DeterministicNetwork::Sent> DeterministicNetwork::take_log() {
  std::lock_guard lock(mutex_);
  return std::exchange(log_, {});
}

void DeterministicNetwork::kill(PeerId id) {
  std::lock_guard lock(mutex_);
  if (id >= alive_.size() || !alive_[id]) return;
  alive_[id] = false;
  for (PeerId p = 0; p < alive_.size(); ++p) {
    if (p == id || !alive_[p] || !handlers_[p]) continue;
    auto* handler = handlers_[p];
    scheduler_.post([handler, id] { handler->on_peer_failed(id, error(StatusCode::kPeerFailed, "peer ", id, " was killed")); });
  }
}

}  // namespace sepal

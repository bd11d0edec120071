#pragma once
// Transport between endpoints in one process (tests, single-process swarms). A hub connects the
// endpoints; each endpoint delivers on its own thread. kill() makes an endpoint die as a crashed
// process would: its peers are told after the hub's failure delay.
//
// Thread-safety: all methods are thread-safe.

#include <chrono>
#include <memory>
#include <mutex>

#include "runtime/transport.h"

namespace sepal {

class InprocTransport;

/// Connects in-process endpoints.
class InprocHub : public std::enable_shared_from_this<InprocHub> {
 public:
  /// A hub whose endpoints learn of a killed peer after `failure_delay`.
  static std::shared_ptr<InprocHub> create(std::chrono::milliseconds failure_delay = std::chrono::milliseconds{50});
  /// A new endpoint with the next free id (0, 1, 2, ...).
  std::unique_ptr<InprocTransport> endpoint();
  /// Kills endpoint `id`: it stops delivering and every other endpoint gets on_peer_failed.
  void kill(PeerId id);

 private:
  friend class InprocTransport;
  InprocHub() = default;
  struct State;
  std::shared_ptr<State> state_;
};

/// One endpoint of an InprocHub.
class InprocTransport final : public Transport {
 public:
  ~InprocTransport() override;
  PeerId self() const override { return id_; }
  std::string name() const override { return "inproc"; }
  std::vector<PeerId> peers() const override;
  Status start(TransportHandler* handler) override;
  Status send(PeerId to, OutgoingFrame frame) override;
  void stop() override;

 private:
  friend class InprocHub;
  InprocTransport(std::shared_ptr<InprocHub::State> hub, PeerId id) : hub_(std::move(hub)), id_(id) {}
  std::shared_ptr<InprocHub::State> hub_;
  PeerId id_;
};

}  // namespace sepal

#pragma once
// A Transport wrapper that makes every outgoing link behave like a wide-area link (WanLink):
// frames are held on the sending side until the model says they arrive, then handed to the inner
// transport. Every process of the swarm wraps its transport, so both directions are emulated.
// (This kernel has no netem; see docs/runtime.md.)
//
// Thread-safety: as Transport.

#include <memory>

#include "runtime/transport.h"
#include "runtime/wan_link.h"

namespace sepal {

/// WAN emulation around another transport.
class WanTransport final : public Transport {
 public:
  WanTransport(std::unique_ptr<Transport> inner, WanConfig config, std::uint64_t seed = 1);
  ~WanTransport() override;

  PeerId self() const override;
  std::string name() const override;
  std::vector<PeerId> peers() const override;
  Status start(TransportHandler* handler) override;
  Status send(PeerId to, OutgoingFrame frame) override;
  void stop() override;
  std::vector<std::byte> address() const override { return inner_->address(); }
  Status connect(PeerId id, std::span<const std::byte> address, const LinkKey& key) override {
    return inner_->connect(id, address, key);
  }
  std::optional<LinkKey> link_key(PeerId peer) const override { return inner_->link_key(peer); }
  /// The wrapped transport.
  Transport& inner() { return *inner_; }

 private:
  struct Scheduler;
  std::unique_ptr<Transport> inner_;
  std::unique_ptr<Scheduler> scheduler_;
};

}  // namespace sepal

#pragma once
// A Transport wrapper that injects faults for tests, the way LevelDB's fault-injection Env wraps
// the real one: drop frames, delay them, partition a peer (nothing passes either way), or kill
// the link to a peer (reported as a failure at once). Faults change at run time.
//
// Thread-safety: as Transport; the fault controls are thread-safe too.

#include <chrono>
#include <memory>
#include <mutex>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "runtime/transport.h"

namespace sepal {

/// Fault injection around another transport.
class FaultyTransport final : public Transport, private TransportHandler {
 public:
  explicit FaultyTransport(std::unique_ptr<Transport> inner);
  ~FaultyTransport() override;

  /// Drops the next `count` frames sent to `peer`.
  void drop_next(PeerId peer, int count);
  /// Holds every frame sent to `peer` for `delay` before passing it on (0 to stop delaying).
  void delay(PeerId peer, std::chrono::milliseconds delay);
  /// Silently discards everything to and from `peer` until heal(); the membership heartbeats
  /// that cross this wrapper then declare it failed.
  void partition(PeerId peer);
  /// Ends a partition.
  void heal(PeerId peer);
  /// Breaks the link to `peer`: reports it failed now and refuses sends to it.
  void kill_link(PeerId peer);

  PeerId self() const override { return inner_->self(); }
  std::string name() const override { return inner_->name() + "+faults"; }
  std::vector<PeerId> peers() const override;
  Status start(TransportHandler* handler) override;
  Status send(PeerId to, OutgoingFrame frame) override;
  void stop() override;
  std::vector<std::byte> address() const override { return inner_->address(); }
  Status connect(PeerId id, std::span<const std::byte> address, const LinkKey& key) override {
    return inner_->connect(id, address, key);
  }
  std::optional<LinkKey> link_key(PeerId peer) const override { return inner_->link_key(peer); }

 private:
  void on_frame(PeerId from, std::shared_ptr<const Buffer> frame) override;
  void on_peer_failed(PeerId peer, const Status& why) override;
  void begin_delivery() override;
  void end_delivery() override;
  // The handler frames go to (null before start), read under the lock.
  TransportHandler* handler();

  std::unique_ptr<Transport> inner_;
  TransportHandler* handler_ = nullptr;
  mutable std::mutex mutex_;
  std::map<PeerId, int> drops_;
  std::map<PeerId, std::chrono::milliseconds> delays_;
  std::set<PeerId> partitioned_;
  std::set<PeerId> killed_;
  std::vector<std::thread> delayed_;
  bool stopping_ = false;
};

}  // namespace sepal

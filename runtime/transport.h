#pragma once
// Moving frames between processes. One interface, several implementations (in-process, MPI,
// UCX) and wrappers (WAN emulation, fault injection) that all pass tests/transport_conformance.
//
// Contract, for every implementation:
// - send() is thread-safe and returns at once; the frame's memory (its tensors' owners) is held
//   until the bytes are gone.
// - Frames from one sender thread to one peer arrive in the order they were sent.
// - A peer that dies or becomes unreachable is reported once through on_peer_failed, within the
//   configured failure timeout; sends to it then fail with kPeerFailed. Nothing waits forever.
// - Handler calls come from the transport's own thread, one at a time; a handler must not block.
// - The `from` given to a handler is the sender as the transport authenticated it. A transport
//   open to processes outside the job (UCX) proves it with a tag under the link key of every
//   message; what fails is dropped before any handler sees it.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/buffer.h"
#include "runtime/link_auth.h"
#include "runtime/status.h"
#include "runtime/wire.h"

namespace sepal {

/// A process of the swarm, as transports name it.
using PeerId = std::uint32_t;

/// Receives what a transport delivers.
class TransportHandler {
 public:
  virtual ~TransportHandler() = default;
  /// A frame from `from`; `frame` is 64-byte aligned and may be kept.
  virtual void on_frame(PeerId from, std::shared_ptr<const Buffer> frame) = 0;
  /// `peer` died or its link broke; no more frames will come from it.
  virtual void on_peer_failed(PeerId peer, const Status& why) = 0;
  /// A transport that delivers frames in passes may bracket each pass, on the delivering thread:
  /// the frames between are one arrival, and the handler may hold back the wake-ups they cause
  /// until end_delivery(), so that steps of many sessions that arrived together wake an actor
  /// once, not once each. Not nested.
  virtual void begin_delivery() {}
  virtual void end_delivery() {}
};

/// One delivery pass of a handler, for the scope of the object.
class DeliveryPass {
 public:
  explicit DeliveryPass(TransportHandler& handler) : handler_(handler) { handler_.begin_delivery(); }
  ~DeliveryPass() { handler_.end_delivery(); }
  DeliveryPass(const DeliveryPass&) = delete;
  DeliveryPass& operator=(const DeliveryPass&) = delete;

 private:
  TransportHandler& handler_;
};

/// How transports watch their peers.
struct LivenessOptions {
  std::chrono::milliseconds keepalive_period{200};  ///< idle links get a keepalive this often
  std::chrono::milliseconds failure_timeout{1500};  ///< silence this long means the peer is dead
};

/// A point-to-point transport.
class Transport {
 public:
  virtual ~Transport() = default;
  /// This process's id.
  virtual PeerId self() const = 0;
  /// "inproc", "mpi", "ucx", or a wrapper's name around its inner one.
  virtual std::string name() const = 0;
  /// Ids of the peers currently reachable.
  virtual std::vector<PeerId> peers() const = 0;
  /// Starts delivering to `handler` (which must outlive the transport). Call once.
  virtual Status start(TransportHandler* handler) = 0;
  /// Queues `frame` for `to`. kNotFound for an unknown peer, kPeerFailed for a failed one,
  /// kInvalidArgument for a frame that failed to encode.
  virtual Status send(PeerId to, OutgoingFrame frame) = 0;
  /// What another process needs to connect to this one at run time (empty when this transport
  /// cannot accept peers after start-up).
  virtual std::vector<std::byte> address() const { return {}; }
  /// Connects to a peer that joined at run time, given its address() and the key of the link
  /// between the two (transports that authenticate frames drop what does not verify under it).
  /// kUnavailable when this transport cannot add peers; kInvalidArgument when the id is taken.
  virtual Status connect(PeerId id, std::span<const std::byte> address, const LinkKey& key) {
    return error(StatusCode::kUnavailable, name(), " transport cannot add peers at run time");
  }
  /// The key that frames to and from `peer` are authenticated with; nullopt for a transport
  /// whose channel is not open to outsiders (in-process, MPI inside one job) or an unknown peer.
  virtual std::optional<LinkKey> link_key(PeerId peer) const { return std::nullopt; }
  /// Flushes frames already queued to live peers (for up to about a second), then stops delivery
  /// and progress; what could not be flushed is dropped. Idempotent.
  virtual void stop() = 0;
};

}  // namespace sepal

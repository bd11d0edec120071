#pragma once
// Transport over UCX active messages (ucp): shared memory and TCP here, RDMA (InfiniBand, RoCE)
// where the fabric has it. Endpoints use peer error handling, so a killed peer over TCP is
// reported at once; keepalive silence (PeerLiveness) covers the transports that cannot report.
// Bootstrapped by exchanging worker addresses over an MPI communicator.
//
// On the wire every message (frame chunk, keepalive, goodbye) is one active message with a
// 64-byte header: claimed sender, kind, sequence number, frame size and offset, and two GMAC tags
// under the link key (link_auth.h), one over the header and one over the payload. The receiver
// checks the header's tag and the sequence number (against replay) before it allocates or reads
// anything, and the payload's tag before the frame is delivered; the sender is the peer whose key
// verified. Frames travel in chunks of at most kChunkBytes, at most kSendWindowBytes in flight per
// peer, so keepalives never wait behind a large frame and a peer that is slow, not dead, keeps
// being heard: each chunk is proof of life. What a peer has being received is bounded too
// (UcxOptions::max_receiving_bytes). Chunks are sent as iov (tensors are not copied);
// large ones arrive by rendezvous straight into the frame's aligned buffer.
//
// Thread-safety: all public methods are thread-safe. The UCX worker is used by one thread at a
// time (UCS_THREAD_MODE_SERIALIZED, under a lock): the progress thread, which receives, delivers
// and keeps links alive; and a thread in send() that finds the worker free (the progress thread
// waiting for events), which posts its frame itself, so a small frame leaves without waking the
// progress thread. Otherwise frames reach the progress thread through a queue.

#include <mpi.h>

#include <cstddef>
#include <memory>
#include <span>

#include "runtime/link_auth.h"
#include "runtime/transport.h"

namespace sepal {

/// How a UCX transport behaves.
struct UcxOptions {
  /// Largest frame accepted from a peer; a larger one is refused before anything is allocated.
  static constexpr std::size_t kDefaultMaxFrameBytes = std::size_t{1} << 30;

  LivenessOptions liveness;
  /// Tag and check every message. Off only on a network no outsider can reach (it saves the
  /// tagging; bench/run_ping.sh measures what that costs).
  bool authenticate = true;
  std::size_t max_frame_bytes = kDefaultMaxFrameBytes;
  /// Bytes of one peer's frames being received and not yet delivered. Past it, the peer's next
  /// frames wait in UCX (rendezvous data stays with the sender, whose send window then stops
  /// it), so a peer that floods this process is slowed at the source; one frame alone always
  /// passes, whatever its size.
  std::size_t max_receiving_bytes = std::size_t{32} << 20;
};

/// UCX active-message transport.
class UcxTransport final : public Transport {
 public:
  /// Bytes of one chunk on the wire (the last chunk of a frame may be shorter).
  static constexpr std::size_t kChunkBytes = std::size_t{1} << 20;
  /// Bytes posted to UCX per peer at most (and always at least one chunk).
  static constexpr std::size_t kSendWindowBytes = std::size_t{2} << 20;

  /// Collective over `comm`: creates a worker on every rank, exchanges addresses, connects to
  /// every other rank (PeerId = rank in `comm`), and hands each rank its link keys: rank 0 derives
  /// them from `authority` (a fresh one when null) and sends each rank its own over `comm`, a
  /// channel only the job's processes share. Other ranks ignore `authority`. mpi_init() first.
  static Result<std::unique_ptr<UcxTransport>> create_over_mpi(MPI_Comm comm, const UcxOptions& options = {},
                                                               const LinkKeyAuthority* authority = nullptr);
  /// A worker with no peers yet, for a process that joins a running swarm as `self`; peers are
  /// added with connect().
  static Result<std::unique_ptr<UcxTransport>> create(PeerId self, const UcxOptions& options = {});
  ~UcxTransport() override;

  /// This worker's address.
  std::vector<std::byte> address() const override;
  /// Connects to a peer given its worker address and link key. kInvalidArgument if `id` is taken.
  Status connect(PeerId id, std::span<const std::byte> address, const LinkKey& key) override;
  std::optional<LinkKey> link_key(PeerId peer) const override;

  PeerId self() const override;
  std::string name() const override { return "ucx"; }
  std::vector<PeerId> peers() const override;
  Status start(TransportHandler* handler) override;
  Status send(PeerId to, OutgoingFrame frame) override;
  /// Says goodbye to every peer (so their error handlers stay quiet), then closes.
  void stop() override;

 private:
  struct State;
  explicit UcxTransport(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace sepal

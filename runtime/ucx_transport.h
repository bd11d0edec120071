#pragma once
// Transport over UCX active messages (ucp): shared memory and TCP here, RDMA (InfiniBand, RoCE)
// where the fabric has it. Endpoints use peer error handling, so a killed peer over TCP is
// reported at once; keepalive silence (PeerLiveness) covers the transports that cannot report.
// Bootstrapped by exchanging worker addresses over an MPI communicator. Frames go out as iov
// (tensors are not copied); large ones arrive by rendezvous straight into an aligned buffer.
//
// Thread-safety: all public methods are thread-safe. The UCX worker is used by the progress
// thread only (UCS_THREAD_MODE_SINGLE); other threads hand it work through a queue.

#include <mpi.h>

#include <memory>
#include <span>

#include "runtime/transport.h"

namespace sepal {

/// UCX active-message transport.
class UcxTransport final : public Transport {
 public:
  /// Collective over `comm`: creates a worker on every rank, exchanges addresses, and connects to
  /// every other rank (PeerId = rank in `comm`). mpi_init() first.
  static Result<std::unique_ptr<UcxTransport>> create_over_mpi(MPI_Comm comm, LivenessOptions liveness = {});
  /// A worker with no peers yet, for a process that joins a running swarm as `self`; peers are
  /// added with connect().
  static Result<std::unique_ptr<UcxTransport>> create(PeerId self, LivenessOptions liveness = {});
  ~UcxTransport() override;

  /// This worker's address.
  std::vector<std::byte> address() const override;
  /// Connects to a peer given its worker address. kInvalidArgument if `id` is taken.
  Status connect(PeerId id, std::span<const std::byte> address) override;

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

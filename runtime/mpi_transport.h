#pragma once
// Transport over MPI point-to-point: the ranks of a communicator (MPI_COMM_WORLD or a dup), and
// peers added through the intercommunicators that MPI_Comm_spawn and MPI_Comm_accept/connect
// create. One progress thread makes every MPI call of the transport; senders hand frames to it.
// Open MPI here has no ULFM, so a dead peer is found by keepalive silence (PeerLiveness).
//
// Thread-safety: all public methods are thread-safe.

#include <mpi.h>

#include <memory>

#include "runtime/transport.h"

namespace sepal {

/// MPI point-to-point transport.
class MpiTransport final : public Transport {
 public:
  /// Peers are the other ranks of `comm` (duplicated), with PeerId = rank. mpi_init() first.
  static Result<std::unique_ptr<MpiTransport>> create(MPI_Comm comm, LivenessOptions liveness = {});
  /// A transport with id `self` and no peers yet, for a process (a spawned or connected joiner)
  /// whose peers all come through intercommunicators (add_peer). mpi_init() first.
  static Result<std::unique_ptr<MpiTransport>> create_detached(PeerId self, LivenessOptions liveness = {});
  ~MpiTransport() override;

  /// Adds a peer reached as rank `remote_rank` of the intercommunicator `comm` (not freed by
  /// the transport while in use). kInvalidArgument if `id` is taken.
  Status add_peer(PeerId id, MPI_Comm comm, int remote_rank);
  /// Forgets a peer that left gracefully (no failure is reported for it).
  void remove_peer(PeerId id);

  PeerId self() const override;
  std::string name() const override { return "mpi"; }
  std::vector<PeerId> peers() const override;
  Status start(TransportHandler* handler) override;
  Status send(PeerId to, OutgoingFrame frame) override;
  void stop() override;

 private:
  struct State;
  explicit MpiTransport(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace sepal

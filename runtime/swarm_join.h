#pragma once
// Joining a running swarm. MPI provides the first contact, UCX (or any transport with run-time
// connect) the data plane afterwards:
//   - spawn_processes() (runtime/process_spawn.h): the coordinator starts a process with
//     MPI_Comm_spawn, under a watchdog;
//   - JoinListener / connect_to_swarm(): a separately launched job connects through an MPI port
//     (MPI_Open_port / MPI_Comm_accept / MPI_Comm_connect; both jobs need the same ompi-server).
// Over the resulting intercommunicator, admit_joiner() and join_swarm() run a mutual
// challenge-response on the swarm secret; a joiner without it is refused with the reason.
// Both sides then disconnect the intercommunicator, so members come and go independently.
//
// Thread-safety: each function runs on its calling thread; JoinListener accepts on its own thread.

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/membership.h"
#include "runtime/swarm_secret.h"

namespace sepal {

/// How long each step of the handshake may take.
struct JoinOptions {
  std::chrono::milliseconds step_timeout{15000};
};

/// Coordinator side, over an intercommunicator whose remote rank 0 is the joiner: challenges it,
/// welcomes or refuses it, and admits it into `membership`. The welcome names the joiner's id,
/// the members, and the key of the joiner's link to each (from `keys`, wrapped under a key both
/// sides derive from the secret and the nonces), all covered by the welcome's proof. kRefused for
/// a wrong secret; kTimeout for a joiner that stops answering; each error names the joiner
/// (`origin`, and the host:pid it gives) and the reason, for the caller to log. Disconnects
/// `intercomm`.
Result<MemberInfo> admit_joiner(MPI_Comm intercomm, const SwarmSecret& secret, const LinkKeyAuthority& keys,
                                Membership& membership, const std::string& origin, JoinOptions options = {});

/// What a joiner learns from the swarm.
struct JoinResult {
  PeerId self = 0;
  std::vector<MemberInfo> members;  ///< including the joiner itself (last)
  std::vector<LinkKey> keys;        ///< the key of the link to each member (zero for itself)
};

/// Joiner side. Once the swarm assigned an id, `make_address(id)` must create this process's
/// transport and return its address. kRefused when the swarm refuses (or fails to prove that
/// it knows the secret, or its welcome was altered). Disconnects `intercomm`.
Result<JoinResult> join_swarm(MPI_Comm intercomm, const SwarmSecret& secret, const std::string& role,
                              const std::function<Result<std::vector<std::uint8_t>>(PeerId)>& make_address,
                              JoinOptions options = {});

/// Collective over `comm`: every rank's role and transport address, as the initial members of a
/// swarm launched together (PeerId = rank).
Result<std::vector<MemberInfo>> exchange_members(MPI_Comm comm, const std::string& role, const Transport& transport);

/// Accepts joiners from other jobs on an MPI port until destroyed. MPI cannot interrupt a pending
/// MPI_Comm_accept, so after destruction its thread stays blocked until the process exits.
class JoinListener {
 public:
  /// Opens a port, writes its name to `port_file`, and calls `on_connect` (on the listener's
  /// thread) with each new intercommunicator.
  static Result<std::unique_ptr<JoinListener>> open(const std::string& port_file,
                                                    std::function<void(MPI_Comm)> on_connect);
  ~JoinListener();
  const std::string& port() const { return port_; }

 private:
  JoinListener() = default;
  std::string port_;
  std::string port_file_;
  std::atomic<bool> closing_{false};
  std::thread thread_;
};

/// Connects to a JoinListener whose port name is in `port_file`. kTimeout if the file does not
/// appear or the connection does not complete within `timeout`.
Result<MPI_Comm> connect_to_swarm(const std::string& port_file, std::chrono::milliseconds timeout);

}  // namespace sepal

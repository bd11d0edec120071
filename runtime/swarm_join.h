#pragma once
// Joining a running swarm:
//   - spawn_processes() (runtime/process_spawn.h): the coordinator starts processes with
//     MPI_Comm_spawn, under a watchdog, and merges them into the swarm's communicator;
//   - JoinListener / connect_to_swarm() (runtime/join_socket.h): a separately launched job
//     reaches the swarm over a TCP connection whose address is in a port file.
// Over that connection, admit_joiner() and join_swarm() run a mutual challenge-response on the
// swarm secret; a joiner without it is refused with the reason. The joiner then connects to
// every member over the UCX transport, and the connection is closed.
//
// Thread-safety: each function runs on its calling thread.

#include <mpi.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "runtime/join_socket.h"
#include "runtime/membership.h"
#include "runtime/swarm_secret.h"

namespace sepal {

/// How long each step of the handshake may take.
struct JoinOptions {
  std::chrono::milliseconds step_timeout{15000};
};

/// Coordinator side, over a connection to the joiner: challenges it,
/// welcomes or refuses it, and admits it into `membership`. The welcome names the joiner's id,
/// the members, and the key of the joiner's link to each (from `keys`, wrapped under a key both
/// sides derive from the secret and the nonces), all covered by the welcome's proof. kRefused for
/// a wrong secret; kTimeout for a joiner that stops answering; each error names the joiner
/// (`origin`, and the host:pid it gives) and the reason, for the caller to log.
Result<MemberInfo> admit_joiner(JoinConnection& link, const SwarmSecret& secret, const LinkKeyAuthority& keys,
                                Membership& membership, const std::string& origin, JoinOptions options = {});

/// What a joiner learns from the swarm.
struct JoinResult {
  PeerId self = 0;
  std::vector<MemberInfo> members;  ///< including the joiner itself (last)
  std::vector<LinkKey> keys;        ///< the key of the link to each member (zero for itself)
};

/// Joiner side. Once the swarm assigned an id, `make_address(id)` must create this process's
/// transport and return its address. kRefused when the swarm refuses (or fails to prove that
/// it knows the secret, or its welcome was altered).
Result<JoinResult> join_swarm(JoinConnection& link, const SwarmSecret& secret, const std::string& role,
                              const std::function<Result<std::vector<std::uint8_t>>(PeerId)>& make_address,
                              JoinOptions options = {});

/// Collective over `comm`: every rank's role and transport address, as the initial members of a
/// swarm launched together (PeerId = rank).
Result<std::vector<MemberInfo>> exchange_members(MPI_Comm comm, const std::string& role, const Transport& transport);

}  // namespace sepal

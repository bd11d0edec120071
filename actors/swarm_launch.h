#pragma once
// How each process of a swarm comes up, from what its command line asked for: MPI started, hosts
// spawned (`sepal generate --hosts N`, on this machine, without mpirun), the process's node built
// (client, host, observer), joiners admitted (--listen). The commands in tools/ fill these
// settings from their flags and call one function; nothing of MPI or the transports shows there.
//
// Thread-safety: from the main thread, once per process.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/client_node.h"
#include "actors/host_node.h"
#include "actors/node_settings.h"
#include "runtime/swarm_secret.h"

namespace sepal {

class SwarmNode;

/// How many processes mpirun (or srun) launched together with this one; 1 when alone.
int launched_world_size();

struct ClientLaunch {
  SwarmNodeSettings node;
  /// >0: start this many hosts with MPI_Comm_spawn, running `this executable host_args...`.
  int spawn_hosts = 0;
  std::vector<std::string> host_args;
  /// Non-empty: admit hosts joining at run time through the join address written to this file.
  std::string listen_file;
  /// The host name or address written in listen_file (empty: this machine's host name).
  std::string listen_host;
  std::optional<SwarmSecret> secret;
  /// What a host rank serves (under mpirun, every rank but 0 is a host).
  HostSettings host;
  ClientNodeSettings client;  ///< expected_hosts is set by the launch
};

/// The process's part in a client's swarm: rank 0 (or a process alone, spawning its hosts) gets
/// its ClientNode once the hosts are placed; another rank of mpirun serves blocks until the swarm
/// ends and gets nullptr. An error names what failed (MPI, the spawn, a host's model).
Result<std::unique_ptr<ClientNode>> launch_client(int* argc, char*** argv, ClientLaunch launch);

struct HostLaunch {
  SwarmNodeSettings node;
  bool spawned = false;           ///< started by `sepal generate --hosts` (merge with the parent)
  std::string join_file;          ///< else: join through the join address in this file
  std::optional<SwarmSecret> secret;
  HostSettings host;
};

/// How a block host process ended: `admitted` is false when it failed before it was a member of
/// the swarm (a joining host whose handshake timed out can be started again), or failed to join
/// again after the swarm dropped it.
struct HostExit {
  Status status;
  bool admitted = false;
};

/// A block host process (sepal serve): its node, then serve_blocks() until the swarm ends. A host
/// that joined through a port and was dropped by the swarm (HostEnd::dropped) joins it again
/// through the same port file, as a new member, as often as that happens.
HostExit run_host(int* argc, char*** argv, const HostLaunch& launch);

/// Joins the swarm whose port is in `join_file` as an observer for a moment (sepal status) and
/// returns its balancer's block map.
Result<BlockMapReply> observe_block_map(int* argc, char*** argv, const std::string& join_file, const SwarmSecret& secret,
                                        std::chrono::milliseconds join_timeout);

}  // namespace sepal

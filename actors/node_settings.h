#pragma once
// How a swarm node is built (actors/swarm_node.h): its transport, membership and scheduler, as
// plain settings the commands fill from their flags.
//
// Thread-safety: values.

#include <chrono>

#include "runtime/membership.h"
#include "runtime/transport_choice.h"

namespace sepal {

/// Keepalives every 100 ms; a peer silent for 5 s is dead (a stopped, hung or partitioned one:
/// --failure-timeout). A killed process is found sooner, by UCX itself: a broken connection between
/// nodes, and on one node its keepalive, which checks that the peer process still exists
/// (UcxTransport sets its interval). Chunks count as proof of life, so a busy peer in the middle of
/// a large frame is not taken for dead. Shorter timeouts proved too short on a loaded node: with
/// both cores of this machine busy, the kernel left the spawned hosts' threads (a session of their
/// own, so a scheduling group of their own) waiting 1.3 to 2.3 s for a core, and a 2 s timeout
/// declared all of them dead at once.
inline constexpr std::chrono::milliseconds kSwarmFailureTimeout{5000};
inline constexpr LivenessOptions kSwarmLiveness{std::chrono::milliseconds(100), kSwarmFailureTimeout};

struct SwarmNodeSettings {
  TransportChoice transport{"ucx", kSwarmLiveness, true, {}};
  /// Heartbeats every 250 ms; silence of 1.5 failure timeouts fails a member (the transport's
  /// keepalives find a silent peer first).
  MembershipOptions membership{std::chrono::milliseconds(250), kSwarmFailureTimeout * 3 / 2};
  int scheduler_threads = 2;
  /// Joining a running swarm: how long to wait for its port file and the connection to it.
  std::chrono::milliseconds join_timeout{60000};

  /// How long a peer may be silent before it is taken for dead (transport and membership).
  void set_failure_timeout(std::chrono::milliseconds timeout) {
    transport.liveness.failure_timeout = timeout;
    membership.failure_timeout = timeout * 3 / 2;
  }
};

}  // namespace sepal

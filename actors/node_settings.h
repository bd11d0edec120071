#pragma once
// How a swarm node is built (actors/swarm_node.h): its transport, membership and scheduler, as
// plain settings the commands fill from their flags.
//
// Thread-safety: values.

#include <chrono>

#include "runtime/membership.h"
#include "runtime/transport_choice.h"

namespace sepal {

/// Keepalives every 100 ms; a peer silent for 2 s is dead (a stopped or partitioned one). A killed
/// process is found sooner, by UCX itself: a broken connection between nodes, and on one node its
/// keepalive, which checks that the peer process still exists (UcxTransport sets its interval).
/// Chunks count as proof of life, so a busy peer in the middle of a large frame is not taken for
/// dead, and a 1 s timeout proved too short with every core busy.
inline constexpr LivenessOptions kSwarmLiveness{std::chrono::milliseconds(100), std::chrono::milliseconds(2000)};

struct SwarmNodeSettings {
  TransportChoice transport{"ucx", kSwarmLiveness, true, {}};
  MembershipOptions membership{std::chrono::milliseconds(250), std::chrono::milliseconds(3000)};
  int scheduler_threads = 2;
  /// Joining a running swarm: how long to wait for its port file and the connection to it.
  std::chrono::milliseconds join_timeout{60000};
};

}  // namespace sepal

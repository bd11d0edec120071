#pragma once
// What a host's agent accepts: the host node's main thread asks it to join the swarm (announce,
// load the assigned blocks, serve them) and later to leave gracefully. Requests from other
// processes are refused.

#include <cstdint>

#include "runtime/actor.h"

namespace sepal {

/// Well-known actor id of the host agent in a host process.
inline constexpr std::uint32_t kHostAgentActorId = 6;

struct HostJoined {
  static constexpr std::uint16_t kTypeId = 0x0701;
  std::int64_t first = 0;  ///< the blocks the host serves
  std::int64_t last = 0;
  SEPAL_FIELDS(first, last)
};
/// Announces the host until the balancer assigns blocks (or `timeout_ms` passes), loads and
/// serves them, then announces every period and follows the balancer's moves.
struct JoinSwarm {
  static constexpr std::uint16_t kTypeId = 0x0702;
  using Reply = HostJoined;
  std::int64_t timeout_ms = 0;
  SEPAL_FIELDS(timeout_ms)
};

struct HostLeft {
  static constexpr std::uint16_t kTypeId = 0x0703;
  SEPAL_FIELDS()
};
/// Graceful leave: no new sessions or steps, the balancer forgets the host, announcing stops.
struct LeaveSwarm {
  static constexpr std::uint16_t kTypeId = 0x0704;
  using Reply = HostLeft;
  SEPAL_FIELDS()
};

/// One-way: stop announcing (the host still serves; the swarm is ending).
struct StopAnnouncing {
  static constexpr std::uint16_t kTypeId = 0x0705;
  SEPAL_FIELDS()
};

struct HostAgentProtocol {
  using accepts = Accepts<JoinSwarm, LeaveSwarm, StopAnnouncing>;
};

}  // namespace sepal

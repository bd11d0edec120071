#pragma once
// Who is who in a swarm, written once. The coordinator is the process that launched the others
// or admits them (rank 0 under mpirun, the spawning process with --hosts, the --listen process):
// it runs the balancer and the client driver and alone may announce members or stop hosts. Every
// other member joins as a host or an observer (membership roles).
//
// Thread-safety: immutable.

#include "actors/protocol/balancer.h"
#include "actors/protocol/client_driver.h"
#include "runtime/transport.h"

namespace sepal {

inline constexpr char kClientRole[] = "client";
inline constexpr char kHostRole[] = "host";
inline constexpr char kObserverRole[] = "observer";

struct SwarmWorld {
  PeerId coordinator = 0;

  ActorRef<BalancerProtocol> balancer() const { return {{coordinator, kBalancerActorId}}; }
  ActorRef<ClientDriverProtocol> client_driver() const { return {{coordinator, kClientDriverActorId}}; }
};

}  // namespace sepal

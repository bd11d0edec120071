#pragma once
// One process's place in a swarm, assembled in one place for every kind of node (client, host,
// observer) and for the tests' in-process swarms alike: its transport (by name, WAN-emulated if
// asked: runtime/transport_factory.h), scheduler, actor system and membership (heartbeats, joins,
// leaves). Three ways in:
//   - over_comm: every rank of a communicator together (mpirun, or a parent and the hosts it
//     spawned, merged); peer id = rank, rank 0 the coordinator;
//   - join: a separately launched process, through the swarm's join address (a TCP port named in
//     a port file: runtime/join_socket.h; sepal serve --join, sepal status);
//   - listen: the coordinator admits such joiners.
//
// Thread-safety: set up and torn down from the main thread; the members are thread-safe.

#include <mpi.h>

#include <memory>
#include <string>

#include "actors/node_settings.h"
#include "actors/swarm_world.h"
#include "runtime/actor_system.h"
#include "runtime/membership.h"
#include "runtime/swarm_join.h"
#include "runtime/swarm_secret.h"
#include "runtime/transport_factory.h"

namespace sepal {

class SwarmNode {
 public:
  /// Collective over `comm`.
  static Result<std::unique_ptr<SwarmNode>> over_comm(MPI_Comm comm, const std::string& role, const SwarmNodeSettings& settings);
  /// Joins the swarm whose join address is in `port_file` (UCX only).
  static Result<std::unique_ptr<SwarmNode>> join(const std::string& port_file, const SwarmSecret& secret,
                                                 const std::string& role, const SwarmNodeSettings& settings);
  ~SwarmNode();

  /// Admits processes that join with `secret` through a TCP port whose address goes to
  /// `port_file` (removed again when this node stops), naming this machine `advertised_host`
  /// there (empty: its host name).
  Status listen(const std::string& port_file, SwarmSecret secret, const std::string& advertised_host = {});

  ActorSystem& system() { return *system_; }
  Membership& membership() { return *membership_; }
  PeerId self() const { return system_->self(); }
  const SwarmWorld& world() const { return world_; }
  /// Whether this node joined through a port file (`join`): its MPI job holds no other member, so
  /// it can finalise MPI without waiting for anyone.
  bool joined() const { return joined_; }
  /// Stops the actor system (flushing what was sent).
  void stop();

 private:
  SwarmNode() = default;
  Status start(const MemberInfo& self, const std::vector<MemberInfo>& members, const SwarmNodeSettings& settings);

  SwarmWorld world_;
  LinkKeyAuthority keys_;  ///< derives the link keys (used where this process is the coordinator)
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<ThreadPoolScheduler> scheduler_;
  std::unique_ptr<ActorSystem> system_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<JoinListener> listener_;
  bool stopped_ = false;
  bool joined_ = false;
};

}  // namespace sepal

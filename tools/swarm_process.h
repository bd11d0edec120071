#pragma once
// One process's place in a swarm: its transport (UCX or MPI, WAN-emulated if asked), actor
// system and membership (heartbeats, joins, leaves). Three ways in:
//   - over_comm: every rank of a communicator together (mpirun, or a parent and the hosts it
//     spawned, merged); peer id = rank;
//   - join: a separately launched process, through an MPI port (sepal serve, sepal status);
//   - listen: the coordinator admits such joiners.
//
// Thread-safety: set up and torn down from the main thread; the members are thread-safe.

#include <mpi.h>

#include <memory>
#include <string>

#include "runtime/actor_system.h"
#include "runtime/membership.h"
#include "runtime/swarm_join.h"
#include "runtime/swarm_secret.h"
#include "runtime/wan_link.h"

namespace sepal::tools {

struct SwarmSettings {
  std::string transport = "ucx";  ///< ucx or mpi (mpi: no joins at run time)
  WanConfig wan;
  MembershipOptions membership{std::chrono::milliseconds(250), std::chrono::milliseconds(3000)};
  /// UCX: a MAC on every message (runtime/link_auth.h). Every member must agree.
  bool authenticate = true;
};

class SwarmProcess {
 public:
  /// Collective over `comm`. Throws sepal::Error on failure.
  static std::unique_ptr<SwarmProcess> over_comm(MPI_Comm comm, const std::string& role, const SwarmSettings& settings);
  /// Joins the swarm listening on the port named in `port_file` (UCX only). Throws on failure.
  static std::unique_ptr<SwarmProcess> join(const std::string& port_file, const SwarmSecret& secret,
                                            const std::string& role, const SwarmSettings& settings);
  ~SwarmProcess();

  /// Admits processes that join with `secret` through a port whose name goes to `port_file`.
  void listen(const std::string& port_file, SwarmSecret secret);

  ActorSystem& system() { return *system_; }
  Membership& membership() { return *membership_; }
  PeerId self() const { return system_->self(); }
  /// Stops the actor system (flushing what was sent).
  void stop();

 private:
  SwarmProcess() = default;
  void start(const MemberInfo& self, const std::vector<MemberInfo>& members, const SwarmSettings& settings);

  LinkKeyAuthority keys_;  ///< derives the link keys (used where this process is the coordinator)
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<ThreadPoolScheduler> scheduler_;
  std::unique_ptr<ActorSystem> system_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<JoinListener> listener_;
  bool stopped_ = false;
};

/// Starts `count` processes `command args...` with one MPI_Comm_spawn from MPI_COMM_SELF and
/// returns the merged communicator (this process rank 0). Throws on failure or after `timeout`.
MPI_Comm spawn_and_merge(const std::string& command, const std::vector<std::string>& args, int count,
                         std::chrono::milliseconds timeout);
/// In a process started by spawn_and_merge: the communicator merged with its parent (throws if
/// not spawned).
MPI_Comm merge_with_parent();

}  // namespace sepal::tools

#pragma once
// Who is in the swarm. Every process runs a membership actor (well-known id 1) that sends
// heartbeats to every live member and declares a member failed after `failure_timeout` of silence
// or at once when the transport reports it dead; a member that leaves gracefully announces it and
// waits for acknowledgements before disconnecting. The coordinator admits joiners (see
// swarm_join.h) and announces them to everyone. Roles ("client", "host", ...) are labels the
// runtime carries without interpreting them.
//
// Thread-safety: all public methods are thread-safe. Subscribers are called on the scheduler.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/actor_system.h"
#include "runtime/link_auth.h"

namespace sepal {

/// A member as the swarm knows it.
struct MemberInfo {
  PeerId peer = 0;
  std::string role;
  std::vector<std::uint8_t> address;  ///< transport address for run-time connections (may be empty)
  SEPAL_FIELDS(peer, role, address)
};

/// What became of a member.
enum class MemberState : std::uint8_t { kAlive = 0, kLeft = 1, kFailed = 2 };
const char* member_state_name(MemberState state);

/// A change of a member's state.
struct MembershipEvent {
  PeerId peer = 0;
  MemberState state = MemberState::kAlive;
  std::string role;
  std::string reason;
};

/// Heartbeat period and failure timeout.
struct MembershipOptions {
  std::chrono::milliseconds heartbeat_period{200};
  std::chrono::milliseconds failure_timeout{1500};
  /// The member that admits joiners; announcements of new members are taken from it alone.
  PeerId coordinator = 0;
};

/// The well-known actor id of the membership actor in every process.
inline constexpr std::uint32_t kMembershipActorId = 1;

// ---- protocol ----
struct Heartbeat {
  static constexpr std::uint16_t kTypeId = 0x0201;
  PeerId from = 0;
  SEPAL_FIELDS(from)
};
struct MemberJoined {
  static constexpr std::uint16_t kTypeId = 0x0202;
  MemberInfo member;
  /// The key of the link between the recipient and the new member, wrapped under the key of the
  /// link between the recipient and the coordinator (empty on transports without link keys).
  std::vector<std::uint8_t> wrapped_key;
  SEPAL_FIELDS(member, wrapped_key)
};
struct LeaveAck {
  static constexpr std::uint16_t kTypeId = 0x0204;
  PeerId peer = 0;
  SEPAL_FIELDS(peer)
};
struct MemberLeaving {
  static constexpr std::uint16_t kTypeId = 0x0203;
  using Reply = LeaveAck;
  PeerId peer = 0;
  SEPAL_FIELDS(peer)
};
struct MembershipProtocol {
  using accepts = Accepts<Heartbeat, MemberJoined, MemberLeaving>;
};

/// This process's view of the swarm.
class Membership {
 public:
  /// `self` and `initial` (which may include self) are the members at start-up.
  Membership(ActorSystem& system, MemberInfo self, std::vector<MemberInfo> initial, MembershipOptions options = {});
  ~Membership();

  /// Spawns the membership actor and starts heartbeating.
  Status start();
  /// Members currently alive (self included).
  std::vector<MemberInfo> alive() const;
  /// How long this process itself last did not run (stopped, or starved), when that was longer
  /// than the failure timeout and ended within three failure timeouts: the other members have
  /// then likely declared it failed and dropped it. A pause still ending counts too: the process
  /// runs again and the membership's tick has not run since. nullopt otherwise.
  std::optional<std::chrono::milliseconds> recent_pause() const;
  /// A member's state; nullopt if never known.
  std::optional<MemberState> state(PeerId peer) const;
  /// Calls `listener` for every later state change.
  void subscribe(std::function<void(const MembershipEvent&)> listener);
  /// Blocks until `predicate` holds over alive() or `timeout` passes; whether it held. The
  /// predicate runs without any lock held and may call the other methods.
  bool wait_until(const std::function<bool(const std::vector<MemberInfo>&)>& predicate, std::chrono::milliseconds timeout) const;

  /// Blocks until a heartbeat arrived from every live member, or `timeout`; whether it did. A
  /// joiner calls it before using the swarm: members drop frames from peers they have not been
  /// told about yet, and a member's first heartbeat shows that it has been.
  bool wait_until_heard_from_all(std::chrono::milliseconds timeout) const;
  /// Coordinator: a fresh id for a joiner (one more than any id ever seen).
  PeerId allocate_peer_id();
  /// Coordinator: connects to `member`, adds it, and announces it to every member, each with the
  /// key of its link to the new member (derived by `keys`, sent wrapped).
  Status admit(const MemberInfo& member, const LinkKeyAuthority& keys);
  /// Leaves gracefully: stops heartbeating, tells every member and waits (up to `timeout`) for
  /// their acknowledgements; the first error, if any. Afterwards the caller stops its actor system.
  /// Blocks: not from a handler.
  Status leave(std::chrono::milliseconds timeout);
  /// The same without blocking: `done` runs on the scheduler when every member answered.
  void leave_async(std::chrono::milliseconds timeout, std::function<void(Status)> done);

  const MemberInfo& self() const { return self_; }

 private:
  struct State;
  class Actor;
  ActorSystem& system_;
  MemberInfo self_;
  std::shared_ptr<State> state_;
};

}  // namespace sepal

#pragma once
// The balancer actor: assigns each joining host a block range so that the weakest block (least
// total throughput over its hosts) is as strong as possible (actors/block_placement.h), moves one
// host at a time when a join, a leave or a failure leaves the swarm clearly unbalanced or a block
// unserved, and publishes the block map. Its state is only what hosts announce, so a restarted
// balancer rebuilds the map from the next round of announcements.
//
// Thread-safety: an actor; its handlers run one at a time. The change callback runs on the
// actor's thread.

#include <chrono>
#include <functional>
#include <map>
#include <string>

#include "actors/block_placement.h"
#include "actors/protocol/balancer.h"
#include "runtime/actor_system.h"

namespace sepal {

struct BalancerOptions {
  /// Called after every change of the map, with what happened ("join 3", "leave 2", ...).
  std::function<void(const BlockMapReply& map, const std::string& event)> on_change;
  /// A move must raise the weakest block by this factor (see better_range).
  double min_gain = 1.0 / 0.75;
  /// Whether a peer was admitted as a block host; announcements from others are refused. Null:
  /// every peer may host.
  std::function<bool(PeerId)> may_host;
  /// A host that has not served its new range this long after it was assigned (a join or a move)
  /// stops holding up other moves: until it serves it, placement counts only what it serves, and
  /// other hosts may move to cover its blocks. Its own move stands.
  std::chrono::milliseconds move_timeout{60000};
};

class Balancer final : public TypedActor<Balancer, BalancerProtocol> {
 public:
  explicit Balancer(BalancerOptions options = {});
  std::string name() const override { return "balancer"; }

  Result<Assignment> handle(ActorContext& ctx, const Announce& m);
  Result<BlockMapReply> handle(ActorContext& ctx, const GetBlockMap& m);
  void on_peer_failed(ActorSystem& system, PeerId peer, const Status& why) override;

 private:
  struct Host {
    std::int64_t max_blocks = 0;
    double throughput = 0;  // 0: not measured yet
    BlockRange assigned;
    BlockRange serving;
    std::int64_t sessions = 0;
    std::int64_t cache_bytes_free = 0;
    std::string numerics;
    std::chrono::steady_clock::time_point assigned_at;  // when `assigned` last changed
    bool overdue = false;  // serving != assigned for longer than the move timeout, and logged
  };
  using Clock = std::chrono::steady_clock;

  // Whether `h` has been assigned a range it does not serve yet.
  static bool moving(const Host& h) { return !(h.serving == h.assigned); }
  // The map the placement rules see: assigned ranges (served ones for overdue moves), unmeasured
  // hosts at the mean throughput.
  BlockMap placement_map() const;
  // Moves at most one host, when no move is under way (but overdue ones) and moving clearly helps.
  void rebalance(std::string& event);
  // Marks moves that ran past the move timeout; returns the event naming them ("" if none).
  std::string note_overdue_moves(Clock::time_point now);
  BlockMapReply snapshot() const;
  void changed(const std::string& event);

  BalancerOptions options_;
  std::string model_;
  std::int64_t num_blocks_ = 0;
  std::uint64_t version_ = 0;
  std::map<PeerId, Host> hosts_;
};

}  // namespace sepal

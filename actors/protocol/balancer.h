#pragma once
// What the balancer accepts and answers. Hosts announce themselves when they join and then
// periodically (every announce period); each answer tells the host which blocks to serve, so a
// move decided by the balancer reaches the host at its next announcement. Because every
// announcement carries the host's whole state, a restarted balancer rebuilds the block map from
// them. Anyone may ask for the block map.

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/actor.h"

namespace sepal {

/// Well-known actor id of the balancer (it runs in the client driver's process, peer 0).
inline constexpr std::uint32_t kBalancerActorId = 4;

/// Blocks [first, last) the host should serve (first == last: none; it may leave).
struct Assignment {
  static constexpr std::uint16_t kTypeId = 0x0501;
  std::int64_t first = 0;
  std::int64_t last = 0;
  SEPAL_FIELDS(first, last)
};

/// Longest `numerics` an announcement may carry.
inline constexpr std::size_t kMaxNumericsLength = 200;

/// A host's state. The sender's peer id identifies the host.
struct Announce {
  static constexpr std::uint16_t kTypeId = 0x0502;
  using Reply = Assignment;
  std::string model;              ///< model name; every host of a swarm serves the same model
  std::int64_t num_blocks = 0;    ///< the model's block count
  std::int64_t max_blocks = 0;    ///< how many blocks the host can hold
  double throughput = 0;          ///< tokens/s through one block at batch 1 (0: not measured yet)
  std::int64_t first = 0;         ///< blocks served now (first == last: none)
  std::int64_t last = 0;
  std::int64_t sessions = 0;
  std::int64_t cache_bytes_free = 0;
  bool leaving = false;           ///< graceful leave: forget this host and rebalance
  std::string numerics;           ///< what decides its bits besides the model (HostInfoReply), at most
                                  ///< kMaxNumericsLength printable characters
  SEPAL_FIELDS(model, num_blocks, max_blocks, throughput, first, last, sessions, cache_bytes_free, leaving, numerics)
};

/// One host in the block map.
struct HostRecord {
  std::uint32_t peer = 0;
  std::int64_t first = 0;          ///< assigned blocks
  std::int64_t last = 0;
  std::int64_t serving_first = 0;  ///< blocks it serves now (differs from assigned while it moves)
  std::int64_t serving_last = 0;
  double throughput = 0;
  std::int64_t sessions = 0;
  std::int64_t cache_bytes_free = 0;
  std::string numerics;            ///< as announced
  SEPAL_FIELDS(peer, first, last, serving_first, serving_last, throughput, sessions, cache_bytes_free, numerics)
};

struct BlockMapReply {
  static constexpr std::uint16_t kTypeId = 0x0503;
  std::string model;
  std::int64_t num_blocks = 0;
  std::uint64_t version = 0;   ///< grows with every change
  std::vector<HostRecord> hosts;  ///< ordered by peer
  SEPAL_FIELDS(model, num_blocks, version, hosts)
};
struct GetBlockMap {
  static constexpr std::uint16_t kTypeId = 0x0504;
  using Reply = BlockMapReply;
  SEPAL_FIELDS()
};

struct BalancerProtocol {
  using accepts = Accepts<Announce, GetBlockMap>;
};

}  // namespace sepal

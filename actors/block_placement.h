#pragma once
// Which blocks each host serves, chosen so that the weakest block (least total throughput over
// the hosts serving it) is as strong as possible, as Petals' block selection does:
//   - a joining host that holds `span` blocks takes the window whose per-block throughputs,
//     sorted, are lexicographically smallest: it reinforces the weakest blocks first and covers
//     unserved blocks (throughput 0) before anything else;
//   - a host moves only when moving it raises the weakest block by more than `min_gain`, so a
//     balanced swarm does not oscillate.
// Pure functions of a block map; the balancer actor applies them.
//
// Thread-safety: values and pure functions.

#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/transport.h"

namespace sepal {

/// Blocks [first, last).
struct BlockRange {
  std::int64_t first = 0;
  std::int64_t last = 0;
  std::int64_t size() const { return last - first; }
  bool operator==(const BlockRange&) const = default;
};

/// A host as the balancer sees it.
struct HostPlacement {
  PeerId peer = 0;
  double throughput = 0;  ///< tokens/s the host sustains for each block it serves
  BlockRange range;       ///< empty while unassigned
};

/// Every host's blocks in a model of `num_blocks` blocks.
struct BlockMap {
  std::int64_t num_blocks = 0;
  std::vector<HostPlacement> hosts;

  /// Total throughput of each block over its hosts.
  std::vector<double> block_throughput() const;
  /// The smallest block throughput (0 when a block is unserved).
  double weakest() const;
  /// Blocks no host serves.
  std::vector<std::int64_t> unserved() const;
};

/// The range for a new host of `throughput` that can hold `span` blocks (clamped to the model).
BlockRange choose_range(const BlockMap& map, std::int64_t span);

/// A better range for `peer` if moving it there raises the weakest block by a factor of more than
/// `min_gain` (default: a quarter more, as Petals' balance_quality 0.75 implies); nullopt to stay.
std::optional<BlockRange> better_range(const BlockMap& map, PeerId peer, double min_gain = 1.0 / 0.75);

}  // namespace sepal

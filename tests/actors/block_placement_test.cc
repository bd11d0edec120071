// Block placement: joins cover unserved blocks first and then the weakest, the weakest block is
// as strong as the hosts allow, and a balanced map does not move.
#include <gtest/gtest.h>

#include <random>

#include "actors/block_placement.h"

namespace sepal {
namespace {

// Places hosts one by one, as they would join.
BlockMap join_all(std::int64_t blocks, const std::vector<std::pair<double, std::int64_t>>& hosts) {
  BlockMap map{blocks, {}};
  PeerId id = 1;
  for (const auto& [throughput, span] : hosts) {
    map.hosts.push_back(HostPlacement{id++, throughput, choose_range(map, span)});
  }
  return map;
}

TEST(BlockPlacement, JoinsCoverTheModelBeforeReplicating) {
  const BlockMap map = join_all(22, {{10, 8}, {10, 8}, {10, 8}});
  EXPECT_TRUE(map.unserved().empty());
  EXPECT_EQ(map.hosts[0].range, (BlockRange{0, 8}));
  EXPECT_EQ(map.hosts[1].range, (BlockRange{8, 16}));
  EXPECT_EQ(map.hosts[2].range, (BlockRange{14, 22}));  // the last window that covers 16..21
}

TEST(BlockPlacement, ReplicasGoToTheWeakestBlocks) {
  BlockMap map = join_all(10, {{10, 5}, {10, 5}});  // [0,5) and [5,10), every block at 10
  map.hosts[1].throughput = 4;                      // the second half is weaker
  const BlockRange r = choose_range(map, 5);
  EXPECT_EQ(r, (BlockRange{5, 10}));
  map.hosts.push_back(HostPlacement{3, 10, r});
  EXPECT_DOUBLE_EQ(map.weakest(), 10.0);
}

TEST(BlockPlacement, SpanIsClampedToTheModel) {
  const BlockMap map{4, {}};
  EXPECT_EQ(choose_range(map, 10), (BlockRange{0, 4}));
  EXPECT_EQ(choose_range(map, 0), (BlockRange{0, 1}));
}

TEST(BlockPlacement, BalancedMapsDoNotMove) {
  const BlockMap map = join_all(12, {{5, 4}, {5, 4}, {5, 4}, {5, 4}, {5, 4}, {5, 4}});
  for (const auto& h : map.hosts) EXPECT_FALSE(better_range(map, h.peer).has_value()) << "host " << h.peer;
}

TEST(BlockPlacement, AHostMovesToCoverALeaversBlocks) {
  BlockMap map = join_all(12, {{5, 4}, {5, 4}, {5, 4}, {5, 4}});  // [0,4) [4,8) [8,12) then [0,4) again
  ASSERT_EQ(map.hosts[3].range, (BlockRange{0, 4}));
  map.hosts.erase(map.hosts.begin() + 1);  // the host of [4,8) leaves
  EXPECT_EQ(map.unserved(), (std::vector<std::int64_t>{4, 5, 6, 7}));
  // The replica of [0,4) can move there without leaving anything unserved.
  const auto moved = better_range(map, 4);
  ASSERT_TRUE(moved.has_value());
  EXPECT_EQ(*moved, (BlockRange{4, 8}));
  // The only host of [8,12) must not move: that would unserve its blocks.
  EXPECT_FALSE(better_range(map, 3).has_value());
}

TEST(BlockPlacement, OnlyClearGainsMoveHosts) {
  // Blocks [12, 9]: host 3 (throughput 2) moving to block 1 makes them [10, 11], raising the
  // weakest block from 9 to 10, a gain of 1.11.
  const BlockMap map{2, {{1, 10, {0, 1}}, {2, 9, {1, 2}}, {3, 2, {0, 1}}}};
  EXPECT_DOUBLE_EQ(map.weakest(), 9.0);
  EXPECT_FALSE(better_range(map, 3, /*min_gain=*/1.2).has_value());
  const auto moved = better_range(map, 3, /*min_gain=*/1.05);
  ASSERT_TRUE(moved.has_value());
  EXPECT_EQ(*moved, (BlockRange{1, 2}));
}

// Rebalancing rounds as the balancer runs them: each host in turn moves if that clearly helps.
int rebalance_until_stable(BlockMap& map, int max_rounds) {
  for (int round = 0; round < max_rounds; ++round) {
    bool moved = false;
    for (auto& h : map.hosts) {
      if (auto r = better_range(map, h.peer)) {
        const double before = map.weakest();
        h.range = *r;
        EXPECT_GE(map.weakest(), before) << "a move weakened the weakest block";
        moved = true;
      }
    }
    if (!moved) return round;
  }
  return max_rounds;
}

TEST(BlockPlacement, RandomSwarmsAreCoveredAndSettle) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const std::int64_t blocks = 4 + rng() % 28;
    const std::int64_t span = 1 + rng() % 8;
    const int needed = static_cast<int>((blocks + span - 1) / span);
    std::vector<std::pair<double, std::int64_t>> hosts;
    for (int i = 0; i < needed + static_cast<int>(rng() % 6); ++i) hosts.emplace_back(1 + rng() % 10, span);
    BlockMap map = join_all(blocks, hosts);
    EXPECT_TRUE(map.unserved().empty()) << "trial " << trial << ": " << hosts.size() << " hosts of " << span
                                        << " blocks leave blocks of " << blocks << " unserved";
    EXPECT_LT(rebalance_until_stable(map, 50), 50) << "trial " << trial << ": rebalancing oscillates";
    EXPECT_TRUE(map.unserved().empty()) << "trial " << trial << ": rebalancing unserved a block";
  }
}

}  // namespace
}  // namespace sepal

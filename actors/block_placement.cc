#include "actors/block_placement.h"

#include <algorithm>
#include <limits>

namespace sepal {

std::vector<double> BlockMap::block_throughput() const {
  std::vector<double> t(static_cast<std::size_t>(std::max<std::int64_t>(num_blocks, 0)), 0.0);
  for (const auto& h : hosts) {
    for (std::int64_t b = std::max<std::int64_t>(h.range.first, 0); b < std::min(h.range.last, num_blocks); ++b) {
      t[static_cast<std::size_t>(b)] += h.throughput;
    }
  }
  return t;
}

double BlockMap::weakest() const {
  const auto t = block_throughput();
  return t.empty() ? 0.0 : *std::min_element(t.begin(), t.end());
}

std::vector<std::int64_t> BlockMap::unserved() const {
  std::vector<std::int64_t> out;
  const auto t = block_throughput();
  for (std::size_t b = 0; b < t.size(); ++b) {
    if (t[b] <= 0) out.push_back(static_cast<std::int64_t>(b));
  }
  return out;
}

BlockRange choose_range(const BlockMap& map, std::int64_t span) {
  span = std::clamp<std::int64_t>(span, 1, std::max<std::int64_t>(map.num_blocks, 1));
  const auto t = map.block_throughput();
  std::optional<std::vector<double>> best_key;
  std::int64_t best_first = 0;
  for (std::int64_t first = 0; first + span <= map.num_blocks; ++first) {
    std::vector<double> key(t.begin() + first, t.begin() + first + span);
    std::sort(key.begin(), key.end());
    if (!best_key || key < *best_key) {  // ties keep the leftmost window
      best_key = std::move(key);
      best_first = first;
    }
  }
  return {best_first, best_first + span};
}

std::optional<BlockRange> better_range(const BlockMap& map, PeerId peer, double min_gain) {
  auto it = std::find_if(map.hosts.begin(), map.hosts.end(), [&](const HostPlacement& h) { return h.peer == peer; });
  if (it == map.hosts.end() || it->range.size() <= 0) return std::nullopt;
  BlockMap without = map;
  without.hosts.erase(without.hosts.begin() + (it - map.hosts.begin()));
  const BlockRange candidate = choose_range(without, it->range.size());
  if (candidate == it->range) return std::nullopt;
  BlockMap moved = without;
  moved.hosts.push_back(HostPlacement{peer, it->throughput, candidate});
  const double before = map.weakest(), after = moved.weakest();
  // Covering an unserved block always counts; otherwise the gain must be clear.
  if (before <= 0 ? after > 0 : after > before * min_gain) return candidate;
  return std::nullopt;
}

}  // namespace sepal

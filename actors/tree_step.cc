#include "actors/tree_step.h"

namespace sepal {

std::string token_tree_error(std::span<const std::int32_t> parents, std::int64_t n) {
  if (static_cast<std::int64_t>(parents.size()) != n) {
    return "a tree step of " + std::to_string(n) + " rows names " + std::to_string(parents.size()) + " parents";
  }
  for (std::size_t i = 0; i < parents.size(); ++i) {
    if (parents[i] < -1 || parents[i] >= static_cast<std::int32_t>(i)) {
      return "tree node " + std::to_string(i) + " has parent " + std::to_string(parents[i]) + ", not an earlier node";
    }
  }
  return {};
}

std::string tree_path_error(std::span<const std::int32_t> path, std::span<const std::int32_t> tree) {
  if (tree.empty()) return "the session holds no token tree to keep a path of";
  const auto nodes = static_cast<std::int32_t>(tree.size());
  std::int32_t previous = -1;
  for (const std::int32_t node : path) {
    if (node < 0 || node >= nodes || tree[static_cast<std::size_t>(node)] != previous) {
      return "the kept nodes are not a path from a root of the held tree of " + std::to_string(nodes) + " nodes";
    }
    previous = node;
  }
  return {};
}

}  // namespace sepal

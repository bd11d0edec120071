#pragma once
// The checks a token-tree step's fields must pass (actors/protocol/block_host.h), shared by the
// block host and the client driver so that both refuse the same things.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <span>
#include <string>

namespace sepal {

/// Why `parents` is not a token tree of n nodes (each parent an earlier node, or -1 for a root);
/// empty when it is one.
std::string token_tree_error(std::span<const std::int32_t> parents, std::int64_t n);

/// Why `path` is not a path of the tree `tree` (a root, then each node's child); empty when it
/// is one.
std::string tree_path_error(std::span<const std::int32_t> path, std::span<const std::int32_t> tree);

}  // namespace sepal

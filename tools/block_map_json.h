#pragma once
// The balancer's block map as JSON: sepal status --json, sepal generate --json and --block-map-log.

#include <nlohmann/json.hpp>

#include "actors/protocol/balancer.h"

namespace sepal::tools {

nlohmann::json block_map_json(const BlockMapReply& map);

}  // namespace sepal::tools

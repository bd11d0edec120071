#include "tools/block_map_json.h"

namespace sepal::tools {

nlohmann::json block_map_json(const BlockMapReply& map) {
  nlohmann::json hosts = nlohmann::json::array();
  for (const auto& h : map.hosts) {
    hosts.push_back({{"peer", h.peer}, {"first", h.first}, {"last", h.last}, {"serving_first", h.serving_first},
                     {"serving_last", h.serving_last}, {"throughput", h.throughput}, {"sessions", h.sessions},
                     {"cache_bytes_free", h.cache_bytes_free}, {"numerics", h.numerics}});
  }
  return {{"model", map.model}, {"num_blocks", map.num_blocks}, {"version", map.version}, {"hosts", hosts}};
}

}  // namespace sepal::tools

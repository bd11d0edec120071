#pragma once
// What `sepal serve-api` shows of itself: the live status page at / (one self-contained HTML
// document, no external assets, which polls /status every second and draws the block map), and
// the same status in Prometheus' text exposition format for /metrics.
//
// The status JSON (ApiServer's /status):
//   {"model", "mode": "swarm"|"local", "uptime_s",
//    "api": {"requests", "errors", "running", "waiting", "rejected", "disconnects",
//            "prompt_tokens", "completion_tokens"},
//    "swarm": null | {"hosts_launched", "block_map": {"model", "num_blocks", "version",
//             "hosts": [{"peer", "first", "last", "serving_first", "serving_last", "throughput",
//                        "sessions", "cache_bytes_free"}]},
//             "events": [{"time", "event", "version"}]}}
//
// Thread-safety: plain functions.

#include <string>

#include <nlohmann/json.hpp>

namespace sepal::api {

/// The page's HTML.
const std::string& status_page_html();

/// The status as Prometheus text (counters of the API, gauges of every host and block).
std::string prometheus_metrics(const nlohmann::json& status);

}  // namespace sepal::api

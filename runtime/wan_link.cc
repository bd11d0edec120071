#include "runtime/wan_link.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace sepal {

std::string WanConfig::to_string() const {
  std::ostringstream out;
  out << "rtt_ms=" << rtt_ms << ",jitter_ms=" << jitter_ms << ",bandwidth_mbps=" << bandwidth_mbps
      << ",loss=" << loss;
  return out.str();
}

Result<WanConfig> parse_wan_config(const std::string& text) {
  WanConfig c;
  std::string normalized = text;
  for (char& ch : normalized) {
    if (ch == ',' || ch == '\n' || ch == ';' || ch == '\t') ch = ' ';
  }
  std::istringstream in(normalized);
  std::string item;
  while (in >> item) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) return error(StatusCode::kInvalidArgument, "WAN setting '", item, "' is not key=value");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !std::isfinite(v) || v < 0) {
      return error(StatusCode::kInvalidArgument, "WAN setting ", key, "='", value, "' is not a number >= 0");
    }
    // Bounds that keep every delay a link computes within its clock's range.
    constexpr double kMaxMs = 3.6e6;                      // an hour
    constexpr double kMinMbps = 1e-3, kMaxMbps = 1e7;    // 1 kbit/s to 10 Tbit/s
    constexpr double kMaxMss = 1 << 24;
    if ((key == "rtt_ms" || key == "jitter_ms") && v > kMaxMs) {
      return error(StatusCode::kInvalidArgument, "WAN ", key, " must be at most ", kMaxMs, " (an hour), got ", v);
    }
    if (key == "bandwidth_mbps" && v != 0 && (v < kMinMbps || v > kMaxMbps)) {
      return error(StatusCode::kInvalidArgument, "WAN bandwidth_mbps must be 0 (unlimited) or between ", kMinMbps, " and ",
                   kMaxMbps, ", got ", v);
    }
    if (key == "rtt_ms") c.rtt_ms = v;
    else if (key == "jitter_ms") c.jitter_ms = v;
    else if (key == "bandwidth_mbps") c.bandwidth_mbps = v;
    else if (key == "loss") {
      if (v >= 1) return error(StatusCode::kInvalidArgument, "WAN loss must be below 1, got ", v);
      c.loss = v;
    } else if (key == "mss_bytes") {
      if (v < 1 || v > kMaxMss) return error(StatusCode::kInvalidArgument, "WAN mss_bytes must be between 1 and ", kMaxMss);
      c.mss_bytes = static_cast<std::size_t>(v);
    } else {
      return error(StatusCode::kInvalidArgument, "unknown WAN setting '", key,
                   "' (known: rtt_ms, jitter_ms, bandwidth_mbps, loss, mss_bytes)");
    }
  }
  if (c.jitter_ms > c.rtt_ms / 2) {
    return error(StatusCode::kInvalidArgument, "WAN jitter_ms ", c.jitter_ms, " exceeds the one-way latency ", c.rtt_ms / 2);
  }
  return c;
}

WanLink::WanLink(const WanConfig& config, std::uint64_t seed) : config_(config), rng_(seed) {}

WanLink::Duration WanLink::delivery_time(Duration now, std::size_t bytes) {
  using std::chrono::duration_cast;
  using Ms = std::chrono::duration<double, std::milli>;
  const auto serialise = [&](std::size_t n) {
    if (config_.bandwidth_mbps <= 0) return Duration{0};
    return duration_cast<Duration>(std::chrono::duration<double>(static_cast<double>(n) * 8.0 / (config_.bandwidth_mbps * 1e6)));
  };
  const Duration one_way = duration_cast<Duration>(Ms(config_.rtt_ms / 2));
  const Duration rtt = duration_cast<Duration>(Ms(config_.rtt_ms));

  Duration start = std::max(now, link_free_);
  Duration finish = start + serialise(bytes);
  Duration extra{0};
  if (config_.loss > 0) {
    // Each lost packet is noticed after a round trip and sent again on the shared link.
    const std::size_t packets = std::max<std::size_t>(1, (bytes + config_.mss_bytes - 1) / config_.mss_bytes);
    std::binomial_distribution<std::size_t> lost_count(packets, config_.loss);
    std::size_t lost = lost_count(rng_);
    while (lost > 0) {
      extra += rtt;
      finish += serialise(std::min(bytes, lost * config_.mss_bytes));
      std::binomial_distribution<std::size_t> again(lost, config_.loss);  // retransmissions can be lost too
      lost = again(rng_);
    }
  }
  link_free_ = finish;
  Duration jitter{0};
  if (config_.jitter_ms > 0) {
    std::uniform_real_distribution<double> j(-config_.jitter_ms, config_.jitter_ms);
    jitter = duration_cast<Duration>(Ms(j(rng_)));
  }
  Duration delivery = finish + extra + one_way + jitter;
  delivery = std::max(delivery, last_delivery_);  // in order
  last_delivery_ = delivery;
  return delivery;
}

}  // namespace sepal

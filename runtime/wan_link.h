#pragma once
// The timing model of an emulated wide-area link, one direction. A frame leaves when the link is
// free (frames share the link: each occupies it for bytes*8/bandwidth), then travels the one-way
// latency plus jitter. Each packet (MSS bytes) is lost with probability `loss`; a lost packet is
// retransmitted after one round trip and occupies the link again. Delivery keeps the sending
// order, as TCP does. The model is a pure function of its inputs and the random stream, so tests
// check it on a fake clock.
//
// Thread-safety: WanLink is not thread-safe; the WAN transport serialises access per link.

#include <chrono>
#include <cstdint>
#include <random>
#include <string>

#include "runtime/status.h"

namespace sepal {

/// Parameters of an emulated link, as configs and flags give them.
struct WanConfig {
  double rtt_ms = 0.0;          ///< round-trip latency (each direction adds half)
  double jitter_ms = 0.0;       ///< one-way latency varies uniformly by ± this much
  double bandwidth_mbps = 0.0;  ///< link rate in megabits per second; 0 is unlimited
  double loss = 0.0;            ///< probability that a packet is lost, in [0, 1)
  std::size_t mss_bytes = 1448;  ///< packet payload size used for loss

  bool enabled() const { return rtt_ms > 0 || jitter_ms > 0 || bandwidth_mbps > 0 || loss > 0; }
  std::string to_string() const;
};

/// Parses "rtt_ms=100,bandwidth_mbps=100,jitter_ms=1,loss=0.001" (also space- or
/// newline-separated, as in a config's [wan] section). kInvalidArgument names the bad key.
Result<WanConfig> parse_wan_config(const std::string& text);

/// One direction of an emulated link.
class WanLink {
 public:
  using Duration = std::chrono::nanoseconds;

  WanLink(const WanConfig& config, std::uint64_t seed);

  /// When a frame of `bytes` handed over at `now` (time since any fixed origin) is delivered.
  Duration delivery_time(Duration now, std::size_t bytes);

 private:
  WanConfig config_;
  std::mt19937_64 rng_;
  Duration link_free_{0};       ///< when the link finishes serialising what it has
  Duration last_delivery_{0};   ///< deliveries keep their order
};

}  // namespace sepal

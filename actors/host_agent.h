#pragma once
// A block host's dealings with the balancer: it announces the host when joining, loads the
// blocks the balancer assigns, then re-announces every period (throughput, sessions, blocks
// served) and follows the balancer's moves by loading the new range and swapping it in. Leaving
// gracefully refuses new work, tells the balancer, and stops announcing.
//
// Thread-safety: join/start/leave/stop from one controlling thread; the announce loop runs on its
// own thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "actors/block_host.h"
#include "actors/block_placement.h"
#include "actors/protocol/balancer.h"

namespace sepal {

struct HostAgentOptions {
  std::string model;
  std::int64_t num_blocks = 0;
  std::int64_t max_blocks = 0;  ///< how many blocks this host can hold
  double throughput = 0;        ///< declared tokens/s per block, announced as is; 0: measured
  std::chrono::milliseconds announce_period{1000};
  std::chrono::milliseconds request_timeout{10000};
  /// Loads blocks [first, last) (throws sepal::Error on failure).
  std::function<std::shared_ptr<const BlockStack>(BlockRange)> load;
};

class HostAgent {
 public:
  HostAgent(ActorSystem& system, BlockHost& host, ActorRef<BalancerProtocol> balancer, HostAgentOptions options);
  ~HostAgent();

  /// Announces the host, loads the assigned blocks and serves them; returns once it serves.
  Status join(std::chrono::milliseconds timeout);
  /// Starts announcing every period and following moves.
  void start();
  /// Graceful leave: no new sessions or steps, the balancer forgets the host, announcing stops.
  Status leave();
  /// Stops announcing (the host still serves).
  void stop();
  /// The blocks served now.
  BlockRange serving() const;

 private:
  Announce announcement(bool leaving);
  // One announcement; loads and swaps in a new range when the answer asks for one.
  Status announce_once();
  Status serve(BlockRange range);

  ActorSystem& system_;
  BlockHost& host_;
  ActorRef<BalancerProtocol> balancer_;
  HostAgentOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  BlockRange serving_;
  bool stopping_ = false;
  std::thread loop_;
};

}  // namespace sepal

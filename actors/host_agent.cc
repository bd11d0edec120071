#include "actors/host_agent.h"

#include "kernels/error.h"
#include "runtime/log.h"

namespace sepal {

HostAgent::HostAgent(ActorSystem& system, BlockHost& host, ActorRef<BalancerProtocol> balancer, HostAgentOptions options)
    : system_(system), host_(host), balancer_(balancer), options_(std::move(options)) {}

HostAgent::~HostAgent() { stop(); }

BlockRange HostAgent::serving() const {
  std::lock_guard lock(mutex_);
  return serving_;
}

Announce HostAgent::announcement(bool leaving) {
  const HostInfoReply info = host_.info();
  const BlockRange range = serving();
  return Announce{options_.model, options_.num_blocks, options_.max_blocks,
                  options_.throughput > 0 ? options_.throughput : info.tokens_per_second,
                  range.first, range.last, info.sessions, info.cache_bytes_free, leaving};
}

Status HostAgent::serve(BlockRange range) {
  log(LogLevel::kInfo, "loading blocks [", range.first, ", ", range.last, ")");
  std::shared_ptr<const BlockStack> blocks;
  double throughput = options_.throughput;
  try {
    blocks = options_.load(range);
    if (throughput <= 0) throughput = measure_block_throughput(*blocks);
  } catch (const Error& e) {
    return error(StatusCode::kInvalidArgument, "cannot load blocks [", range.first, ", ", range.last, "): ", e.what());
  }
  host_.set_blocks(std::move(blocks), throughput);
  {
    std::lock_guard lock(mutex_);
    serving_ = range;
  }
  log(LogLevel::kInfo, "serving blocks [", range.first, ", ", range.last, ") at ", throughput, " tokens/s per block");
  return Status::ok();
}

Status HostAgent::announce_once() {
  auto assigned = system_.request_sync(balancer_, announcement(false), options_.request_timeout);
  if (!assigned.is_ok()) return assigned.status();
  const BlockRange range{assigned->first, assigned->last};
  if (range.size() <= 0 || range.first < 0 || range.last > options_.num_blocks) {
    return error(StatusCode::kInvalidArgument, "the balancer assigned blocks [", range.first, ", ", range.last,
                 ") of a ", options_.num_blocks, "-block model");
  }
  if (range == serving()) return Status::ok();
  SEPAL_RETURN_IF_ERROR(serve(range));
  // Tell the balancer at once, so the move counts as done.
  auto again = system_.request_sync(balancer_, announcement(false), options_.request_timeout);
  return again.is_ok() ? Status::ok() : again.status();
}

Status HostAgent::join(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Status last;
  while (std::chrono::steady_clock::now() < deadline) {
    last = announce_once();
    if (last.is_ok()) return last;
    if (last.code() == StatusCode::kRefused || last.code() == StatusCode::kInvalidArgument) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return error(StatusCode::kTimeout, "no block assignment from the balancer in ", timeout.count(), " ms: ", last.to_string());
}

void HostAgent::start() {
  loop_ = std::thread([this] {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, options_.announce_period, [this] { return stopping_; });
      if (stopping_) break;
      lock.unlock();
      if (Status s = announce_once(); !s.is_ok()) log(LogLevel::kWarn, "announcement failed: ", s.to_string());
      lock.lock();
    }
  });
}

void HostAgent::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (loop_.joinable()) loop_.join();
}

Status HostAgent::leave() {
  stop();
  host_.set_leaving();
  auto ack = system_.request_sync(balancer_, announcement(true), options_.request_timeout);
  return ack.is_ok() ? Status::ok() : ack.status();
}

}  // namespace sepal

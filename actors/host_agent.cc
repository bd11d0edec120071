#include "actors/host_agent.h"

#include <pthread.h>

#include "runtime/log.h"

namespace sepal {

HostAgent::HostAgent(ActorSystem& system, BlockHost& host, ActorRef<BalancerProtocol> balancer, HostAgentOptions options)
    : system_(system), host_(host), balancer_(balancer), options_(std::move(options)) {}

HostAgent::~HostAgent() {
  if (!loader_.joinable()) return;
  // The loading thread holds the agent's cell for a moment while it posts its result; if the
  // agent goes meanwhile, the thread itself may be the one destroying it, and it is ending anyway.
  if (loader_.get_id() == std::this_thread::get_id()) loader_.detach();
  else loader_.join();
}

Announce HostAgent::announcement(bool leaving) const {
  const HostInfoReply info = host_.info();
  return Announce{options_.model, options_.num_blocks, options_.max_blocks,
                  options_.throughput > 0 ? options_.throughput : info.tokens_per_second,
                  serving_.first, serving_.last, info.sessions, info.cache_bytes_free, leaving, info.numerics};
}

void HostAgent::serve(BlockRange range, Done done) {
  log(LogLevel::kInfo, "loading blocks [", range.first, ", ", range.last, ")");
  if (loader_.joinable()) loader_.join();  // the previous load has posted its result already
  ActorSystem* system = &system_;
  loader_ = std::thread([this, system, range, done, load = options_.load, declared = options_.throughput] {
    pthread_setname_np(pthread_self(), "sepal-loader");
    std::shared_ptr<const BlockStack> blocks;
    double throughput = declared;
    Status status;
    try {
      blocks = load(range);
      if (throughput <= 0) throughput = measure_block_throughput(*blocks);
    } catch (const std::exception& e) {
      status = error(StatusCode::kInvalidArgument, "cannot load blocks [", range.first, ", ", range.last, "): ", e.what());
    }
    system->run_in_turn(kHostAgentActorId, [this, range, done, blocks, throughput, status]() mutable {
      if (!status.is_ok()) {
        load_failed_ = true;
        return done(status);
      }
      host_.set_blocks(std::move(blocks), throughput);
      serving_ = range;
      log(LogLevel::kInfo, "serving blocks [", range.first, ", ", range.last, ") at ", throughput, " tokens/s per block");
      done(Status::ok());
    });
  });
}

void HostAgent::announce(Done done) {
  system_.request_in_turn(kHostAgentActorId, balancer_, announcement(false), options_.request_timeout,
                          [this, done](Result<Assignment> assigned) {
    if (!assigned.is_ok()) return done(assigned.status());
    const BlockRange range{assigned->first, assigned->last};
    if (range.size() <= 0 || range.first < 0 || range.last > options_.num_blocks) {
      return done(error(StatusCode::kInvalidArgument, "the balancer assigned blocks [", range.first, ", ", range.last,
                        ") of a ", options_.num_blocks, "-block model"));
    }
    if (range == serving_) return done(Status::ok());
    serve(range, [this, done](Status served) {
      if (!served.is_ok()) return done(served);
      // Tell the balancer at once, so the move counts as done.
      system_.request_in_turn(kHostAgentActorId, balancer_, announcement(false), options_.request_timeout,
                              [done](Result<Assignment> again) { done(again.status()); });
    });
  });
}

Result<HostJoined> HostAgent::handle(ActorContext& ctx, const JoinSwarm& m) {
  if (ctx.sender().peer != system_.self()) return error(StatusCode::kRefused, "the host agent takes requests from its own process only");
  if (busy_ || announcing_) return error(StatusCode::kInvalidArgument, "the host has joined already");
  if (m.timeout_ms <= 0 || m.timeout_ms > 86400000) return error(StatusCode::kInvalidArgument, "JoinSwarm needs a timeout of at most a day");
  auto reply = std::make_shared<ReplyHandle<HostJoined>>(ctx.defer_reply<HostJoined>());
  try_join(reply, system_.scheduler().now() + std::chrono::milliseconds(m.timeout_ms), Status::ok());
  return HostJoined{};
}

void HostAgent::try_join(std::shared_ptr<ReplyHandle<HostJoined>> reply, Scheduler::Clock::time_point deadline, Status last) {
  if (stopping_) return reply->reply(error(StatusCode::kCancelled, "the host is leaving"));
  if (system_.scheduler().now() >= deadline) {
    return reply->reply(error(StatusCode::kTimeout, "no block assignment from the balancer in time: ", last.to_string()));
  }
  busy_ = true;
  announce([this, reply, deadline](Status s) {
    busy_ = false;
    if (s.is_ok()) {
      reply->reply(HostJoined{serving_.first, serving_.last});
      announcing_ = true;
      system_.after_in_turn(kHostAgentActorId, options_.announce_period, [this] { tick(); });
      return;
    }
    if (s.code() == StatusCode::kRefused || s.code() == StatusCode::kInvalidArgument) return reply->reply(s);
    system_.after_in_turn(kHostAgentActorId, options_.join_retry, [this, reply, deadline, s] { try_join(reply, deadline, s); });
  });
}

void HostAgent::tick() {
  if (stopping_ || !announcing_) return;
  if (!busy_) {
    busy_ = true;
    announce([this](Status s) {
      busy_ = false;
      if (load_failed_ && !stopping_) return give_up(s);
      if (!s.is_ok() && !stopping_) log(LogLevel::kWarn, "announcement failed: ", s.to_string());
    });
  }
  system_.after_in_turn(kHostAgentActorId, options_.announce_period, [this] { tick(); });
}

void HostAgent::give_up(const Status& why) {
  log(LogLevel::kError, why.message(), "; leaving the swarm");
  stopping_ = true;
  host_.set_leaving();
  system_.request_in_turn(kHostAgentActorId, balancer_, announcement(true), options_.request_timeout,
                          [this, why](Result<Assignment> ack) {
                            if (!ack.is_ok()) log(LogLevel::kWarn, "the balancer did not acknowledge the leave: ", ack.status().to_string());
                            if (options_.on_failure) options_.on_failure(why);
                          });
}

void HostAgent::handle(ActorContext& ctx, const StopAnnouncing&) {
  if (ctx.sender().peer != system_.self()) return;
  stopping_ = true;
}

Result<HostLeft> HostAgent::handle(ActorContext& ctx, const LeaveSwarm&) {
  if (ctx.sender().peer != system_.self()) return error(StatusCode::kRefused, "the host agent takes requests from its own process only");
  stopping_ = true;
  host_.set_leaving();
  auto reply = ctx.defer_reply<HostLeft>();
  system_.request_in_turn(kHostAgentActorId, balancer_, announcement(true), options_.request_timeout,
                          [reply](Result<Assignment> ack) {
                            if (ack.is_ok()) reply.reply(HostLeft{});
                            else reply.reply(ack.status());
                          });
  return HostLeft{};
}

ActorRef<HostAgentProtocol> add_host_agent(ActorSystem& system, BlockHost& host, ActorRef<BalancerProtocol> balancer,
                                           HostAgentOptions options) {
  return system.adopt_with_id(kHostAgentActorId, std::make_unique<HostAgent>(system, host, balancer, std::move(options)));
}

}  // namespace sepal

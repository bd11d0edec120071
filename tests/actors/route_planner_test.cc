// BalancerRoutePlanner over stand-in balancer and hosts on a virtual clock: a host that is alive
// but does not answer does not hold a route up past the probe grace when others make one, an
// avoided host is still used while it is a block's only host, and a host that answers late is
// awaited while the route needs it.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <vector>

#include "actors/balancer_route_planner.h"
#include "actors/block_placement.h"
#include "runtime/actor_system.h"
#include "runtime/deterministic_transport.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;

// The balancer's side: a fixed block map.
struct MapProtocol {
  using accepts = Accepts<GetBlockMap>;
};
class FixedMap final : public TypedActor<FixedMap, MapProtocol> {
 public:
  explicit FixedMap(BlockMapReply map) : map_(std::move(map)) {}
  std::string name() const override { return "fixed map"; }
  Result<BlockMapReply> handle(ActorContext&, const GetBlockMap&) { return map_; }

 private:
  BlockMapReply map_;
};

// A host's side: answers HostInfo with its blocks, or holds every question unanswered (a host
// whose transport is alive while its actors are stalled).
struct InfoProtocol {
  using accepts = Accepts<HostInfo>;
};
class StandInHost final : public TypedActor<StandInHost, InfoProtocol> {
 public:
  StandInHost(BlockRange blocks, bool answers) : blocks_(blocks), answers_(answers) {}
  std::string name() const override { return "stand-in host"; }
  Result<HostInfoReply> handle(ActorContext& ctx, const HostInfo&) {
    if (!answers_) {
      held_.push_back(ctx.defer_reply<HostInfoReply>());
      return HostInfoReply{};  // not sent: the reply was deferred
    }
    HostInfoReply r;
    r.first = blocks_.first;
    r.last = blocks_.last;
    r.tokens_per_second = 100;
    return r;
  }
  // Answers the held questions now, and the next ones at once.
  void release() {
    answers_ = true;
    HostInfoReply r;
    r.first = blocks_.first;
    r.last = blocks_.last;
    r.tokens_per_second = 100;
    for (auto& h : held_) h.reply(r);
    held_.clear();
  }

 private:
  BlockRange blocks_;
  bool answers_;
  std::vector<ReplyHandle<HostInfoReply>> held_;
};

// The driver whose turn the planner answers in.
struct NothingProtocol {
  using accepts = Accepts<>;
};
class Driver final : public TypedActor<Driver, NothingProtocol> {
 public:
  std::string name() const override { return "driver"; }
};

constexpr std::uint32_t kDriverId = 77;

class PlannerOverStandIns : public ::testing::Test {
 protected:
  // Hosts 1.. with these blocks; `answers[i]` false: host i + 1 never answers on its own.
  void start(const std::vector<BlockRange>& blocks, const std::vector<bool>& answers) {
    network_ = DeterministicNetwork::create(scheduler_);
    transports_.push_back(network_->endpoint());
    systems_.push_back(std::make_unique<ActorSystem>(*transports_.back(), scheduler_));
    BlockMapReply map{"m", 5, 1, {}};
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      transports_.push_back(network_->endpoint());
      systems_.push_back(std::make_unique<ActorSystem>(*transports_.back(), scheduler_));
      auto host = std::make_unique<StandInHost>(blocks[i], answers[i]);
      hosts_.push_back(host.get());
      systems_.back()->adopt_with_id(kBlockHostActorId, std::move(host));
      const PeerId peer = systems_.back()->self();
      map.hosts.push_back(HostRecord{peer, blocks[i].first, blocks[i].last, blocks[i].first, blocks[i].last, 100, 0, 0, ""});
    }
    for (auto& s : systems_) ASSERT_TRUE(s->start().is_ok());
    ActorSystem& client = *systems_.front();
    client.spawn_with_id<FixedMap>(kBalancerActorId, map);
    client.spawn_with_id<Driver>(kDriverId);
    planner_ = std::make_unique<BalancerRoutePlanner>(client, kDriverId, ActorRef<BalancerProtocol>{{client.self(), kBalancerActorId}});
  }
  void TearDown() override {
    planner_.reset();
    for (auto& s : systems_) s->stop();
  }
  // Asks for a route over [first, last) from the driver's turn; runs what is ready.
  void ask(std::int64_t first, std::int64_t last) {
    answer_.reset();
    systems_.front()->run_in_turn(kDriverId, [this, first, last] {
      planner_->route(first, last, "", [this](Result<std::vector<RouteHop>> r) { answer_ = std::move(r); });
    });
    scheduler_.run_all();
  }
  // Moves the virtual clock by `by` in steps of 10 ms, running what becomes ready.
  void pass(std::chrono::milliseconds by) {
    for (auto t = 0ms; t < by; t += 10ms) {
      scheduler_.advance(10ms);
      scheduler_.run_all();
    }
  }
  static std::vector<PeerId> peers(const std::vector<RouteHop>& hops) {
    std::vector<PeerId> out;
    for (const auto& h : hops) out.push_back(h.host.address.peer);
    return out;
  }

  ManualScheduler scheduler_;
  std::shared_ptr<DeterministicNetwork> network_;
  std::vector<std::unique_ptr<Transport>> transports_;
  std::vector<std::unique_ptr<ActorSystem>> systems_;
  std::vector<StandInHost*> hosts_;
  std::unique_ptr<BalancerRoutePlanner> planner_;
  std::optional<Result<std::vector<RouteHop>>> answer_;
};

TEST_F(PlannerOverStandIns, AHostThatDoesNotAnswerDoesNotHoldTheRouteUpPastTheGrace) {
  start({{0, 5}, {0, 5}}, {false, true});  // host 1 stalled, host 2 answers
  ask(0, 5);
  EXPECT_FALSE(answer_.has_value()) << "answered before the grace";
  pass(BalancerRoutePlannerOptions{}.probe_grace + 20ms);
  ASSERT_TRUE(answer_.has_value()) << "still waiting for the stalled host";
  ASSERT_TRUE(answer_->is_ok()) << answer_->status().to_string();
  EXPECT_EQ(peers(answer_->value()), std::vector<PeerId>{2});
  // Its late answer changes nothing, and it was not counted as failed: the next route may use it.
  hosts_[0]->release();
  scheduler_.run_all();
  planner_->report_failure(2);
  ask(0, 5);
  pass(BalancerRoutePlannerOptions{}.probe_grace + 20ms);
  ASSERT_TRUE(answer_.has_value() && answer_->is_ok());
  EXPECT_EQ(peers(answer_->value()), std::vector<PeerId>{1}) << "host 1, never failed, is preferred to avoided host 2";
}

TEST_F(PlannerOverStandIns, ARouteThatNeedsASlowHostAwaitsItsAnswer) {
  start({{0, 3}, {3, 5}}, {true, false});  // host 2 alone serves blocks 3 and 4, and answers late
  ask(0, 5);
  pass(3s);
  EXPECT_FALSE(answer_.has_value()) << "gave up on the only host of blocks [3, 5)";
  hosts_[1]->release();
  scheduler_.run_all();
  ASSERT_TRUE(answer_.has_value() && answer_->is_ok());
  EXPECT_EQ(peers(answer_->value()), (std::vector<PeerId>{1, 2}));
}

TEST_F(PlannerOverStandIns, AnAvoidedHostIsUsedWhileItIsTheOnlyHostOfItsBlocks) {
  start({{0, 3}, {3, 5}, {3, 5}}, {true, true, true});
  planner_->report_failure(2);
  ask(0, 5);
  ASSERT_TRUE(answer_.has_value() && answer_->is_ok());
  EXPECT_EQ(peers(answer_->value()), (std::vector<PeerId>{1, 3})) << "avoided host 2 was used beside host 3";
  pass(10ms);
  planner_->report_failure(1);  // blocks [0, 3) have no other host; host 2 stays avoided
  ask(0, 5);
  ASSERT_TRUE(answer_.has_value());
  ASSERT_TRUE(answer_->is_ok()) << answer_->status().to_string();
  EXPECT_EQ(peers(answer_->value()), (std::vector<PeerId>{1, 3}));
}

}  // namespace
}  // namespace sepal

// Membership stepped on a virtual clock: heartbeats, failure by transport error and by silence,
// graceful leave, a member admitted at run time, and the join secret's challenge-response.
#include <gtest/gtest.h>

#include "runtime/deterministic_transport.h"
#include "runtime/membership.h"
#include "runtime/swarm_secret.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;

class Swarm : public ::testing::Test {
 protected:
  static constexpr int kMembers = 3;
  void SetUp() override {
    network_ = DeterministicNetwork::create(scheduler_);
    std::vector<MemberInfo> all;
    for (int i = 0; i < kMembers; ++i) all.push_back(MemberInfo{static_cast<PeerId>(i), i == 0 ? "client" : "host", {}});
    for (int i = 0; i < kMembers + 1; ++i) {
      transports_.push_back(network_->endpoint());
      systems_.push_back(std::make_unique<ActorSystem>(*transports_.back(), scheduler_));
      ASSERT_TRUE(systems_.back()->start().is_ok());
    }
    for (int i = 0; i < kMembers; ++i) {
      members_.push_back(std::make_unique<Membership>(*systems_[i], all[i], all, options_));
      members_.back()->subscribe([this, i](const MembershipEvent& e) { events_[i].push_back(e); });
      ASSERT_TRUE(members_.back()->start().is_ok());
    }
  }
  // Advances virtual time in heartbeat steps, running everything that becomes ready.
  void run_for(std::chrono::milliseconds span) {
    for (auto t = 0ms; t < span; t += 50ms) {
      scheduler_.advance(50ms);
      scheduler_.run_all();
    }
  }
  std::vector<PeerId> alive_ids(int member) {
    std::vector<PeerId> ids;
    for (const auto& m : members_[member]->alive()) ids.push_back(m.peer);
    return ids;
  }

  MembershipOptions options_{200ms, 1000ms};
  ManualScheduler scheduler_;
  std::shared_ptr<DeterministicNetwork> network_;
  std::vector<std::unique_ptr<Transport>> transports_;
  std::vector<std::unique_ptr<ActorSystem>> systems_;
  std::vector<std::unique_ptr<Membership>> members_;
  std::map<int, std::vector<MembershipEvent>> events_;
};

TEST_F(Swarm, HeartbeatsKeepEveryoneAlive) {
  run_for(5000ms);
  for (int i = 0; i < kMembers; ++i) EXPECT_EQ(alive_ids(i), (std::vector<PeerId>{0, 1, 2}));
  // Heartbeats really flow: every member sent to every other member about once per period.
  int heartbeats = 0;
  for (const auto& s : network_->take_log()) heartbeats += s.envelope.type_id == Heartbeat::kTypeId;
  EXPECT_GE(heartbeats, kMembers * (kMembers - 1) * 20);
  EXPECT_TRUE(events_.empty());
}

TEST_F(Swarm, TransportFailureIsSeenAtOnce) {
  run_for(400ms);
  network_->kill(2);
  scheduler_.run_all();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(members_[i]->state(2), MemberState::kFailed);
    ASSERT_EQ(events_[i].size(), 1u);
    EXPECT_EQ(events_[i][0].peer, 2u);
    EXPECT_EQ(events_[i][0].role, "host");
  }
  run_for(3000ms);  // and nothing else changes
  EXPECT_EQ(alive_ids(0), (std::vector<PeerId>{0, 1}));
  EXPECT_EQ(events_[0].size(), 1u);
}

TEST_F(Swarm, SilenceBeyondTheTimeoutIsFailure) {
  run_for(400ms);
  members_[2].reset();  // member 2 hangs: its transport stays up, its heartbeats stop
  run_for(900ms);
  EXPECT_EQ(members_[0]->state(2), MemberState::kAlive);  // not yet: timeout is 1000 ms
  run_for(400ms);
  EXPECT_EQ(members_[0]->state(2), MemberState::kFailed);
  EXPECT_EQ(members_[1]->state(2), MemberState::kFailed);
  EXPECT_NE(events_[0].at(0).reason.find("no heartbeat for "), std::string::npos) << events_[0].at(0).reason;
}

// Every process paused at once (a stopped VM, a starved machine): the first look after the pause
// finds every member silent for 3 s, and must not blame them for time it did not run either.
TEST_F(Swarm, APauseOfTheWholeProcessIsNotTheMembersSilence) {
  run_for(400ms);
  scheduler_.advance(3000ms);
  scheduler_.run_all();
  run_for(600ms);
  for (int i = 0; i < kMembers; ++i) EXPECT_EQ(alive_ids(i), (std::vector<PeerId>{0, 1, 2})) << "member " << i;
  EXPECT_TRUE(events_.empty());
  // Each process knows it was paused past the failure timeout, for a while (a host that finds
  // itself dropped says why).
  for (int i = 0; i < kMembers; ++i) {
    ASSERT_TRUE(members_[i]->recent_pause().has_value()) << "member " << i;
    EXPECT_GE(members_[i]->recent_pause()->count(), 2500);
    EXPECT_LE(members_[i]->recent_pause()->count(), 3000);
  }
  // And silence after the pause still counts.
  members_[2].reset();
  run_for(1300ms);
  EXPECT_EQ(members_[0]->state(2), MemberState::kFailed);
  run_for(3 * options_.failure_timeout);
  EXPECT_FALSE(members_[0]->recent_pause().has_value()) << "an old pause is forgotten";
}

// A pause seen before the membership's first tick after it: the transport reports a failure
// (the other members closed their links while this process was stopped) as soon as the process
// runs again, and whoever hears of it asks whether this process was paused.
TEST_F(Swarm, APauseIsKnownBeforeTheFirstTickAfterIt) {
  run_for(400ms);
  scheduler_.advance(3000ms);  // the clock moved; no tick has run yet
  ASSERT_TRUE(members_[1]->recent_pause().has_value());
  EXPECT_GE(members_[1]->recent_pause()->count(), 2500);
  EXPECT_LE(members_[1]->recent_pause()->count(), 3000);
  scheduler_.run_all();  // the tick looks, and records the same pause
  ASSERT_TRUE(members_[1]->recent_pause().has_value());
  EXPECT_GE(members_[1]->recent_pause()->count(), 2500);
}

TEST_F(Swarm, APauseShorterThanTheFailureTimeoutIsNotRecorded) {
  run_for(400ms);
  scheduler_.advance(options_.failure_timeout / 2 + options_.heartbeat_period);
  scheduler_.run_all();
  run_for(200ms);
  EXPECT_FALSE(members_[0]->recent_pause().has_value());
}

TEST_F(Swarm, GracefulLeaveIsNotAFailure) {
  run_for(400ms);
  std::optional<Status> left;
  members_[1]->leave_async(1000ms, [&](Status s) { left = s; });
  scheduler_.run_all();
  ASSERT_TRUE(left.has_value());
  EXPECT_TRUE(left->is_ok()) << left->to_string();
  EXPECT_EQ(members_[0]->state(1), MemberState::kLeft);
  EXPECT_EQ(members_[2]->state(1), MemberState::kLeft);
  network_->kill(1);  // it then disconnects: still "left", not "failed"
  run_for(2000ms);
  EXPECT_EQ(members_[0]->state(1), MemberState::kLeft);
  EXPECT_EQ(events_[0].size(), 1u);
}

TEST_F(Swarm, AdmittedMemberIsAnnouncedToEveryone) {
  run_for(400ms);
  const PeerId id = members_[0]->allocate_peer_id();
  EXPECT_EQ(id, 3u);
  const MemberInfo joiner{id, "host", {3}};  // the deterministic network's address of endpoint 3
  auto known = members_[0]->alive();
  members_.push_back(std::make_unique<Membership>(*systems_[3], joiner, known, options_));
  ASSERT_TRUE(members_.back()->start().is_ok());
  ASSERT_TRUE(members_[0]->admit(joiner, LinkKeyAuthority{}).is_ok());
  run_for(3000ms);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(alive_ids(i), (std::vector<PeerId>{0, 1, 2, 3})) << "member " << i;
  EXPECT_EQ(members_[0]->allocate_peer_id(), 4u);
}

TEST(SwarmSecret, ChallengeResponse) {
  const auto secret = SwarmSecret::from_text("correct horse battery staple").value();
  const auto other = SwarmSecret::from_text("correct horse battery stapler").value();
  const Nonce a = random_nonce(), b = random_nonce();
  EXPECT_NE(a, b);
  const Proof p = secret.prove("join", a, b);
  EXPECT_TRUE(secret.verify(p, "join", a, b));
  EXPECT_FALSE(secret.verify(p, "welcome", a, b));  // bound to its purpose
  EXPECT_FALSE(secret.verify(p, "join", b, a));     // and to the nonces' order
  EXPECT_FALSE(other.verify(p, "join", a, b));
  EXPECT_FALSE(SwarmSecret::from_text("short").is_ok());
}

}  // namespace
}  // namespace sepal

// Actors: typed protocols checked at compile time, request/reply stepped message by message on a
// deterministic scheduler, timeouts on a virtual clock, peer failure, error replies, and one
// message at a time under a real thread pool.
#include <gtest/gtest.h>

#include <algorithm>

#include <atomic>
#include <future>
#include <thread>

#include "runtime/actor_system.h"
#include "runtime/deterministic_transport.h"
#include "runtime/inproc_transport.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;

struct EchoReply {
  static constexpr std::uint16_t kTypeId = 0x7201;
  std::string text;
  TensorPayload data;
  SEPAL_FIELDS(text, data)
};
struct Echo {
  static constexpr std::uint16_t kTypeId = 0x7202;
  using Reply = EchoReply;
  std::string text;
  TensorPayload data;
  SEPAL_FIELDS(text, data)
};
struct Add {  // one-way
  static constexpr std::uint16_t kTypeId = 0x7203;
  std::int64_t amount = 0;
  SEPAL_FIELDS(amount)
};
struct Count {
  static constexpr std::uint16_t kTypeId = 0x7204;
  using Reply = Add;
  SEPAL_FIELDS()
};
struct Explode {
  static constexpr std::uint16_t kTypeId = 0x7205;
  using Reply = EchoReply;
  SEPAL_FIELDS()
};
struct Later {  // answered from another thread, or never
  static constexpr std::uint16_t kTypeId = 0x7206;
  using Reply = EchoReply;
  bool answer = true;
  SEPAL_FIELDS(answer)
};
struct Unaccepted {
  static constexpr std::uint16_t kTypeId = 0x7207;
  SEPAL_FIELDS()
};

struct EchoProtocol {
  using accepts = Accepts<Echo, Add, Count, Explode, Later>;
};

class EchoActor final : public TypedActor<EchoActor, EchoProtocol> {
 public:
  explicit EchoActor(std::atomic<int>* concurrent = nullptr) : concurrent_(concurrent) {}
  std::string name() const override { return "echo"; }

  Result<EchoReply> handle(ActorContext&, const Echo& m) { return EchoReply{m.text + "!", m.data}; }
  void handle(ActorContext&, const Add& m) {
    if (concurrent_ && concurrent_->fetch_add(1) != 0) overlapped_ = true;
    const auto before = total_;
    std::this_thread::yield();
    total_ = before + m.amount;  // a race here would lose additions
    if (concurrent_) concurrent_->fetch_sub(1);
  }
  Result<Add> handle(ActorContext&, const Count&) {
    if (overlapped_) return error(StatusCode::kInternal, "two handlers overlapped");
    return Add{total_};
  }
  Result<EchoReply> handle(ActorContext&, const Explode&) { throw std::runtime_error("boom"); }
  Result<EchoReply> handle(ActorContext& ctx, const Later& m) {
    auto reply = ctx.defer_reply<EchoReply>();
    if (m.answer) std::thread([reply] { reply.reply(EchoReply{"later", {}}); }).detach();
    return EchoReply{};  // ignored: the reply was deferred
  }

 private:
  std::atomic<int>* concurrent_;
  bool overlapped_ = false;
  std::int64_t total_ = 0;
};

// Compile-time contract: a message outside the protocol cannot be sent or requested.
template <typename P, typename M>
concept CanSend = requires(ActorSystem& s, ActorRef<P> r, M m) { s.send(r, m); };
template <typename P, typename M>
concept CanRequest = requires(ActorSystem& s, ActorRef<P> r, M m) {
  s.request(r, m, 1ms, [](auto) {});
};
static_assert(CanSend<EchoProtocol, Add>);
static_assert(CanRequest<EchoProtocol, Echo>);
static_assert(!CanSend<EchoProtocol, Unaccepted>, "an unaccepted message must not compile");
static_assert(!CanRequest<EchoProtocol, Unaccepted>);
static_assert(!CanRequest<EchoProtocol, Add>, "a one-way message has no reply to wait for");

// Messages a foreign or buggy process could send.
struct Impostor {
  static constexpr std::uint16_t kTypeId = Unaccepted::kTypeId;
  using Reply = EchoReply;
  SEPAL_FIELDS()
};
struct ImpostorProtocol {
  using accepts = Accepts<Impostor>;
};
struct FakeEcho {
  static constexpr std::uint16_t kTypeId = Echo::kTypeId;
  using Reply = EchoReply;
  std::int64_t junk = 5;
  SEPAL_FIELDS(junk)
};
struct FakeProtocol {
  using accepts = Accepts<FakeEcho>;
};

class DeterministicActors : public ::testing::Test {
 protected:
  void SetUp() override {
    network_ = DeterministicNetwork::create(scheduler_);
    ta_ = network_->endpoint();
    tb_ = network_->endpoint();
    a_ = std::make_unique<ActorSystem>(*ta_, scheduler_);
    b_ = std::make_unique<ActorSystem>(*tb_, scheduler_);
    ASSERT_TRUE(a_->start().is_ok());
    ASSERT_TRUE(b_->start().is_ok());
    echo_ = b_->spawn<EchoActor>();
  }
  ManualScheduler scheduler_;
  std::shared_ptr<DeterministicNetwork> network_;
  std::unique_ptr<Transport> ta_, tb_;
  std::unique_ptr<ActorSystem> a_, b_;
  ActorRef<EchoProtocol> echo_;
};

TEST_F(DeterministicActors, RequestAndReplyStepByStep) {
  std::optional<Result<EchoReply>> got;
  a_->request(echo_, Echo{"hi", {}}, 1000ms, [&](Result<EchoReply> r) { got = std::move(r); });
  auto log = network_->take_log();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].from, 0u);
  EXPECT_EQ(log[0].to, 1u);
  EXPECT_EQ(log[0].envelope.type_id, Echo::kTypeId);
  EXPECT_EQ(log[0].envelope.kind, FrameKind::kRequest);
  EXPECT_EQ(log[0].envelope.dst_actor, echo_.address.id);

  EXPECT_TRUE(scheduler_.run_one());  // the network delivers the request to b
  EXPECT_TRUE(network_->take_log().empty());
  EXPECT_TRUE(scheduler_.run_one());  // the echo actor handles it and replies
  log = network_->take_log();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].envelope.kind, FrameKind::kReply);
  EXPECT_EQ(log[0].envelope.type_id, EchoReply::kTypeId);
  EXPECT_FALSE(got.has_value());
  scheduler_.run_all();  // delivery of the reply, then the callback
  ASSERT_TRUE(got.has_value());
  ASSERT_TRUE(got->is_ok()) << got->status().to_string();
  EXPECT_EQ(got->value().text, "hi!");
  EXPECT_TRUE(network_->take_log().empty());
}

TEST_F(DeterministicActors, OneWayMessagesAreProcessedInOrder) {
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(a_->send(echo_, Add{i}).is_ok());
  std::optional<Result<Add>> total;
  a_->request(echo_, Count{}, 1000ms, [&](Result<Add> r) { total = std::move(r); });
  scheduler_.run_all();
  ASSERT_TRUE(total && total->is_ok());
  EXPECT_EQ(total->value().amount, 15);
}

// An actor that gathers work from its messages and runs it when its mailbox is empty.
class GatheringActor final : public TypedActor<GatheringActor, EchoProtocol> {
 public:
  std::string name() const override { return "gathering"; }
  Result<EchoReply> handle(ActorContext&, const Echo&) { return EchoReply{}; }
  void handle(ActorContext&, const Add& m) { pending_.push_back(m.amount); }
  Result<Add> handle(ActorContext&, const Count&) { return Add{static_cast<std::int64_t>(batches_.size())}; }
  Result<EchoReply> handle(ActorContext&, const Explode&) { return EchoReply{}; }
  Result<EchoReply> handle(ActorContext&, const Later&) { return EchoReply{}; }
  void on_mailbox_empty(ActorSystem&) override {
    if (!pending_.empty()) batches_.push_back(std::move(pending_));
    pending_.clear();
    ++emptied_;
  }
  std::vector<std::vector<std::int64_t>> batches_;
  int emptied_ = 0;

 private:
  std::vector<std::int64_t> pending_;
};

TEST_F(DeterministicActors, AnActorHearsWhenItsMailboxEmptiesAndGathersWhatCameMeanwhile) {
  auto owned = std::make_unique<GatheringActor>();
  GatheringActor* gather = owned.get();
  const ActorRef<EchoProtocol> ref = b_->adopt_with_id(9, std::move(owned));
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(a_->send(ref, Add{i}).is_ok());
  scheduler_.run_all();
  ASSERT_EQ(gather->batches_.size(), 1u);  // the five arrived before the actor ran: one batch
  EXPECT_EQ(gather->batches_[0], (std::vector<std::int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(gather->emptied_, 1);
  ASSERT_TRUE(a_->send(ref, Add{6}).is_ok());
  scheduler_.run_all();
  ASSERT_EQ(gather->batches_.size(), 2u);
  EXPECT_EQ(gather->batches_[1], std::vector<std::int64_t>{6});
  EXPECT_EQ(gather->emptied_, 2);  // once per emptying, never while idle
  scheduler_.run_all();
  EXPECT_EQ(gather->emptied_, 2);
}

// A transport whose deliveries the test makes by hand, as a transport's progress thread would.
class HandDelivery final : public Transport {
 public:
  PeerId self() const override { return 0; }
  std::string name() const override { return "by hand"; }
  std::vector<PeerId> peers() const override { return {1}; }
  Status start(TransportHandler* handler) override {
    handler_ = handler;
    return Status::ok();
  }
  Status send(PeerId, OutgoingFrame) override { return Status::ok(); }
  void stop() override {}
  TransportHandler& handler() { return *handler_; }

 private:
  TransportHandler* handler_ = nullptr;
};

TEST(DeliveryPasses, TheFramesOfOnePassWakeTheActorOnceAtItsEnd) {
  ManualScheduler scheduler;
  HandDelivery transport;
  ActorSystem system(transport, scheduler);
  const auto echo = system.spawn<EchoActor>();
  ASSERT_TRUE(system.start().is_ok());
  auto frame = [&](std::int64_t amount) {
    return encode(Envelope{0, 0, echo.address.id, 0, FrameKind::kOneWay}, Add{amount}).flatten();
  };
  transport.handler().begin_delivery();
  for (std::int64_t i = 1; i <= 3; ++i) transport.handler().on_frame(1, frame(i));
  EXPECT_EQ(scheduler.ready(), 0u);  // held: nothing woken while the pass delivers
  transport.handler().end_delivery();
  EXPECT_EQ(scheduler.ready(), 1u);  // one drain for the three
  EXPECT_EQ(scheduler.run_all(), 1);
  // Outside a pass a frame wakes the actor at once, as before.
  transport.handler().on_frame(1, frame(4));
  EXPECT_EQ(scheduler.ready(), 1u);
  scheduler.run_all();
  std::optional<Result<Add>> total;
  system.request(echo, Count{}, 1s, [&](Result<Add> r) { total = std::move(r); });
  scheduler.run_all();
  ASSERT_TRUE(total && total->is_ok());
  EXPECT_EQ(total->value().amount, 10);
  system.stop();
}

TEST_F(DeterministicActors, TimeoutOnTheVirtualClock) {
  std::optional<Result<EchoReply>> got;
  a_->request(echo_, Later{false}, 500ms, [&](Result<EchoReply> r) { got = std::move(r); });
  scheduler_.run_all();
  EXPECT_FALSE(got.has_value());
  scheduler_.advance(499ms);
  scheduler_.run_all();
  EXPECT_FALSE(got.has_value());
  scheduler_.advance(1ms);
  scheduler_.run_all();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->status().code(), StatusCode::kTimeout);
}

TEST_F(DeterministicActors, AnsweredRequestsLeaveNoTimeoutBehind) {
  // A request's timeout is cancelled by its reply (or its peer's failure): past the deadline no
  // task is due, so no thread would wake for it.
  std::optional<Result<EchoReply>> got, failed;
  a_->request(echo_, Echo{"hi", {}}, 500ms, [&](Result<EchoReply> r) { got = std::move(r); });
  scheduler_.run_all();
  ASSERT_TRUE(got.has_value() && got->is_ok());
  a_->request(echo_, Later{false}, 500ms, [&](Result<EchoReply> r) { failed = std::move(r); });
  scheduler_.run_all();
  network_->kill(1);
  scheduler_.run_all();
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->status().code(), StatusCode::kPeerFailed);
  scheduler_.advance(1000ms);
  EXPECT_EQ(scheduler_.ready(), 0u);
}

TEST(Schedulers, ACancelledTimerNeverRuns) {
  ManualScheduler manual;
  int ran = 0;
  const auto first = manual.post_at(manual.now() + 10ms, [&] { ran += 1; });
  manual.post_at(manual.now() + 10ms, [&] { ran += 10; });
  EXPECT_TRUE(manual.cancel(first));
  EXPECT_FALSE(manual.cancel(first));
  manual.advance(10ms);
  manual.run_all();
  EXPECT_EQ(ran, 10);

  ThreadPoolScheduler pool(1);
  std::atomic<int> fired{0};
  const auto late = pool.post_at(pool.now() + 50ms, [&] { fired += 1; });
  std::promise<void> later_one;
  pool.post_at(pool.now() + 100ms, [&] { later_one.set_value(); });
  EXPECT_TRUE(pool.cancel(late));
  later_one.get_future().wait();
  EXPECT_EQ(fired.load(), 0);
  EXPECT_FALSE(pool.cancel(late));
}

TEST_F(DeterministicActors, PeerFailureAnswersPendingRequestsAtOnce) {
  std::optional<Result<EchoReply>> got;
  a_->request(echo_, Echo{"x", {}}, 60000ms, [&](Result<EchoReply> r) { got = std::move(r); });
  network_->kill(1);
  scheduler_.run_all();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->status().code(), StatusCode::kPeerFailed);
  std::optional<Result<EchoReply>> again;
  a_->request(echo_, Echo{"x", {}}, 60000ms, [&](Result<EchoReply> r) { again = std::move(r); });
  scheduler_.run_all();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->status().code(), StatusCode::kPeerFailed);
}

TEST_F(DeterministicActors, ADepartedPeersRequestsFailAtOnceThenAndLater) {
  std::optional<Result<EchoReply>> pending, later;
  a_->request(echo_, Later{false}, 60000ms, [&](Result<EchoReply> r) { pending = std::move(r); });
  scheduler_.run_all();
  EXPECT_FALSE(pending.has_value());
  a_->declare_peer_departed(echo_.address.peer, error(StatusCode::kPeerFailed, "peer 1 left"));
  scheduler_.run_all();
  ASSERT_TRUE(pending.has_value());
  EXPECT_EQ(pending->status().message(), "peer 1 left");
  a_->request(echo_, Echo{"x", {}}, 60000ms, [&](Result<EchoReply> r) { later = std::move(r); });
  scheduler_.run_all();
  ASSERT_TRUE(later.has_value());
  EXPECT_EQ(later->status().code(), StatusCode::kPeerFailed);
}

TEST_F(DeterministicActors, HandlerErrorsAndUnknownActorsBecomeErrorReplies) {
  std::optional<Result<EchoReply>> exploded, missing;
  a_->request(echo_, Explode{}, 1000ms, [&](Result<EchoReply> r) { exploded = std::move(r); });
  a_->request(ActorRef<EchoProtocol>{{1, 999}}, Echo{"x", {}}, 1000ms, [&](Result<EchoReply> r) { missing = std::move(r); });
  scheduler_.run_all();
  ASSERT_TRUE(exploded.has_value());
  EXPECT_EQ(exploded->status().code(), StatusCode::kInternal);
  EXPECT_NE(exploded->status().message().find("boom"), std::string::npos);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status().code(), StatusCode::kNotFound);
  // The actor survived: it still answers.
  std::optional<Result<EchoReply>> after;
  a_->request(echo_, Echo{"still", {}}, 1000ms, [&](Result<EchoReply> r) { after = std::move(r); });
  scheduler_.run_all();
  ASSERT_TRUE(after && after->is_ok());
}

TEST_F(DeterministicActors, MalformedOrUnacceptedFramesAreAnsweredWithErrors) {
  // A request of a type the actor does not accept, built by hand as a foreign process could.
  std::optional<Result<EchoReply>> got;
  a_->request(ActorRef<ImpostorProtocol>{echo_.address}, Impostor{}, 1000ms, [&](Result<EchoReply> r) { got = std::move(r); });
  scheduler_.run_all();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(got->status().message().find("does not accept"), std::string::npos);
  // An Echo whose fields do not decode (an Add's body under Echo's type id).
  std::optional<Result<EchoReply>> bad;
  a_->request(ActorRef<FakeProtocol>{echo_.address}, FakeEcho{}, 1000ms, [&](Result<EchoReply> r) { bad = std::move(r); });
  scheduler_.run_all();
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->status().code(), StatusCode::kMalformed);
}

TEST(ThreadedActors, DeferredRepliesLargeTensorsAndOneMessageAtATime) {
  ThreadPoolScheduler scheduler(4);
  auto hub = InprocHub::create();
  auto ta = hub->endpoint(), tb = hub->endpoint();
  ActorSystem a(*ta, scheduler), b(*tb, scheduler);
  ASSERT_TRUE(a.start().is_ok());
  ASSERT_TRUE(b.start().is_ok());
  std::atomic<int> concurrent{0};
  auto echo = b.spawn<EchoActor>(&concurrent);

  auto later = a.request_sync(echo, Later{true}, 5000ms);
  ASSERT_TRUE(later.is_ok()) << later.status().to_string();
  EXPECT_EQ(later->text, "later");

  auto big = std::make_shared<const std::vector<float>>(std::size_t{32} << 20, 1.25f);  // 128 MiB
  auto reply = a.request_sync(echo, Echo{"big", share_vector<float>(ElementType::kF32, {32, 1 << 20}, big)}, 20000ms);
  ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
  ASSERT_EQ(reply->data.bytes, big->size() * 4);
  EXPECT_EQ(reply->data.as<float>()[big->size() - 1], 1.25f);

  std::vector<std::thread> senders;
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&] {
      for (int i = 0; i < 250; ++i) ASSERT_TRUE(a.send(echo, Add{1}).is_ok());
    });
  }
  for (auto& t : senders) t.join();
  // Frames from one process arrive in order, so the count comes after every Add.
  auto total = a.request_sync(echo, Count{}, 5000ms);
  ASSERT_TRUE(total.is_ok()) << total.status().to_string();
  EXPECT_EQ(total->amount, 1000);
  a.stop();
  b.stop();
  scheduler.shutdown();
}

// Holds its first Add until released (so later messages queue up), and records what it handles.
class GateActor final : public TypedActor<GateActor, EchoProtocol> {
 public:
  explicit GateActor(std::shared_future<void> gate) : gate_(std::move(gate)) {}
  std::string name() const override { return "gate"; }
  Result<EchoReply> handle(ActorContext&, const Echo& m) {
    record(m.text);
    return EchoReply{m.text, {}};
  }
  void handle(ActorContext&, const Add&) {
    if (!waited_) {
      entered_.set_value();
      gate_.wait();
    }
    waited_ = true;
    record("add");
  }
  /// Ready once the first Add is being handled (and held).
  std::future<void> entered() { return entered_.get_future(); }
  Result<Add> handle(ActorContext&, const Count&) { return Add{}; }
  Result<EchoReply> handle(ActorContext&, const Explode&) { return EchoReply{}; }
  Result<EchoReply> handle(ActorContext&, const Later&) { return EchoReply{}; }
  std::vector<std::string> handled() {
    std::lock_guard lock(mutex_);
    return handled_;
  }

 private:
  void record(const std::string& what) {
    std::lock_guard lock(mutex_);
    handled_.push_back(what);
  }
  std::shared_future<void> gate_;
  std::promise<void> entered_;
  bool waited_ = false;
  std::mutex mutex_;
  std::vector<std::string> handled_;
};

TEST(Mailboxes, AFloodingPeerIsBoundedAndOthersAreServedInTurn) {
  ThreadPoolScheduler scheduler(4);
  auto hub = InprocHub::create();
  auto tf = hub->endpoint(), tq = hub->endpoint(), th = hub->endpoint();
  ActorSystem flooder(*tf, scheduler), quiet(*tq, scheduler), host(*th, scheduler, MailboxLimits{8, 1 << 20});
  for (ActorSystem* s : {&flooder, &quiet, &host}) ASSERT_TRUE(s->start().is_ok());
  std::promise<void> open;
  auto* gate = new GateActor(open.get_future().share());
  const auto actor = host.adopt_with_id(5, std::unique_ptr<GateActor>(gate));

  // The first Add holds the actor; 8 more fill the flooder's queue; the rest are dropped. The
  // flood starts once the first is held: sent all at once, they could fill the queue before the
  // actor takes the first, leaving room for the request below on a busy machine.
  auto entered = gate->entered();
  ASSERT_TRUE(flooder.send(actor, Add{1}).is_ok());
  ASSERT_EQ(entered.wait_for(5s), std::future_status::ready);
  for (int i = 1; i < 100; ++i) ASSERT_TRUE(flooder.send(actor, Add{1}).is_ok());
  auto refused = flooder.request_sync(actor, Echo{"flooder", {}}, 5000ms);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("the limit per sender (8 messages"), std::string::npos)
      << refused.status().message();

  // Another peer's request has its own queue: it is served after at most one more Add.
  std::promise<Result<EchoReply>> answer;
  quiet.request(actor, Echo{"quiet", {}}, 5000ms, [&](Result<EchoReply> r) { answer.set_value(std::move(r)); });
  std::this_thread::sleep_for(50ms);  // the request is queued behind the held Add
  open.set_value();
  auto r = answer.get_future().get();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto wait_for_count = [&](std::size_t n) {
    for (int i = 0; i < 500 && gate->handled().size() < n; ++i) std::this_thread::sleep_for(10ms);
  };
  wait_for_count(9);
  std::this_thread::sleep_for(50ms);
  const auto handled = gate->handled();
  // The held Add, the 8 its queue holds (one more when the drain took the first before the queue
  // filled), and the quiet peer's Echo: the other 90 or so Adds were refused.
  const auto adds = std::count(handled.begin(), handled.end(), "add");
  EXPECT_GE(adds, 8);
  EXPECT_LE(adds, 10);
  const auto at = std::find(handled.begin(), handled.end(), "quiet") - handled.begin();
  EXPECT_LE(at, 2) << "the quiet peer waited behind the flood";
  // Once drained, the flooder is served again.
  auto again = flooder.request_sync(actor, Echo{"again", {}}, 5000ms);
  EXPECT_TRUE(again.is_ok()) << again.status().to_string();
  for (ActorSystem* s : {&flooder, &quiet, &host}) s->stop();
  scheduler.shutdown();
}

}  // namespace
}  // namespace sepal

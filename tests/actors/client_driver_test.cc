// The client driver stepped message by message: one process, a ManualScheduler (virtual clock),
// the deterministic network, and the fault-injection transport around every process. Hosts
// [0,2) [2,5) [0,2) [2,5) serve stories260K; a fault is injected at a chosen message (a host
// killed as the prompt reaches it, in the middle of a push, between steps; a straggler that never
// answers in time; a lost reply), and the text must be the greedy reference while the driver's
// state (route, failovers, length) says what happened. Every fault is also injected into
// speculative decoding (token trees drafted by the model's first 2 blocks, verified through the
// hosts), whose text must be the same. Several sessions interleave without touching each other.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>

#include "actors/block_host.h"
#include "actors/client_driver.h"
#include "actors/hidden_codec.h"
#include "actors/swarm_training.h"
#include "model/generation.h"
#include "model/prompt_tuning.h"
#include "model/tokenizer.h"
#include "runtime/deterministic_transport.h"
#include "runtime/faulty_transport.h"
#include "tests/actors/fixed_routes.h"
#include "tests/model/reference_llama.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;

constexpr auto kTimeout = 2000ms;  // the driver's per-request timeout, in virtual time

class ManualSwarm {
 public:
  /// Hosts of `ranges`, with `dtype` weights, or each its own of `dtypes` when given; each
  /// announces its numerics.
  explicit ManualSwarm(bool push, std::vector<std::pair<int, int>> ranges = {{0, 2}, {2, 5}, {0, 2}, {2, 5}},
                       DType dtype = DType::kF32, std::vector<DType> dtypes = {})
      : config_(read_model_config(model())), checkpoint_(Checkpoint::open(model())) {
    net_ = DeterministicNetwork::create(scheduler_);
    add_node();  // the client: peer 0
    std::vector<RouteHop> hosts;
    for (std::size_t i = 0; i < ranges.size(); ++i) {
      const auto [first, last] = ranges[i];
      Node& node = add_node();
      const WeightLoading loading(dtypes.empty() ? dtype : dtypes.at(i));
      auto blocks = std::make_shared<const BlockStack>(BlockStack::load(checkpoint_, config_, first, last, loading));
      BlockHostOptions options;
      options.numerics = describe_numerics(loading, "cpu");
      auto host = std::make_unique<BlockHost>(blocks, options);
      block_hosts_.push_back(host.get());
      hosts.push_back(RouteHop{node.system->adopt_with_id(kBlockHostActorId, std::move(host)), first, last,
                               options.numerics});
    }
    auto planner = std::make_unique<test::FixedRoutes>(hosts);
    planner_ = planner.get();
    ClientDriverOptions options;
    options.num_blocks = config_.num_layers;
    options.timeout = kTimeout;
    options.push = push;
    options.wire_compression = false;
    driver_ = add_client_driver(*nodes_[client_]->system, std::move(planner), options);
    for (auto& n : nodes_) EXPECT_TRUE(n->system->start().is_ok());
  }
  ~ManualSwarm() {
    for (auto& n : nodes_) n->system->stop();
  }

  static std::filesystem::path model() { return test::models_dir() / "stories260K"; }
  const ModelConfig& config() const { return config_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  FaultyTransport& faults(PeerId peer) { return *nodes_.at(peer)->faults; }
  ActorSystem& system(PeerId peer) { return *nodes_.at(peer)->system; }
  ActorRef<ClientDriverProtocol> driver() const { return driver_; }
  void kill(PeerId peer) { net_->kill(peer); }
  /// Host `peer` serves blocks [first, last) from now on, and the planner knows it, as when the
  /// balancer moves a host.
  void move(PeerId peer, std::int64_t first, std::int64_t last) {
    block_hosts_.at(peer - 1)->set_blocks(
        std::make_shared<const BlockStack>(BlockStack::load(checkpoint_, config_, first, last, DType::kF32)), 0);
    planner_->move(peer, first, last);
  }
  /// Moves the virtual clock (nothing runs meanwhile).
  void advance(std::chrono::milliseconds by) { scheduler_.advance(by); }
  const test::FixedRoutes& planner() const { return *planner_; }
  /// Called after every task the scheduler runs, with the frames sent by it.
  std::function<void(const std::vector<DeterministicNetwork::Sent>&)> on_sent;

  /// Asks the driver and runs the world until it answers: tasks first, then the virtual clock,
  /// 100 ms at a time (up to a virtual minute).
  template <typename M>
  Result<typename M::Reply> call(const M& message) {
    return std::move(call_all(std::vector<M>{message}).front());
  }
  /// Sends every message at once and runs the world until all are answered; answers in order.
  template <typename M>
  std::vector<Result<typename M::Reply>> call_all(const std::vector<M>& messages) {
    std::vector<std::optional<Result<typename M::Reply>>> answers(messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i) {
      nodes_[client_]->system->request(driver_, messages[i], std::chrono::hours(1),
                                       [&answers, i](Result<typename M::Reply> r) { answers[i] = std::move(r); });
    }
    const auto all = [&] { return std::all_of(answers.begin(), answers.end(), [](const auto& a) { return a.has_value(); }); };
    for (int idle = 0; !all() && idle < 600;) {
      if (scheduler_.run_one()) {
        idle = 0;
        auto sent = net_->take_log();
        if (on_sent && !sent.empty()) on_sent(sent);
      } else {
        scheduler_.advance(100ms);
        ++idle;
      }
    }
    std::vector<Result<typename M::Reply>> out;
    for (auto& a : answers) {
      out.push_back(a ? std::move(*a) : error(StatusCode::kTimeout, "the driver did not answer within a virtual minute"));
    }
    return out;
  }

 private:
  struct Node {
    FaultyTransport* faults = nullptr;
    std::unique_ptr<Transport> transport;
    std::unique_ptr<ActorSystem> system;
  };
  Node& add_node() {
    auto node = std::make_unique<Node>();
    auto faulty = std::make_unique<FaultyTransport>(net_->endpoint());
    node->faults = faulty.get();
    node->transport = std::move(faulty);
    node->system = std::make_unique<ActorSystem>(*node->transport, scheduler_);
    nodes_.push_back(std::move(node));
    return *nodes_.back();
  }

  ModelConfig config_;
  Checkpoint checkpoint_;
  ManualScheduler scheduler_;
  std::shared_ptr<DeterministicNetwork> net_;
  std::vector<std::unique_ptr<Node>> nodes_;
  PeerId client_ = 0;
  test::FixedRoutes* planner_ = nullptr;
  std::vector<BlockHost*> block_hosts_;  // host peer p is block_hosts_[p - 1]; owned by its system
  ActorRef<ClientDriverProtocol> driver_;
};

// A session of the driver as the generation loop's pipeline, driven through ManualSwarm::call.
class ManualSession final : public BlockPipeline {
 public:
  ManualSession(ManualSwarm& swarm, std::int64_t capacity) : swarm_(swarm) {
    auto opened = swarm_.call(OpenInference{capacity, {}, 0, {}});
    if (!opened.is_ok()) throw std::runtime_error(opened.status().to_string());
    id_ = opened->session;
    hidden_size_ = opened->hidden_size;
  }
  void forward(float* hidden, std::int64_t n) override { step(hidden, n, {}); }
  bool runs_trees() const override { return true; }
  void forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents) override {
    step(hidden, n, std::vector<std::int32_t>(parents.begin(), parents.end()));
  }
  void keep_path(std::span<const std::int32_t> path) override {
    keep_.assign(path.begin(), path.end());
    length_ += static_cast<std::int64_t>(path.size());
  }
  void step(float* hidden, std::int64_t n, std::vector<std::int32_t> parents) {
    const auto count = static_cast<std::size_t>(n * hidden_size_);
    auto out = swarm_.call(InferenceStep{id_, TensorPayload::copy_of(ElementType::kF32, {n, hidden_size_}, hidden, count),
                                         std::move(parents), std::exchange(keep_, {})});
    if (!out.is_ok()) throw std::runtime_error(out.status().to_string());
    auto values = decode_hidden(out->hidden, hidden_size_);
    ASSERT_TRUE(values.is_ok());
    std::memcpy(hidden, values->data(), count * sizeof(float));
    length_ = out->length;
  }
  std::int64_t length() const override { return length_; }
  InferenceReport report() {
    auto r = swarm_.call(DescribeInference{id_});
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? r.value() : InferenceReport{};
  }
  std::uint64_t id() const { return id_; }

 private:
  ManualSwarm& swarm_;
  std::uint64_t id_ = 0;
  std::int64_t hidden_size_ = 0;
  std::int64_t length_ = 0;
  std::vector<std::int32_t> keep_;
};

GenerationRequest reference_request() {
  const auto ref = test::greedy_reference("stories260K");
  GenerationRequest request;
  request.prompt_ids = ref.prompt_ids;
  request.max_new_tokens = ref.max_new_tokens;
  return request;
}

struct Generated {
  std::vector<std::int32_t> ids;
  InferenceReport report;
  bool speculative = false;
  std::vector<std::int64_t> tokens_per_step;
};

// Generates the reference, by decoding or (`speculative`) by token trees of up to 8 nodes that
// the model's first 2 blocks draft; `between_steps` runs after each token with its count.
Generated generate_reference(ManualSwarm& swarm, const std::function<void(std::size_t, ManualSession&)>& between_steps = nullptr,
                             bool speculative = false) {
  const ModelEnds ends = ModelEnds::load(swarm.checkpoint(), swarm.config(), DType::kF32);
  const GenerationRequest request = reference_request();
  const std::int64_t capacity = session_capacity(swarm.config(), request);
  ManualSession session(swarm, capacity);
  const BlockStack draft_blocks = BlockStack::load(swarm.checkpoint(), swarm.config(), 0, 2, DType::kF32);
  ModelDraft draft(draft_blocks, 2, ends, capacity);
  const Speculation speculation{&draft, 8, {}};
  std::size_t tokens = 0;
  Generated run;
  const GenerationResult result = generate(ends, session, request, [&](std::int32_t) {
    if (between_steps) between_steps(++tokens, session);
  }, speculative ? &speculation : nullptr);
  run.ids = result.generated_ids;
  run.tokens_per_step = result.tokens_per_step;
  run.speculative = speculative;
  run.report = session.report();
  return run;
}

bool on_route(const InferenceReport& report, PeerId peer) {
  for (const auto& hop : report.route) {
    if (hop.host == peer) return true;
  }
  return false;
}

// Checks the text and the driver's state after one failover away from `gone`.
void expect_recovered(const Generated& run, PeerId gone) {
  const auto ref = test::greedy_reference("stories260K");
  EXPECT_EQ(run.ids, ref.generated_ids);
  EXPECT_EQ(run.report.failovers, 1);
  EXPECT_FALSE(on_route(run.report, gone)) << "the route still uses host " << gone;
  const auto decoded = static_cast<std::int64_t>(ref.prompt_ids.size() + ref.generated_ids.size()) - 1;
  if (run.speculative) {
    // The last tree's accepted path is never kept (generation ended in that step).
    EXPECT_LE(run.report.length, decoded);
    EXPECT_GE(run.report.length, decoded - 8);
    EXPECT_GT(run.tokens_per_step.size(), 2u) << "no tree step yielded more than one token";
  } else {
    EXPECT_EQ(run.report.length, decoded);
  }
  ASSERT_EQ(run.report.route.size(), 2u);
  EXPECT_EQ(run.report.route[0].last, run.report.route[1].first);
}

// Push or relay; decoding or speculation.
class DriverFaults : public ::testing::TestWithParam<std::tuple<bool, bool>> {
 protected:
  bool push() const { return std::get<0>(GetParam()); }
  bool speculative() const { return std::get<1>(GetParam()); }
};

TEST_P(DriverFaults, NoFaultGivesTheReference) {
  ManualSwarm swarm(push());
  const Generated run = generate_reference(swarm, nullptr, speculative());
  EXPECT_EQ(run.ids, test::greedy_reference("stories260K").generated_ids);
  EXPECT_EQ(run.report.failovers, 0);
  EXPECT_EQ(run.report.push, push());
}

TEST_P(DriverFaults, AHostKilledAsThePromptReachesItIsReplaced) {
  ManualSwarm swarm(push());
  PeerId killed = 0;
  // The first step's frame to the route's second host (a Step in relay, a forwarded PushStep in
  // push): that host dies before it reads it, with the first hop's cache already built.
  swarm.on_sent = [&](const std::vector<DeterministicNetwork::Sent>& sent) {
    for (const auto& f : sent) {
      const bool step = f.envelope.type_id == Step::kTypeId || f.envelope.type_id == PushStep::kTypeId;
      if (!killed && step && f.to != 0 && f.to != 1 && f.to != 3) {
        killed = f.to;
        swarm.kill(killed);
      }
    }
  };
  const Generated run = generate_reference(swarm, nullptr, speculative());
  ASSERT_NE(killed, 0u);
  expect_recovered(run, killed);
}

TEST_P(DriverFaults, AHostKilledBetweenStepsIsReplacedAndItsCacheReplayed) {
  ManualSwarm swarm(push());
  PeerId killed = 0;
  const Generated run = generate_reference(swarm, [&](std::size_t tokens, ManualSession& session) {
    if (tokens == 7) {
      killed = session.report().route.front().host;
      swarm.kill(killed);
    }
  }, speculative());
  expect_recovered(run, killed);
}

TEST_P(DriverFaults, AStragglerIsTimedOutAndRoutedAround) {
  ManualSwarm swarm(push());
  PeerId slow = 0;
  // From token 5 on, the route's last host gets nothing the client sends (it lives on, silent
  // to this client): the driver's request (or the push) times out after 2 virtual seconds.
  const Generated run = generate_reference(swarm, [&](std::size_t tokens, ManualSession& session) {
    if (tokens == 5) {
      slow = session.report().route.back().host;
      swarm.faults(0).partition(slow);
    }
  }, speculative());
  expect_recovered(run, slow);
  EXPECT_TRUE(swarm.planner().failed().count(slow));
}

TEST_P(DriverFaults, ALostReplyIsRecoveredFrom) {
  ManualSwarm swarm(push());
  PeerId lossy = 0;
  // The route's last host loses its next frame to the client after token 9. In relay that is a
  // step's reply: the request times out, and the hop moves to the replica, rebuilt by replay. In
  // push it is the pushed output: the push times out, and the driver relays that hop again after
  // a rollback, on the same host, which still answers.
  const Generated run = generate_reference(swarm, [&](std::size_t tokens, ManualSession& session) {
    if (tokens == 9) {
      lossy = session.report().route.back().host;
      swarm.faults(lossy).drop_next(0, 1);
    }
  }, speculative());
  if (!push()) return expect_recovered(run, lossy);
  EXPECT_EQ(run.ids, test::greedy_reference("stories260K").generated_ids);
  EXPECT_EQ(run.report.failovers, 0);
  EXPECT_TRUE(on_route(run.report, lossy));
}

TEST_P(DriverFaults, AHostThatMovedToOtherBlocksIsLeftWithoutCountingItAsFailed) {
  ManualSwarm swarm(push());
  PeerId moved = 0;
  // After token 6 the balancer moves the route's first host from [0, 2) to [2, 5): it ends its
  // sessions and says so at the next step. Its blocks go to the replica, and the host, which
  // answered, is not avoided as a failed one.
  const Generated run = generate_reference(swarm, [&](std::size_t tokens, ManualSession& session) {
    if (tokens == 6) {
      moved = session.report().route.front().host;
      swarm.move(moved, 2, 5);
    }
  }, speculative());
  expect_recovered(run, moved);
  EXPECT_FALSE(swarm.planner().failed().count(moved));
}

TEST(DriverPush, AHostKilledInTheMiddleOfAPushIsReplaced) {
 for (const bool speculative : {false, true}) {
  SCOPED_TRACE(speculative ? "speculative" : "decoding");
  ManualSwarm swarm(/*push=*/true);
  PeerId killed = 0;
  int pushes_seen = 0;
  // The third pushed step: its first host forwards to the second, which dies as the frame
  // arrives; the driver has the first hop's output already and relays on from the replica.
  swarm.on_sent = [&](const std::vector<DeterministicNetwork::Sent>& sent) {
    for (const auto& f : sent) {
      if (killed || f.envelope.type_id != PushStep::kTypeId || f.from == 0) continue;
      if (++pushes_seen == 3) {
        killed = f.to;
        swarm.kill(killed);
      }
    }
  };
  const Generated run = generate_reference(swarm, nullptr, speculative);
  ASSERT_NE(killed, 0u);
  expect_recovered(run, killed);
 }
}

TEST(DriverSessions, InterleavedSessionsAreIndependent) {
  ManualSwarm swarm(/*push=*/true);
  const ModelEnds ends = ModelEnds::load(swarm.checkpoint(), swarm.config(), DType::kF32);
  const GenerationRequest request = reference_request();
  const std::int64_t capacity = session_capacity(swarm.config(), request);
  // Three sessions, stepped in turn one token each: the ids differ, each text is the reference.
  std::vector<std::unique_ptr<ManualSession>> sessions;
  for (int i = 0; i < 3; ++i) sessions.push_back(std::make_unique<ManualSession>(swarm, capacity));
  EXPECT_NE(sessions[0]->id(), sessions[1]->id());
  std::vector<std::vector<float>> hidden(3);
  std::vector<std::vector<std::int32_t>> ids(3, request.prompt_ids);
  const std::int64_t h = swarm.config().hidden_size;
  std::vector<float> logits(static_cast<std::size_t>(swarm.config().vocab_size));
  const auto ref = test::greedy_reference("stories260K");
  for (std::size_t t = 0; t < ref.generated_ids.size(); ++t) {
    for (int i = 0; i < 3; ++i) {
      // The prompt at first, then the last token, as the generation loop feeds them.
      const std::size_t from = t == 0 ? 0 : ids[i].size() - 1;
      const auto n = static_cast<std::int64_t>(ids[i].size() - from);
      hidden[i].resize(static_cast<std::size_t>(n * h));
      ends.embed(ids[i].data() + from, n, hidden[i].data());
      sessions[i]->forward(hidden[i].data(), n);
      ends.logits(hidden[i].data() + (n - 1) * h, 1, logits.data());
      ids[i].push_back(static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    }
  }
  for (int i = 0; i < 3; ++i) {
    const std::vector<std::int32_t> generated(ids[i].begin() + static_cast<std::ptrdiff_t>(request.prompt_ids.size()), ids[i].end());
    EXPECT_EQ(generated, ref.generated_ids) << "session " << i;
  }
}

TEST(DriverSessions, BadRequestsAreRefusedAndTheSessionGoesOn) {
  ManualSwarm swarm(/*push=*/false);
  ManualSession session(swarm, 16);
  const std::int64_t h = swarm.config().hidden_size;
  std::vector<float> row(static_cast<std::size_t>(h), 0.1f);
  // A wrong width, another type, a session that does not exist, more positions than opened.
  auto wide = swarm.call(InferenceStep{session.id(), TensorPayload::copy_of(ElementType::kF32, {1, h + 1}, row.data(), row.size())});
  EXPECT_EQ(wide.status().code(), StatusCode::kInvalidArgument);
  std::vector<std::int32_t> ints(static_cast<std::size_t>(h), 1);
  auto typed = swarm.call(InferenceStep{session.id(), TensorPayload::copy_of(ElementType::kI32, {1, h}, ints.data(), ints.size())});
  EXPECT_EQ(typed.status().code(), StatusCode::kInvalidArgument);
  auto missing = swarm.call(InferenceStep{999, TensorPayload::copy_of(ElementType::kF32, {1, h}, row.data(), row.size())});
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  std::vector<float> many(static_cast<std::size_t>(17 * h), 0.1f);
  auto overfull = swarm.call(InferenceStep{session.id(), TensorPayload::copy_of(ElementType::kF32, {17, h}, many.data(), many.size())});
  EXPECT_EQ(overfull.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(swarm.call(OpenInference{0, {}, 0}).status().code(), StatusCode::kInvalidArgument);
  // Token-tree fields that do not fit: a path kept with no tree held, parents that are not a
  // tree, a count of parents other than the rows.
  std::vector<float> rows(static_cast<std::size_t>(3 * h), 0.1f);
  auto three = [&] { return TensorPayload::copy_of(ElementType::kF32, {3, h}, rows.data(), rows.size()); };
  auto no_tree = swarm.call(InferenceStep{session.id(), three(), {}, {0}});
  EXPECT_EQ(no_tree.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(no_tree.status().message().find("holds no token tree"), std::string::npos) << no_tree.status().message();
  EXPECT_EQ(swarm.call(InferenceStep{session.id(), three(), {-1, 2, 0}, {}}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(swarm.call(InferenceStep{session.id(), three(), {-1, 0}, {}}).status().code(), StatusCode::kInvalidArgument);
  // A tree runs; a path that is not one of it is refused; the tree is still held for a good one.
  ASSERT_TRUE(swarm.call(InferenceStep{session.id(), three(), {-1, 0, 0}, {}}).is_ok());
  EXPECT_EQ(swarm.call(InferenceStep{session.id(), three(), {}, {0, 1, 2}}).status().code(), StatusCode::kInvalidArgument);
  auto kept = swarm.call(InferenceStep{session.id(), three(), {}, {0, 2}});
  ASSERT_TRUE(kept.is_ok()) << kept.status().to_string();
  EXPECT_EQ(kept->length, 5);  // 2 kept, then 3 positions
  // The session still steps.
  session.forward(row.data(), 1);
  EXPECT_EQ(session.length(), 6);
  auto closed = swarm.call(CloseInference{session.id()});
  EXPECT_TRUE(closed.is_ok());
  EXPECT_EQ(swarm.call(DescribeInference{session.id()}).status().code(), StatusCode::kNotFound);
}

TEST(DriverSessions, WithNoHostLeftTheStepFailsWithOneLineNamingTheBlocks) {
  ManualSwarm swarm(/*push=*/false);
  ManualSession session(swarm, 16);
  const std::int64_t h = swarm.config().hidden_size;
  std::vector<float> row(static_cast<std::size_t>(h), 0.1f);
  session.forward(row.data(), 1);
  for (PeerId host : {2u, 4u}) swarm.kill(host);  // both hosts of [2, 5)
  auto step = swarm.call(InferenceStep{session.id(), TensorPayload::copy_of(ElementType::kF32, {1, h}, row.data(), row.size())});
  ASSERT_FALSE(step.is_ok());
  EXPECT_NE(step.status().message().find("blocks [2, 5) have no host left"), std::string::npos) << step.status().message();
  EXPECT_EQ(step.status().message().find('\n'), std::string::npos);
}

TEST(DriverTrust, OnlyItsOwnProcessAsksAndOnlyTheRouteItsHostsPush) {
  ManualSwarm swarm(/*push=*/true);
  // A host asks the client's driver for a session: refused.
  std::optional<Result<InferenceOpened>> answer;
  swarm.system(3).request(swarm.driver(), OpenInference{16, {}, 0}, 10s, [&](Result<InferenceOpened> r) { answer = r; });
  for (int i = 0; i < 10 && !answer; ++i) (void)swarm.call(DescribeInference{12345});  // runs the world
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status().code(), StatusCode::kRefused);
  // Host 3 is not on the route (1 -> 2): while the session runs, it pushes forged outputs for
  // every attempt tag the driver could be at, for both hops. None is taken: the text is the
  // reference and no failover happened.
  const std::int64_t h = swarm.config().hidden_size;
  std::vector<float> junk(static_cast<std::size_t>(h), 7.0f);
  int forged = 0;
  swarm.on_sent = [&](const std::vector<DeterministicNetwork::Sent>& sent) {
    for (const auto& f : sent) {
      if (f.envelope.type_id != PushStep::kTypeId || f.from != 0 || forged > 2000) continue;
      for (std::uint64_t tag = 1; tag <= 60; ++tag) {
        for (std::int64_t hop : {0, 1}) {
          PushedOutput out{1, tag, hop, 3, 0, "", TensorPayload::copy_of(ElementType::kF32, {1, h}, junk.data(), junk.size())};
          (void)swarm.system(3).send(ActorRef<ClientDriverProtocol>{{0, kClientDriverActorId}}, out);
          ++forged;
        }
      }
    }
  };
  const Generated run = generate_reference(swarm);
  EXPECT_GT(forged, 0);
  EXPECT_EQ(run.ids, test::greedy_reference("stories260K").generated_ids);
  EXPECT_EQ(run.report.failovers, 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, DriverFaults, ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "push" : "relay") +
                                  (std::get<1>(info.param) ? "_speculative" : "");
                         });


// ---- training passes ----

// A 3-host pipeline of stories260K with a replica of every hop.
std::vector<std::pair<int, int>> three_hops() { return {{0, 1}, {1, 3}, {3, 5}, {0, 1}, {1, 3}, {3, 5}}; }

SwarmTrainingBlocks manual_blocks(ManualSwarm& swarm) {
  return SwarmTrainingBlocks([&swarm](std::vector<TrainingPass> passes) { return swarm.call_all(passes); },
                             swarm.config());
}

struct TrainingCase {
  ModelEnds ends;
  std::vector<Example> examples;
  std::vector<const Example*> batch;
  PromptParameters params;
};
TrainingCase training_case(const ManualSwarm& swarm) {
  TrainingCase c{ModelEnds::load(swarm.checkpoint(), swarm.config(), DType::kF32), {}, {}, {}};
  const auto tokenizer = load_tokenizer(ManualSwarm::model());
  test::TempDir dir;
  test::write_file(dir / "d.jsonl",
                   "{\"text\": \"Once upon a time there was a cat.\"}\n"
                   "{\"prompt\": \"Lily went out.\", \"completion\": \" She saw a big tree.\"}\n"
                   "{\"text\": \"The sun was hot.\"}\n");
  c.examples = read_examples(dir / "d.jsonl", *tokenizer, swarm.config(), 64);
  for (const Example& e : c.examples) c.batch.push_back(&e);
  c.params = initial_prompt_parameters(TuningMethod::kDeepPtune, 3, c.ends, 4);
  for (std::size_t i = 0; i < c.params.deep.size(); ++i) c.params.deep[i] = 0.05f * std::sin(0.7f * static_cast<float>(i));
  return c;
}

BatchGradient local_gradient(const ManualSwarm& swarm, const TrainingCase& c) {
  const BlockStack all = BlockStack::load(swarm.checkpoint(), swarm.config(), 0, swarm.config().num_layers, DType::kF32);
  LocalTrainingBlocks local(all);
  return batch_gradient(c.ends, local, c.params, c.batch, 2);
}

TEST(DriverTraining, ThreeHostGradientsAreOneProcessGradientsAndMatchFiniteDifferences) {
  ManualSwarm swarm(false, three_hops());
  const TrainingCase c = training_case(swarm);
  SwarmTrainingBlocks blocks = manual_blocks(swarm);
  const BatchGradient remote = batch_gradient(c.ends, blocks, c.params, c.batch, 2);  // two micro-batches
  EXPECT_EQ(blocks.hops(), 2 * 3 * 2);  // 2 micro-batches, forward and backward, 3 hops each
  EXPECT_EQ(blocks.failovers(), 0);
  const BatchGradient local = local_gradient(swarm, c);
  EXPECT_EQ(remote.loss_sum, local.loss_sum);
  EXPECT_EQ(remote.grad, local.grad);  // f32 on the wire: bit for bit
  // The soft and deep prompts' gradients against float64 finite differences of the whole model.
  test::expect_prompt_gradient(ManualSwarm::model(), build_batch(c.ends, c.batch, &c.params), c.params, remote.grad, 70);
}

// Adapters through 3 hosts (each hop holds its blocks' slice): LoRA and PEQA gradients are one
// process's, bit for bit (the local ones are checked against float64 central differences in
// tests/model/adapters_test.cc).
TEST(DriverTraining, AdapterGradientsThroughThreeHostsAreOneProcessGradients) {
  for (const AdapterMethod method : {AdapterMethod::kLora, AdapterMethod::kPeqa}) {
    const DType dtype = method == AdapterMethod::kPeqa ? DType::kI8 : DType::kF32;
    ManualSwarm swarm(false, three_hops(), dtype);
    TrainingCase c = training_case(swarm);
    const AdapterShape shape{method, method == AdapterMethod::kLora ? 2 : 0, 4.0,
                             method == AdapterMethod::kLora ? std::vector<Projection>{Projection::kQ, Projection::kV, Projection::kDown}
                                                            : std::vector<Projection>{Projection::kQ, Projection::kK, Projection::kV,
                                                                                      Projection::kO, Projection::kGate,
                                                                                      Projection::kUp, Projection::kDown}};
    c.params = initial_adapter_parameters(shape, swarm.config(), 5);
    for (std::size_t i = 0; i < c.params.adapter.size(); ++i) c.params.adapter[i] += 0.05f * std::sin(0.3f * static_cast<float>(i));
    SwarmTrainingBlocks blocks = manual_blocks(swarm);
    const BatchGradient remote = batch_gradient(c.ends, blocks, c.params, c.batch, 2);
    const BlockStack all = BlockStack::load(swarm.checkpoint(), swarm.config(), 0, swarm.config().num_layers, dtype);
    LocalTrainingBlocks local_blocks(all);
    const BatchGradient local = batch_gradient(c.ends, local_blocks, c.params, c.batch, 2);
    EXPECT_EQ(remote.loss_sum, local.loss_sum);
    ASSERT_EQ(remote.grad.size(), c.params.adapter.size());
    EXPECT_EQ(remote.grad, local.grad) << (method == AdapterMethod::kLora ? "lora" : "peqa");
  }
}

// Hosts keep a training run's adapters between passes: each host gets them once for each new
// value (the first micro-batch of a step), not with every micro-batch; a host that let them go
// (idle past its timeout) answers so, and gets them again. The gradients never change.
TEST(DriverTraining, HostsKeepTrainingAdaptersBetweenPasses) {
  ManualSwarm swarm(false, three_hops());
  TrainingCase c = training_case(swarm);
  const AdapterShape shape{AdapterMethod::kLora, 2, 4.0, {Projection::kQ, Projection::kV}};
  c.params = initial_adapter_parameters(shape, swarm.config(), 5);
  for (std::size_t i = 0; i < c.params.adapter.size(); ++i) c.params.adapter[i] += 0.05f * std::sin(0.3f * static_cast<float>(i));
  const std::int64_t adapter_bytes = static_cast<std::int64_t>(c.params.adapter.size() * sizeof(float));
  SwarmTrainingBlocks blocks = manual_blocks(swarm);
  // The tensor bytes of one step of two micro-batches, its gradients checked against one process's.
  const auto step = [&] {
    const std::int64_t before = blocks.tensor_bytes();
    const BatchGradient remote = batch_gradient(c.ends, blocks, c.params, c.batch, 2);
    const BatchGradient local = local_gradient(swarm, c);
    EXPECT_EQ(remote.loss_sum, local.loss_sum);
    EXPECT_EQ(remote.grad, local.grad);
    return blocks.tensor_bytes() - before;
  };
  const std::int64_t first = step(), kept = step();
  EXPECT_EQ(first - kept, adapter_bytes);  // once through the hosts, then never again while unchanged
  EXPECT_EQ(blocks.failovers(), 0);
  c.params.adapter[3] += 0.01f;  // an optimizer step
  EXPECT_EQ(step() - kept, adapter_bytes);
  swarm.advance(std::chrono::minutes(6));  // past the hosts' idle timeout
  EXPECT_GE(step() - kept, adapter_bytes);  // plus the refused requests' hidden states
  EXPECT_EQ(blocks.failovers(), 0);
  EXPECT_EQ(step() - kept, 0);
}

// Training passes through `swarm` (the client's f32 gradient of training_case), killing the host
// of the first `killed_message` that `kill` picks: the driver recomputes the pass on a replica,
// and the gradients must be one process's. Returns the hosts the client sent passes to.
std::set<PeerId> expect_recomputed(ManualSwarm& swarm, std::uint16_t killed_message,
                                   const std::function<bool(const DeterministicNetwork::Sent&)>& kill) {
  const TrainingCase c = training_case(swarm);
  PeerId killed = 0;
  std::set<PeerId> asked;
  swarm.on_sent = [&](const std::vector<DeterministicNetwork::Sent>& sent) {
    for (const auto& f : sent) {
      if (f.from != 0 || (f.envelope.type_id != TrainForward::kTypeId && f.envelope.type_id != TrainBackward::kTypeId)) {
        continue;
      }
      asked.insert(f.to);
      if (!killed && f.envelope.type_id == killed_message && kill(f)) {
        killed = f.to;
        swarm.kill(killed);
      }
    }
  };
  SwarmTrainingBlocks blocks = manual_blocks(swarm);
  const BatchGradient remote = batch_gradient(c.ends, blocks, c.params, c.batch, 2);
  EXPECT_NE(killed, 0u);
  EXPECT_GE(blocks.failovers(), 1);
  EXPECT_TRUE(swarm.planner().failed().count(killed));
  const BatchGradient local = local_gradient(swarm, c);
  EXPECT_EQ(remote.loss_sum, local.loss_sum);
  EXPECT_EQ(remote.grad, local.grad);
  return asked;
}

// A host killed as the `nth` pass of `killed_message` reaches it, with a replica of every hop.
void expect_recomputed(std::uint16_t killed_message, int nth) {
  ManualSwarm swarm(false, three_hops());
  int seen = 0;
  expect_recomputed(swarm, killed_message, [&](const DeterministicNetwork::Sent&) { return ++seen == nth; });
}

// With a bf16 replica of the last hop that the plan would take first (the lower peer id), the
// route's f32 host of the last hop killed: the replacement is the f32 replica, the failed host's
// numerics, so the gradients are still one process's. (Taking the bf16 host changes them.)
void expect_recomputed_alike(std::uint16_t killed_message) {
  ManualSwarm swarm(false, {{0, 1}, {1, 3}, {3, 5}, {3, 5}, {3, 5}}, DType::kF32,
                    {DType::kF32, DType::kF32, DType::kF32, DType::kBF16, DType::kF32});
  const std::set<PeerId> asked =
      expect_recomputed(swarm, killed_message, [](const DeterministicNetwork::Sent& f) { return f.to == 3; });
  EXPECT_FALSE(asked.count(4)) << "the bf16 replica was used";
  EXPECT_TRUE(asked.count(5));
}

TEST(DriverTraining, AHostKilledInTheForwardIsReplacedByAReplicaOfItsNumerics) {
  expect_recomputed_alike(TrainForward::kTypeId);
}

TEST(DriverTraining, AHostKilledInTheBackwardIsReplacedByAReplicaOfItsNumerics) {
  expect_recomputed_alike(TrainBackward::kTypeId);
}

TEST(DriverTraining, AHostKilledInTheForwardIsReplacedAndTheGradientsDoNotChange) {
  expect_recomputed(TrainForward::kTypeId, 2);  // the second hop of the first micro-batch
}

TEST(DriverTraining, AHostKilledInTheBackwardIsReplacedAndTheGradientsDoNotChange) {
  expect_recomputed(TrainBackward::kTypeId, 1);  // the last hop, first in the backward
}

TEST(DriverTraining, BadPassesAreRefused) {
  ManualSwarm swarm(false, three_hops());
  const std::int64_t h = swarm.config().hidden_size;
  std::vector<float> x(static_cast<std::size_t>(4 * h), 0.1f);
  const auto rows = [&](std::int64_t n) {
    return TensorPayload::copy_of(ElementType::kF32, {n, h}, x.data(), static_cast<std::size_t>(n * h));
  };
  const auto expect_code = [](const Result<TrainingPassDone>& r, StatusCode code, const std::string& needle) {
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), code) << r.status().to_string();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  };
  expect_code(swarm.call(TrainingPass{1, true, false, {}, rows(4), {}, 0}), StatusCode::kNotFound, "no kept forward");
  expect_code(swarm.call(TrainingPass{1, false, true, {3}, rows(4), {}, 0}), StatusCode::kInvalidArgument,
              "takes f32 [3, 64]");
  expect_code(swarm.call(TrainingPass{1, false, true, {}, rows(0), {}, 0}), StatusCode::kInvalidArgument,
              "at least one sequence");
  expect_code(swarm.call(TrainingPass{1, false, true, {4}, rows(4), rows(2), 0}), StatusCode::kInvalidArgument,
              "deep prompts must be f32 [5, count, 64]");
  ASSERT_TRUE(swarm.call(TrainingPass{1, false, true, {4}, rows(4), {}, 0}).is_ok());
  expect_code(swarm.call(TrainingPass{1, false, true, {4}, rows(4), {}, 0}), StatusCode::kInvalidArgument,
              "kept already");
  // A backward with the wrong gradient shape keeps the forward for a correct one.
  expect_code(swarm.call(TrainingPass{1, true, false, {}, rows(3), {}, 0}), StatusCode::kInvalidArgument, "[4, 64]");
  EXPECT_TRUE(swarm.call(TrainingPass{1, true, false, {}, rows(4), {}, 0}).is_ok());
}

}  // namespace
}  // namespace sepal

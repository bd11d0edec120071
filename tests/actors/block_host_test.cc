// Block hosts serving a real model: greedy generation through 1 to 5 hosts reproduces the
// reference; bad requests get error replies while the host keeps serving; rollback; idle expiry.
#include <gtest/gtest.h>

#include <atomic>

#include <cstring>

#include <nlohmann/json.hpp>

#include "actors/block_host.h"
#include "actors/hidden_codec.h"
#include "actors/push_grant.h"
#include "actors/client_driver.h"
#include "actors/blocking_facade.h"
#include "model/block_stack.h"
#include "model/synthetic_checkpoint.h"
#include "model/tokenizer.h"
#include "runtime/deterministic_transport.h"
#include "runtime/inproc_transport.h"
#include "runtime/link_auth.h"
#include "tests/actors/fixed_routes.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// A swarm in one process: a client system and one system per host, over in-process transports.
class LocalSwarm {
 public:
  /// With `backend`, every host's blocks are placed on it (BlockStack::place_on).
  LocalSwarm(const std::filesystem::path& model, const std::vector<std::pair<int, int>>& ranges,
             BlockHostOptions options = {}, std::shared_ptr<Backend> backend = nullptr,
             const WeightLoading& loading = DType::kF32)
      : config_(read_model_config(model)), checkpoint_(Checkpoint::open(model)) {
    hub_ = InprocHub::create();
    transports_.push_back(hub_->endpoint());
    systems_.push_back(std::make_unique<ActorSystem>(*transports_.back(), scheduler_));
    for (const auto& [first, last] : ranges) {
      transports_.push_back(hub_->endpoint());
      systems_.push_back(std::make_unique<ActorSystem>(*transports_.back(), scheduler_));
      BlockStack stack = BlockStack::load(checkpoint_, config_, first, last, loading);
      if (backend) stack.place_on(backend);
      auto blocks = std::make_shared<const BlockStack>(std::move(stack));
      hosts_.push_back(systems_.back()->spawn_with_id<BlockHost>(kBlockHostActorId, blocks, options));
      route_.push_back(RouteHop{hosts_.back(), first, last});
    }
    for (auto& s : systems_) EXPECT_TRUE(s->start().is_ok());
  }
  ~LocalSwarm() {
    for (auto& s : systems_) s->stop();
    scheduler_.shutdown();
  }
  ActorSystem& client() { return *systems_[0]; }
  /// The system of host i - 1 (0: the client's), to send from another process.
  ActorSystem& system(std::size_t i) { return *systems_.at(i); }
  const std::vector<RouteHop>& route() const { return route_; }
  const ModelConfig& config() const { return config_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }

 private:
  ModelConfig config_;
  Checkpoint checkpoint_;
  ThreadPoolScheduler scheduler_{2};
  std::shared_ptr<InprocHub> hub_;
  std::vector<std::unique_ptr<Transport>> transports_;
  std::vector<std::unique_ptr<ActorSystem>> systems_;
  std::vector<ActorRef<BlockHostProtocol>> hosts_;
  std::vector<RouteHop> route_;
};

// A session through the swarm's fixed route, by a driver on the client.
std::unique_ptr<DriverSession> open_session(LocalSwarm& swarm, std::int64_t capacity, bool push, bool compression) {
  ClientDriverOptions options;
  options.num_blocks = swarm.config().num_layers;
  options.push = push;
  options.wire_compression = compression;
  const auto driver = add_client_driver(swarm.client(), std::make_unique<test::FixedRoutes>(swarm.route()), options);
  auto session = DriverSession::open(swarm.client(), driver, capacity);
  EXPECT_TRUE(session.is_ok()) << session.status().to_string();
  return session.is_ok() ? std::move(session).value() : nullptr;
}
std::int64_t failovers(DriverSession& session) {
  auto report = session.report();
  return report.is_ok() ? report->failovers : -1;
}
double wire_bytes_per_token_hop(DriverSession& session) {
  auto report = session.report();
  if (!report.is_ok() || report->received_token_hops == 0) return 0;
  return static_cast<double>(report->received_bytes) / static_cast<double>(report->received_token_hops);
}

using SplitAndMode = std::tuple<std::vector<std::pair<int, int>>, bool>;
class Splits : public ::testing::TestWithParam<SplitAndMode> {};

TEST_P(Splits, GreedyGenerationMatchesTheReference) {
  const auto ref = json::parse(test::read_file(test::models_dir() / "reference" / "stories260K.greedy.json"));
  const auto model = test::models_dir() / "stories260K";
  const auto& [split, push] = GetParam();
  LocalSwarm swarm(model, split);
  const ModelEnds ends = ModelEnds::load(swarm.checkpoint(), swarm.config(), DType::kF32);
  GenerationRequest request;
  request.prompt_ids = ref["prompt_ids"].get<std::vector<std::int32_t>>();
  request.max_new_tokens = ref["max_new_tokens"].get<int>();
  // f32 hidden states: exactly the reference
  auto pipeline = open_session(swarm, session_capacity(swarm.config(), request), push, /*compression=*/false);
  ASSERT_TRUE(pipeline);
  const auto result = generate(ends, *pipeline, request, [](std::int32_t) {});
  EXPECT_EQ(result.generated_ids, ref["generated_ids"].get<std::vector<std::int32_t>>());
  EXPECT_EQ(failovers(*pipeline), 0);
}

TEST(CompressedHiddenStates, PushAndRelayAgreeAndEachHopSendsAQuarterOfTheBytes) {
  const auto model = test::models_dir() / "stories260K";
  std::vector<std::vector<std::int32_t>> runs;
  for (bool push : {false, true}) {
    LocalSwarm swarm(model, {{0, 2}, {2, 4}, {4, 5}});
    const ModelEnds ends = ModelEnds::load(swarm.checkpoint(), swarm.config(), DType::kF32);
    GenerationRequest request;
    request.prompt_ids = {1, 403, 407, 261, 378};
    request.max_new_tokens = 60;
    auto pipeline = open_session(swarm, session_capacity(swarm.config(), request), push, /*compression=*/true);
    ASSERT_TRUE(pipeline);
    runs.push_back(generate(ends, *pipeline, request, [](std::int32_t) {}).generated_ids);
    const double f32_bytes = 4.0 * static_cast<double>(swarm.config().hidden_size);
    EXPECT_LE(wire_bytes_per_token_hop(*pipeline) / f32_bytes, 0.27);
  }
  EXPECT_EQ(runs[0].size(), 60u);
  EXPECT_EQ(runs[0], runs[1]);
}

INSTANTIATE_TEST_SUITE_P(
    Hosts, Splits,
    ::testing::Combine(::testing::Values(std::vector<std::pair<int, int>>{{0, 5}},
                                         std::vector<std::pair<int, int>>{{0, 2}, {2, 5}},
                                         std::vector<std::pair<int, int>>{{0, 1}, {1, 3}, {3, 5}},
                                         std::vector<std::pair<int, int>>{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}}),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::to_string(std::get<0>(info.param).size()) + "_hosts_" + (std::get<1>(info.param) ? "push" : "relay");
    });

TensorPayload hidden_rows(std::int64_t n, std::int64_t width, float value = 0.1f) {
  std::vector<float> v(static_cast<std::size_t>(n * width), value);
  return TensorPayload::copy_of(ElementType::kF32, {n, width}, v.data(), v.size());
}

// Gives every link a key, as UCX links between admitted members have, so that the host checks
// push grants (in-process links carry none).
class KeyedTransport final : public Transport {
 public:
  explicit KeyedTransport(std::unique_ptr<Transport> inner) : inner_(std::move(inner)) {}
  PeerId self() const override { return inner_->self(); }
  std::string name() const override { return inner_->name() + "+keys"; }
  std::vector<PeerId> peers() const override { return inner_->peers(); }
  Status start(TransportHandler* handler) override { return inner_->start(handler); }
  Status send(PeerId to, OutgoingFrame frame) override { return inner_->send(to, std::move(frame)); }
  std::optional<LinkKey> link_key(PeerId) const override { return key_; }
  void stop() override { inner_->stop(); }

 private:
  std::unique_ptr<Transport> inner_;
  LinkKey key_ = random_link_key();
};

// A grant verifies for its scope and key only, and the same grant comes out however many keys
// the maker and the checker keep keyed (both drop them all past kMaxKeys).
TEST(PushGrants, AGrantCoversItsScopeAndKeyOnly) {
  const LinkKey key = random_link_key();
  PushGrantScope scope{{3, 7}, 11, 13, 17, 19, 2, PushTarget{{4, 9}, 23, {}}};
  PushGrants maker, checker;
  const auto grant = maker.make(scope, key);
  ASSERT_EQ(grant.size(), 32u);
  EXPECT_TRUE(checker.verify(grant, scope, key));
  EXPECT_FALSE(checker.verify(grant, scope, random_link_key()));
  auto shorter = grant;
  shorter.pop_back();
  EXPECT_FALSE(checker.verify(shorter, scope, key));
  EXPECT_FALSE(checker.verify({}, scope, key));
  auto flipped = grant;
  flipped[31] ^= 1;
  EXPECT_FALSE(checker.verify(flipped, scope, key));
  const std::vector<void (*)(PushGrantScope&)> changes = {
      [](PushGrantScope& s) { ++s.client.peer; },  [](PushGrantScope& s) { ++s.client.id; },
      [](PushGrantScope& s) { ++s.request; },      [](PushGrantScope& s) { ++s.session; },
      [](PushGrantScope& s) { ++s.position; },     [](PushGrantScope& s) { ++s.tag; },
      [](PushGrantScope& s) { ++s.hop; },          [](PushGrantScope& s) { s.next.reset(); },
      [](PushGrantScope& s) { ++s.next->host.peer; }, [](PushGrantScope& s) { ++s.next->host.id; },
      [](PushGrantScope& s) { ++s.next->session; }};
  for (std::size_t i = 0; i < changes.size(); ++i) {
    PushGrantScope other = scope;
    changes[i](other);
    EXPECT_FALSE(checker.verify(grant, other, key)) << "change " << i;
  }
  for (std::size_t i = 0; i < PushGrants::kMaxKeys + 3; ++i) {
    const LinkKey k = random_link_key();
    EXPECT_TRUE(checker.verify(maker.make(scope, k), scope, k));
  }
  EXPECT_EQ(maker.make(scope, key), grant);
  EXPECT_TRUE(checker.verify(grant, scope, key));
  EXPECT_EQ(PushGrants{}.make(scope, key), grant);
}

TEST(BlockHost, ClientsReachOnlyTheirOwnSessionsAndOnlyTheCoordinatorStopsTheHost) {
  const auto model = test::models_dir() / "stories260K";
  const ModelConfig config = read_model_config(model);
  const Checkpoint checkpoint = Checkpoint::open(model);
  ThreadPoolScheduler scheduler(2);
  auto hub = InprocHub::create();
  auto owner_t = hub->endpoint(), other_t = hub->endpoint(), observer_t = hub->endpoint();
  KeyedTransport host_t(hub->endpoint());
  ActorSystem owner(*owner_t, scheduler), other(*other_t, scheduler), observer(*observer_t, scheduler),
      host_system(host_t, scheduler);
  std::atomic<int> shutdowns{0};
  BlockHostOptions options;
  options.coordinator = owner.self();
  options.on_shutdown = [&](const std::string&) { ++shutdowns; };
  auto blocks = std::make_shared<const BlockStack>(BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32));
  const auto host = host_system.spawn_with_id<BlockHost>(kBlockHostActorId, blocks, options);
  for (ActorSystem* s : {&owner, &other, &observer, &host_system}) ASSERT_TRUE(s->start().is_ok());
  const std::int64_t h = config.hidden_size;

  ASSERT_TRUE(owner.request_sync(host, OpenSession{1, 32, 0, 0, {}, 0}, 5s).is_ok());
  ASSERT_TRUE(owner.request_sync(host, Step{1, 0, hidden_rows(3, h)}, 5s).is_ok());
  // Another client naming session 1 reaches nothing of the owner's: its own namespace is empty.
  EXPECT_EQ(other.request_sync(host, Step{1, 3, hidden_rows(1, h)}, 5s).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(other.request_sync(host, Rollback{1, 0}, 5s).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(other.request_sync(host, CloseSession{1}, 5s).status().code(), StatusCode::kNotFound);
  // Nor can it push into the owner's session without the owner's grant for the hop.
  const ActorAddress owner_receiver{owner.self(), kClientDriverActorId};
  ASSERT_TRUE(other.send(host, PushStep{owner_receiver, 9, 1, 3, 0, 0, {}, hidden_rows(1, h), {}}).is_ok());
  ASSERT_TRUE(other.send(host, PushStep{owner_receiver, 9, 1, 3, 0, 0, {}, hidden_rows(1, h), std::vector<std::uint8_t>(32, 7)}).is_ok());
  // An observer's Shutdown is ignored; the coordinator's is obeyed.
  ASSERT_TRUE(observer.send(host, Shutdown{"forged"}).is_ok());
  ASSERT_TRUE(other.send(host, Shutdown{"forged"}).is_ok());
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(shutdowns.load(), 0);
  // The owner's session is untouched: still 3 positions long.
  auto next = owner.request_sync(host, Step{1, 3, hidden_rows(1, h)}, 5s);
  ASSERT_TRUE(next.is_ok()) << next.status().to_string();
  EXPECT_EQ(next->length, 4);
  ASSERT_TRUE(owner.send(host, Shutdown{"done"}).is_ok());
  for (int i = 0; i < 100 && shutdowns.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(shutdowns.load(), 1);
  for (ActorSystem* s : {&owner, &other, &observer, &host_system}) s->stop();
  scheduler.shutdown();
}

TEST(BlockHost, PerClientLimitsAndStepWorkingMemoryNameTheLimit) {
  BlockHostOptions options;
  options.cache_budget_bytes = 1 << 20;
  options.max_sessions_per_client = 2;
  options.max_cache_bytes_per_client = 40 << 10;  // 80 positions of stories260K's 2 blocks
  LocalSwarm swarm(test::models_dir() / "stories260K", {{0, 2}}, options);
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  auto expect_refused = [](const auto& result, const std::string& needle) {
    ASSERT_FALSE(result.is_ok()) << "accepted; expected a refusal about " << needle;
    EXPECT_EQ(result.status().code(), StatusCode::kResourceExhausted) << result.status().to_string();
    EXPECT_NE(result.status().message().find(needle), std::string::npos) << result.status().message();
  };
  ASSERT_TRUE(c.request_sync(host, OpenSession{1, 64, 0, 0, {}, 0}, 5s).is_ok());  // 32 KiB
  expect_refused(c.request_sync(host, OpenSession{2, 32, 0, 0, {}, 0}, 5s), "would pass the limit per client of 40960");
  ASSERT_TRUE(c.request_sync(host, OpenSession{3, 8, 0, 0, {}, 0}, 5s).is_ok());
  expect_refused(c.request_sync(host, OpenSession{4, 8, 0, 0, {}, 0}, 5s), "has 2 sessions open here, the limit per client");
  // A step's working memory counts in the budget: a prompt far larger than the budget allows.
  BlockHostOptions tight;
  tight.cache_budget_bytes = 64 << 10;
  tight.max_cache_bytes_per_client = 64 << 10;
  LocalSwarm small(test::models_dir() / "stories260K", {{0, 2}}, tight);
  const auto small_host = small.route()[0].host;
  expect_refused(small.client().request_sync(small_host, OpenSession{1, 64, 0, 0, {}, 0}, 5s), "of working memory");
  ASSERT_TRUE(small.client().request_sync(small_host, OpenSession{2, 4, 0, 0, {}, 0}, 5s).is_ok());
}

TEST(BlockHost, Bf16CachesFitTwiceThePositionsInTheSameLimits) {
  BlockHostOptions options;
  options.cache_budget_bytes = 1 << 20;
  options.max_sessions_per_client = 4;
  options.max_cache_bytes_per_client = 40 << 10;  // stories260K's 2 blocks: 80 positions in f32, 160 in bf16
  WeightLoading loading(DType::kF32);
  loading.kv_dtype = DType::kBF16;
  LocalSwarm swarm(test::models_dir() / "stories260K", {{0, 2}}, options, nullptr, loading);
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  ASSERT_TRUE(c.request_sync(host, OpenSession{1, 64, 0, 0, {}, 0}, 5s).is_ok());  // 16 KiB
  ASSERT_TRUE(c.request_sync(host, OpenSession{2, 64, 0, 0, {}, 0}, 5s).is_ok());  // in f32, 64 KiB in all: refused
  const auto third = c.request_sync(host, OpenSession{3, 64, 0, 0, {}, 0}, 5s);
  ASSERT_FALSE(third.is_ok());
  EXPECT_NE(third.status().message().find("holds 32768 bytes of cache here; 16384 more would pass the limit per client of 40960"),
            std::string::npos)
      << third.status().message();
  auto step = c.request_sync(host, Step{1, 0, hidden_rows(3, swarm.config().hidden_size)}, 5s);
  ASSERT_TRUE(step.is_ok()) << step.status().to_string();
  EXPECT_EQ(step->length, 3);
}

TEST(BlockHost, BadRequestsGetErrorsAndTheHostGoesOn) {
  BlockHostOptions options;
  // stories260K, 2 blocks: 2 (K, V) * 2 blocks * 4 KV heads * 8 dims * 4 B = 512 B a position; a
  // step of up to 4 tokens works in 4 * 4028 B. So 96 KiB holds two sessions of 64 positions with
  // the working memory of a step, and never one of 512.
  options.cache_budget_bytes = 96 << 10;
  options.max_cache_bytes_per_client = 96 << 10;
  options.max_step_tokens = 4;
  LocalSwarm swarm(test::models_dir() / "stories260K", {{0, 2}}, options);
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  const std::int64_t h = swarm.config().hidden_size;
  ASSERT_TRUE(c.request_sync(host, OpenSession{1, 64, 0, 0, {}, 0}, 5s).is_ok());

  auto expect_code = [](const auto& result, StatusCode code, const std::string& needle) {
    ASSERT_FALSE(result.is_ok()) << "accepted; expected " << status_code_name(code);
    EXPECT_EQ(result.status().code(), code) << result.status().to_string();
    EXPECT_NE(result.status().message().find(needle), std::string::npos) << result.status().message();
  };
  expect_code(c.request_sync(host, Step{99, 0, hidden_rows(1, h)}, 5s), StatusCode::kNotFound, "no session 99");
  expect_code(c.request_sync(host, Step{1, 0, hidden_rows(1, h + 1)}, 5s), StatusCode::kInvalidArgument, "must be [n, 64]");
  std::vector<std::int32_t> ints(static_cast<std::size_t>(h), 1);
  expect_code(c.request_sync(host, Step{1, 0, TensorPayload::copy_of(ElementType::kI32, {1, h}, ints.data(), ints.size())}, 5s),
              StatusCode::kInvalidArgument, "must be f32 or 8-bit compressed");
  // Compressed hidden states: a row of the wrong size, and scales that are NaN, inf or negative.
  const std::vector<float> row(static_cast<std::size_t>(h), 0.5f);
  const TensorPayload good = encode_hidden(row.data(), 1, h, true);
  std::vector<std::uint8_t> bytes(good.as<std::uint8_t>(), good.as<std::uint8_t>() + good.bytes);
  expect_code(c.request_sync(host, Step{1, 0, TensorPayload::copy_of(ElementType::kU8, {1, static_cast<std::int64_t>(bytes.size()) - 1},
                                                                    bytes.data(), bytes.size() - 1)}, 5s),
              StatusCode::kInvalidArgument, "must be [n, 68] bytes");
  for (float scale : {NAN, INFINITY, -1.0f}) {
    std::vector<std::uint8_t> bad = bytes;
    std::memcpy(bad.data(), &scale, 4);
    expect_code(c.request_sync(host, Step{1, 0, TensorPayload::copy_of(ElementType::kU8, {1, static_cast<std::int64_t>(bad.size())},
                                                                      bad.data(), bad.size())}, 5s),
                StatusCode::kInvalidArgument, "scale 0 of token 0");
  }
  expect_code(c.request_sync(host, Step{1, 5, hidden_rows(1, h)}, 5s), StatusCode::kInvalidArgument, "holds 0 positions");
  expect_code(c.request_sync(host, Step{1, 0, hidden_rows(5, h)}, 5s), StatusCode::kResourceExhausted, "the limit per step is 4");
  expect_code(c.request_sync(host, OpenSession{2, 100000, 0, 0, {}, 0}, 5s), StatusCode::kInvalidArgument, "max_position_embeddings");
  expect_code(c.request_sync(host, OpenSession{3, 512, 0, 0, {}, 0}, 5s), StatusCode::kResourceExhausted, "bytes of cache");
  expect_code(c.request_sync(host, OpenSession{1, 8, 0, 0, {}, 0}, 5s), StatusCode::kInvalidArgument, "already open");
  expect_code(c.request_sync(host, Rollback{1, 3}, 5s), StatusCode::kInvalidArgument, "cannot roll session 1 back to 3");
  expect_code(c.request_sync(host, OpenSession{5, 8, 1, 3, {}, 0}, 5s), StatusCode::kInvalidArgument, "not a part of the served blocks [0, 2)");

  // After all that, the session still works, and so does a second one.
  auto ok = c.request_sync(host, Step{1, 0, hidden_rows(3, h)}, 5s);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->length, 3);
  ASSERT_TRUE(c.request_sync(host, Step{1, 3, hidden_rows(1, h)}, 5s).is_ok());  // a decode step is measured
  ASSERT_TRUE(c.request_sync(host, OpenSession{4, 64, 0, 0, {}, 0}, 5s).is_ok());
  auto info = c.request_sync(host, HostInfo{}, 5s);
  ASSERT_TRUE(info.is_ok());
  EXPECT_EQ(info->sessions, 2);
  EXPECT_EQ(info->first, 0);
  EXPECT_EQ(info->last, 2);
  EXPECT_GT(info->tokens_per_second, 0.0);
}

TEST(BlockHost, RollbackRecomputesTheSameStates) {
  LocalSwarm swarm(test::models_dir() / "stories260K", {{0, 5}});
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  const std::int64_t h = swarm.config().hidden_size;
  ASSERT_TRUE(c.request_sync(host, OpenSession{7, 32, 0, 0, {}, 0}, 5s).is_ok());
  ASSERT_TRUE(c.request_sync(host, Step{7, 0, hidden_rows(4, h, 0.2f)}, 5s).is_ok());
  auto first = c.request_sync(host, Step{7, 4, hidden_rows(2, h, 0.3f)}, 5s);
  ASSERT_TRUE(first.is_ok());
  ASSERT_TRUE(c.request_sync(host, Step{7, 6, hidden_rows(1, h, -0.5f)}, 5s).is_ok());
  auto rolled = c.request_sync(host, Rollback{7, 4}, 5s);
  ASSERT_TRUE(rolled.is_ok());
  EXPECT_EQ(rolled->length, 4);
  auto again = c.request_sync(host, Step{7, 4, hidden_rows(2, h, 0.3f)}, 5s);
  ASSERT_TRUE(again.is_ok());
  ASSERT_EQ(first->hidden.bytes, again->hidden.bytes);
  EXPECT_EQ(std::memcmp(first->hidden.data, again->hidden.data, first->hidden.bytes), 0);
}

// Rows that differ from each other: row i of a step is `seed` + i/8 in every column, with a ramp.

std::vector<float> values_of(const TensorPayload& t) { return {t.as<float>(), t.as<float>() + t.elements()}; }

TensorPayload varied_rows(std::int64_t n, std::int64_t width, float seed) {
  std::vector<float> v(static_cast<std::size_t>(n * width));
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < width; ++j) v[static_cast<std::size_t>(i * width + j)] = seed + 0.125f * static_cast<float>(i) - 0.01f * static_cast<float>(j % 7);
  }
  return TensorPayload::copy_of(ElementType::kF32, {n, width}, v.data(), v.size());
}

// Row `i` of a [n, width] f32 payload.
std::vector<float> row_of(const TensorPayload& t, std::int64_t i) {
  const std::int64_t width = t.shape[1];
  return std::vector<float>(t.as<float>() + i * width, t.as<float>() + (i + 1) * width);
}

// A model whose blocks have a sliding window: a session is admitted by the cache its window
// needs (KvCache::most_bytes), not by its whole length, and served past the window with the
// states of a cache that keeps every position; a rollback behind what the window dropped is
// refused in one line, and the session goes on.
TEST(BlockHost, BlocksWithASlidingWindowAdmitSessionsByTheirWindowAndServePastIt) {
  test::TempDir dir;
  SyntheticSpec spec;
  spec.architecture = "MistralForCausalLM";
  spec.hidden_size = 64;
  spec.intermediate_size = 128;
  spec.num_layers = 2;
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.vocab_size = 300;
  spec.max_position_embeddings = 4096;
  spec.sliding_window = 8;
  write_synthetic_checkpoint(spec, dir.path());
  BlockHostOptions options;
  options.cache_budget_bytes = 512 << 10;  // 4096 positions of both blocks take 2 MiB; their windows 128 KiB
  options.max_step_tokens = 16;
  LocalSwarm swarm(dir.path(), {{0, 2}}, options);
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  const std::int64_t h = swarm.config().hidden_size;
  auto opened = c.request_sync(host, OpenSession{1, 4096, 0, 0, {}, 0}, 5s);
  ASSERT_TRUE(opened.is_ok()) << opened.status().to_string();
  const BlockStack local = BlockStack::load(swarm.checkpoint(), swarm.config(), 0, 2, DType::kF32);
  KvCache whole = local.new_cache(4096, 0, 2, KvKeep::kAll);
  std::int64_t length = 0;
  auto step = [&](std::int64_t n, float seed) {
    const TensorPayload in = varied_rows(n, h, seed);
    auto out = c.request_sync(host, Step{1, length, in}, 5s);
    ASSERT_TRUE(out.is_ok()) << out.status().to_string();
    std::vector<float> want(in.as<float>(), in.as<float>() + n * h);
    local.forward(want.data(), n, whole);
    length += n;
    ASSERT_EQ(out->length, length);
    for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(row_of(out->hidden, i), std::vector<float>(want.begin() + i * h, want.begin() + (i + 1) * h)) << "position " << length - n + i;
  };
  step(16, 0.1f);
  for (int t = 0; t < 300; ++t) step(1, 0.01f * static_cast<float>(t % 17) - 0.05f);
  const auto refused = c.request_sync(host, Rollback{1, 100}, 5s);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("cannot roll session 1 back to 100: its blocks with a sliding window keep positions from"),
            std::string::npos)
      << refused.status().message();
  step(3, 0.2f);
}

TEST(BlockHost, ATreeStepsPathIsWhatDecodingComputesAndIsKeptInPlace) {
  const auto expect_code = [](const auto& result, StatusCode code, const std::string& needle) {
    ASSERT_FALSE(result.is_ok()) << "accepted; expected " << status_code_name(code);
    EXPECT_EQ(result.status().code(), code) << result.status().to_string();
    EXPECT_NE(result.status().message().find(needle), std::string::npos) << result.status().message();
  };
  LocalSwarm swarm(test::models_dir() / "stories260K", {{0, 5}});
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  const std::int64_t h = swarm.config().hidden_size;
  // Session 1 decodes a prompt of 3, then the tree's nodes 0, 1 and 3 one by one, then one more.
  // Session 2 runs the prompt, the tree {-1, 0, 0, 1} in one step, then keeps the path 0 -> 1 -> 3
  // with the same last row in one step.
  const TensorPayload prompt = varied_rows(3, h, 0.3f), tree = varied_rows(4, h, -0.2f), last = varied_rows(1, h, 0.05f);
  for (std::uint64_t session : {1, 2}) ASSERT_TRUE(c.request_sync(host, OpenSession{session, 16, 0, 0, {}, 0}, 5s).is_ok());
  for (std::uint64_t session : {1, 2}) ASSERT_TRUE(c.request_sync(host, Step{session, 0, prompt}, 5s).is_ok());
  std::vector<std::vector<float>> decoded;
  std::int64_t position = 3;
  for (std::int64_t node : {0, 1, 3}) {
    const auto row = row_of(tree, node);
    auto out = c.request_sync(host, Step{1, position++, TensorPayload::copy_of(ElementType::kF32, {1, h}, row.data(), row.size())}, 5s);
    ASSERT_TRUE(out.is_ok()) << out.status().to_string();
    decoded.push_back(row_of(out->hidden, 0));
  }
  auto after = c.request_sync(host, Step{1, position, last}, 5s);
  ASSERT_TRUE(after.is_ok());

  const std::vector<std::int32_t> parents = {-1, 0, 0, 1};
  auto verified = c.request_sync(host, Step{2, 3, tree, 0, parents, {}}, 5s);
  ASSERT_TRUE(verified.is_ok()) << verified.status().to_string();
  EXPECT_EQ(verified->length, 3);  // a tree does not lengthen the session
  EXPECT_EQ(row_of(verified->hidden, 0), decoded[0]);
  EXPECT_EQ(row_of(verified->hidden, 1), decoded[1]);
  EXPECT_EQ(row_of(verified->hidden, 3), decoded[2]);
  // Refused, and the session stays as it was: a path that is not one, a wrong position, a
  // malformed tree.
  expect_code(c.request_sync(host, Step{2, 6, last, 0, {}, {0, 2, 3}}, 5s), StatusCode::kInvalidArgument, "not a path");
  expect_code(c.request_sync(host, Step{2, 3, last, 0, {}, {0, 1, 3}}, 5s), StatusCode::kInvalidArgument, "holds 6 positions");
  expect_code(c.request_sync(host, Step{2, 6, varied_rows(2, h, 0.f), 0, {-1, 1}, {0, 1, 3}}, 5s),
              StatusCode::kInvalidArgument, "not an earlier node");
  expect_code(c.request_sync(host, Step{2, 6, varied_rows(2, h, 0.f), 0, {-1}, {0, 1, 3}}, 5s), StatusCode::kInvalidArgument,
              "names 1 parents");
  auto kept = c.request_sync(host, Step{2, 6, last, 0, {}, {0, 1, 3}}, 5s);
  ASSERT_TRUE(kept.is_ok()) << kept.status().to_string();
  EXPECT_EQ(kept->length, 7);
  EXPECT_EQ(row_of(kept->hidden, 0), row_of(after->hidden, 0));
  // The tree is gone once a path of it is kept, and after a rollback.
  expect_code(c.request_sync(host, Step{2, 8, last, 0, {}, {0}}, 5s), StatusCode::kInvalidArgument, "holds no token tree");
  ASSERT_TRUE(c.request_sync(host, Step{2, 7, tree, 0, parents, {}}, 5s).is_ok());
  ASSERT_TRUE(c.request_sync(host, Rollback{2, 7}, 5s).is_ok());
  expect_code(c.request_sync(host, Step{2, 8, last, 0, {}, {0}}, 5s), StatusCode::kInvalidArgument, "holds no token tree");
}

TEST(BlockHost, SessionsWithDifferentAdaptersEachGetTheirOwnStates) {
  // Blocks [1, 4) of stories260K on one host; sessions with LoRA adapters A and B and one without
  // interleave their steps: each gets what the blocks give locally with its own adapter.
  LocalSwarm swarm(test::models_dir() / "stories260K", {{1, 4}});
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  const ModelConfig& config = swarm.config();
  const std::int64_t h = config.hidden_size;
  const AdapterShape shape{AdapterMethod::kLora, 2, 3.0, {Projection::kQ, Projection::kV, Projection::kUp}};
  const std::int64_t per_block = shape.values_per_block(config);
  std::vector<std::vector<float>> values = {test::random_floats(static_cast<std::size_t>(3 * per_block), 91, 0.3f),
                                            test::random_floats(static_cast<std::size_t>(3 * per_block), 92, 0.3f)};
  auto payload = [&](const std::vector<float>& v) {
    AdapterPayload p{1, shape.rank, shape.alpha, {0, 2, 5}, TensorPayload::copy_of(ElementType::kF32, {3, per_block}, v.data(), v.size())};
    return p;
  };
  ASSERT_TRUE(c.request_sync(host, OpenSession{1, 16, 1, 4, {}, 0, payload(values[0])}, 5s).is_ok());
  ASSERT_TRUE(c.request_sync(host, OpenSession{2, 16, 1, 4, {}, 0, payload(values[1])}, 5s).is_ok());
  ASSERT_TRUE(c.request_sync(host, OpenSession{3, 16, 1, 4, {}, 0}, 5s).is_ok());
  const BlockStack local = BlockStack::load(swarm.checkpoint(), config, 1, 4, DType::kF32);
  std::vector<KvCache> caches;
  for (int i = 0; i < 3; ++i) caches.push_back(local.new_cache(16));
  for (const std::int64_t n : {3, 1, 1}) {
    for (std::uint64_t session : {1, 2, 3}) {
      const TensorPayload rows = varied_rows(n, h, 0.1f * static_cast<float>(session));
      const std::int64_t position = caches[session - 1].length();
      auto out = c.request_sync(host, Step{session, position, rows}, 5s);
      ASSERT_TRUE(out.is_ok()) << out.status().to_string();
      std::vector<float> want(rows.as<float>(), rows.as<float>() + n * h);
      const BlockAdapters adapters{shape, 1, 3, session < 3 ? values[session - 1].data() : nullptr};
      local.forward(want.data(), n, caches[session - 1], 1, nullptr, session < 3 ? &adapters : nullptr);
      for (std::int64_t t = 0; t < n; ++t) EXPECT_EQ(row_of(out->hidden, t), std::vector<float>(want.begin() + t * h, want.begin() + (t + 1) * h)) << "session " << session;
    }
  }
  // Adapters that do not fit: refused in one line, no session opened.
  AdapterPayload short_rows = payload(values[0]);
  const std::vector<float> seven(21, 0.f);
  short_rows.values = TensorPayload::copy_of(ElementType::kF32, {3, 7}, seven.data(), seven.size());
  auto refused = c.request_sync(host, OpenSession{4, 16, 1, 4, {}, 0, short_rows}, 5s);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("adapter values must be f32"), std::string::npos) << refused.status().message();
  AdapterPayload bad = payload(values[0]);
  bad.targets = {0, 9};
  EXPECT_FALSE(c.request_sync(host, OpenSession{5, 16, 1, 4, {}, 0, bad}, 5s).is_ok());

  // A session's adapters count against the client's share of the budget, as its cache does: with
  // room for one cache and a little more, the session opens without them and is refused with them.
  const std::int64_t cache = 2 * 3 * config.num_kv_heads * config.head_dim * 16 * 4;
  BlockHostOptions options;
  options.max_cache_bytes_per_client = cache + 1024;
  LocalSwarm small(test::models_dir() / "stories260K", {{1, 4}}, options);
  const auto small_host = small.route()[0].host;
  auto refused_memory = small.client().request_sync(small_host, OpenSession{1, 16, 1, 4, {}, 0, payload(values[0])}, 5s);
  ASSERT_FALSE(refused_memory.is_ok());
  EXPECT_EQ(refused_memory.status().code(), StatusCode::kResourceExhausted) << refused_memory.status().to_string();
  EXPECT_TRUE(small.client().request_sync(small_host, OpenSession{2, 16, 1, 4, {}, 0}, 5s).is_ok());
}

// Hosts whose blocks are on a device (here the CPU backend, which runs the device forward; on a
// GPU the same code runs the CUDA backend): greedy generation through two of them gives the
// reference, and a session with adapters and a token tree's step get a CPU host's rows (their
// batches: OnADeviceStepsThatArriveTogether... below).
TEST(BlockHost, HostsWithBlocksOnADeviceServeAndRefuseWhatRunsOnTheCpuOnly) {
  const auto ref = json::parse(test::read_file(test::models_dir() / "reference" / "stories260K.greedy.json"));
  LocalSwarm swarm(test::models_dir() / "stories260K", {{0, 3}, {3, 5}}, {}, open_cpu_backend());
  const ModelEnds ends = ModelEnds::load(swarm.checkpoint(), swarm.config(), DType::kF32);
  GenerationRequest request;
  request.prompt_ids = ref["prompt_ids"].get<std::vector<std::int32_t>>();
  request.max_new_tokens = ref["max_new_tokens"].get<int>();
  auto pipeline = open_session(swarm, session_capacity(swarm.config(), request), /*push=*/true, /*compression=*/false);
  ASSERT_TRUE(pipeline);
  EXPECT_EQ(generate(ends, *pipeline, request, [](std::int32_t) {}).generated_ids,
            ref["generated_ids"].get<std::vector<std::int32_t>>());

  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  const std::int64_t h = swarm.config().hidden_size;
  const AdapterShape shape{AdapterMethod::kLora, 2, 3.0, {Projection::kQ}};
  const std::vector<float> values(static_cast<std::size_t>(3 * shape.values_per_block(swarm.config())), 0.1f);
  const AdapterPayload adapter{1, shape.rank, shape.alpha, {0},
                               TensorPayload::copy_of(ElementType::kF32, {3, shape.values_per_block(swarm.config())},
                                                      values.data(), values.size())};
  LocalSwarm on_cpu(test::models_dir() / "stories260K", {{0, 3}});
  const auto cpu_host = on_cpu.route()[0].host;
  ASSERT_TRUE(c.request_sync(host, OpenSession{1, 16, 0, 3, {}, 0, adapter}, 5s).is_ok());
  ASSERT_TRUE(on_cpu.client().request_sync(cpu_host, OpenSession{1, 16, 0, 3, {}, 0, adapter}, 5s).is_ok());
  for (std::int64_t position : {0, 3}) {
    const TensorPayload rows = varied_rows(3, h, 0.3f + static_cast<float>(position));
    auto on_device = c.request_sync(host, Step{1, position, rows}, 5s);
    auto there = on_cpu.client().request_sync(cpu_host, Step{1, position, rows}, 5s);
    ASSERT_TRUE(on_device.is_ok() && there.is_ok()) << on_device.status().to_string();
    EXPECT_EQ(values_of(on_device->hidden), values_of(there->hidden)) << "adapted step at " << position;
  }
  // A token tree's step, and the path kept, as a CPU host gives them.
  ASSERT_TRUE(c.request_sync(host, OpenSession{2, 16, 0, 3, {}, 0}, 5s).is_ok());
  ASSERT_TRUE(on_cpu.client().request_sync(cpu_host, OpenSession{2, 16, 0, 3, {}, 0}, 5s).is_ok());
  const TensorPayload tree_rows = varied_rows(3, h, 0.2f);
  auto tree = c.request_sync(host, Step{2, 0, tree_rows, 0, {-1, 0, 0}}, 5s);
  auto cpu_tree = on_cpu.client().request_sync(cpu_host, Step{2, 0, tree_rows, 0, {-1, 0, 0}}, 5s);
  ASSERT_TRUE(tree.is_ok() && cpu_tree.is_ok()) << tree.status().to_string();
  EXPECT_EQ(values_of(tree->hidden), values_of(cpu_tree->hidden));
  const TensorPayload next = varied_rows(1, h, 0.7f);
  auto step = c.request_sync(host, Step{2, 2, next, 0, {}, {0, 2}}, 5s);
  auto cpu_step = on_cpu.client().request_sync(cpu_host, Step{2, 2, next, 0, {}, {0, 2}}, 5s);
  ASSERT_TRUE(step.is_ok() && cpu_step.is_ok()) << step.status().to_string();
  EXPECT_EQ(step->length, 3);
  EXPECT_EQ(values_of(step->hidden), values_of(cpu_step->hidden));
}

TEST(BlockHost, PartOfTheRangeMatchesTheWholeRangeSplit) {
  // A session through blocks [1, 4) of a [0, 5) host equals hosts [1, 4) would compute.
  LocalSwarm whole(test::models_dir() / "stories260K", {{0, 5}});
  LocalSwarm part(test::models_dir() / "stories260K", {{1, 4}});
  const std::int64_t h = whole.config().hidden_size;
  ASSERT_TRUE(whole.client().request_sync(whole.route()[0].host, OpenSession{1, 16, 1, 4, {}, 0}, 5s).is_ok());
  ASSERT_TRUE(part.client().request_sync(part.route()[0].host, OpenSession{1, 16, 0, 0, {}, 0}, 5s).is_ok());
  auto a = whole.client().request_sync(whole.route()[0].host, Step{1, 0, hidden_rows(3, h, 0.25f)}, 5s);
  auto b = part.client().request_sync(part.route()[0].host, Step{1, 0, hidden_rows(3, h, 0.25f)}, 5s);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_EQ(a->hidden.bytes, b->hidden.bytes);
  EXPECT_EQ(std::memcmp(a->hidden.data, b->hidden.data, a->hidden.bytes), 0);
}

TEST(BlockHost, StepsOfAnOlderAttemptAreIgnored) {
  LocalSwarm swarm(test::models_dir() / "stories260K", {{0, 5}});
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  const std::int64_t h = swarm.config().hidden_size;
  ASSERT_TRUE(c.request_sync(host, OpenSession{3, 16, 0, 0, {}, 0}, 5s).is_ok());
  ASSERT_TRUE(c.request_sync(host, Step{3, 0, hidden_rows(2, h), 5}, 5s).is_ok());
  ASSERT_TRUE(c.request_sync(host, Rollback{3, 0, 6}, 5s).is_ok());
  auto stale = c.request_sync(host, Step{3, 0, hidden_rows(2, h), 5}, 5s);
  ASSERT_FALSE(stale.is_ok());
  EXPECT_EQ(stale.status().code(), StatusCode::kCancelled);
  auto fresh = c.request_sync(host, Step{3, 0, hidden_rows(2, h), 6}, 5s);
  ASSERT_TRUE(fresh.is_ok()) << fresh.status().to_string();
  EXPECT_EQ(fresh->length, 2);
}

// A client's and a host's process on a virtual clock: messages move when the test runs the scheduler.
struct VirtualClockPair {
  ManualScheduler scheduler;
  std::shared_ptr<DeterministicNetwork> network = DeterministicNetwork::create(scheduler);
  std::unique_ptr<Transport> client_transport = network->endpoint(), host_transport = network->endpoint();
  ActorSystem client{*client_transport, scheduler}, host_system{*host_transport, scheduler};
  VirtualClockPair() {
    EXPECT_TRUE(client.start().is_ok());
    EXPECT_TRUE(host_system.start().is_ok());
  }
};

TEST(BlockHost, IdleSessionsExpireOnTheVirtualClock) {
  VirtualClockPair world;
  ManualScheduler& scheduler = world.scheduler;
  ActorSystem &client = world.client, &host_system = world.host_system;
  const auto model = test::models_dir() / "stories260K";
  const ModelConfig config = read_model_config(model);
  const Checkpoint ckpt = Checkpoint::open(model);
  BlockHostOptions options;
  options.idle_timeout = 10s;
  auto host = host_system.spawn_with_id<BlockHost>(
      kBlockHostActorId, std::make_shared<const BlockStack>(BlockStack::load(ckpt, config, 0, 5, DType::kF32)), options);
  std::optional<Result<SessionOpened>> opened;
  client.request(host, OpenSession{5, 16, 0, 0, {}, 0}, 60s, [&](Result<SessionOpened> r) { opened = std::move(r); });
  scheduler.run_all();
  ASSERT_TRUE(opened && opened->is_ok());
  scheduler.advance(9s);
  std::optional<Result<SessionState>> kept;
  client.request(host, Rollback{5, 0}, 60s, [&](Result<SessionState> r) { kept = std::move(r); });
  scheduler.run_all();
  ASSERT_TRUE(kept && kept->is_ok()) << "used within the timeout: still there";
  scheduler.advance(11s);
  std::optional<Result<SessionState>> gone;
  client.request(host, Rollback{5, 0}, 60s, [&](Result<SessionState> r) { gone = std::move(r); });
  scheduler.run_all();
  ASSERT_TRUE(gone.has_value());
  EXPECT_EQ(gone->status().code(), StatusCode::kNotFound);
}


// Steps of several sessions that reach the host together run as one batch, and each session gets
// what its blocks give it alone; a session's second step while its first waits runs after it.
// With `on_device`, the host's blocks are placed on a device (the CPU backend, which runs the
// device forward and its batches; on a GPU the same code runs the CUDA backend).
void expect_steps_that_arrive_together_batch(bool on_device) {
  VirtualClockPair world;
  ManualScheduler& scheduler = world.scheduler;
  ActorSystem &client = world.client, &host_system = world.host_system;
  const auto model = test::models_dir() / "tinystories-656K";
  const ModelConfig config = read_model_config(model);
  const Checkpoint ckpt = Checkpoint::open(model);
  const std::int64_t h = config.hidden_size, blocks = config.num_layers;
  BlockStack served = BlockStack::load(ckpt, config, 0, blocks, DType::kI8);
  if (on_device) served.place_on(open_cpu_backend());
  auto owned = std::make_unique<BlockHost>(std::make_shared<const BlockStack>(std::move(served)), BlockHostOptions{});
  BlockHost* host_actor = owned.get();
  const auto host = host_system.adopt_with_id(kBlockHostActorId, std::move(owned));
  const BlockStack local = BlockStack::load(ckpt, config, 0, blocks, DType::kI8);
  constexpr int kSessions = 6;
  std::vector<KvCache> caches;
  for (std::uint64_t id = 1; id <= kSessions; ++id) {
    std::optional<Result<SessionOpened>> opened;
    client.request(host, OpenSession{id, 32, 0, 0, {}, 0}, 60s, [&](Result<SessionOpened> r) { opened = std::move(r); });
    scheduler.run_all();
    ASSERT_TRUE(opened && opened->is_ok());
    caches.push_back(local.new_cache(32));
  }
  // Prompts of different lengths, one at a time; then rounds of 1 to 4 rows, every session at once.
  std::pair<std::int64_t, std::int64_t> after_prompts;
  for (std::int64_t round = 0; round < 4; ++round) {
    if (round == 1) after_prompts = host_actor->batches();
    std::vector<std::optional<Result<StepResult>>> got(kSessions);
    std::vector<std::vector<float>> want(kSessions);
    for (int i = 0; i < kSessions; ++i) {
      const std::int64_t n = round == 0 ? 2 + i : 1 + (i + round) % 4;
      const TensorPayload rows = varied_rows(n, h, 0.1f * static_cast<float>(i + 1) + 0.01f * static_cast<float>(round));
      want[i].assign(rows.as<float>(), rows.as<float>() + n * h);
      local.forward(want[i].data(), n, caches[i]);
      client.request(host, Step{static_cast<std::uint64_t>(i + 1), caches[i].length() - n, rows}, 60s,
                     [&got, i](Result<StepResult> r) { got[i] = std::move(r); });
      if (round == 0) scheduler.run_all();
    }
    scheduler.run_all();
    for (int i = 0; i < kSessions; ++i) {
      ASSERT_TRUE(got[i] && got[i]->is_ok()) << (got[i] ? got[i]->status().to_string() : "no answer");
      EXPECT_EQ((*got[i])->length, caches[i].length());
      const std::int64_t n = hidden_tokens((*got[i])->hidden);
      for (std::int64_t t = 0; t < n; ++t) {
        EXPECT_EQ(row_of((*got[i])->hidden, t), std::vector<float>(want[i].begin() + t * h, want[i].begin() + (t + 1) * h))
            << "round " << round << ", session " << i + 1;
      }
    }
  }
  // Each round after the prompts was one batch of every session.
  const auto [batches, steps] = host_actor->batches();
  EXPECT_EQ(batches - after_prompts.first, 3) << batches << " batches held " << steps << " steps";
  EXPECT_EQ(steps - after_prompts.second, 3 * kSessions) << batches << " batches held " << steps << " steps";
  // Two steps of one session sent back to back: the second is checked after the first ran.
  std::optional<Result<StepResult>> first, second;
  client.request(host, Step{1, caches[0].length(), varied_rows(1, h, 0.5f)}, 60s, [&](Result<StepResult> r) { first = std::move(r); });
  client.request(host, Step{1, caches[0].length() + 1, varied_rows(1, h, 0.6f)}, 60s, [&](Result<StepResult> r) { second = std::move(r); });
  scheduler.run_all();
  ASSERT_TRUE(first && first->is_ok() && second && second->is_ok()) << (second ? second->status().to_string() : "");
  EXPECT_EQ((*second)->length, caches[0].length() + 2);
}

TEST(BlockHost, StepsThatArriveTogetherRunAsOneBatchWithEachSessionsOwnStates) {
  expect_steps_that_arrive_together_batch(/*on_device=*/false);
}

TEST(BlockHost, OnADeviceStepsThatArriveTogetherRunAsOneBatchWithEachSessionsOwnStates) {
  expect_steps_that_arrive_together_batch(/*on_device=*/true);
}

// A batch waits for the sessions of the last batch: it runs when the last of them arrives, when
// the host has waited long enough for one that does not come (a timer, here on the virtual
// clock), or at once when the missing session has closed.
TEST(BlockHost, ABatchWaitsForTheSessionsOfTheLastRoundForABoundedTimeAndNotForThoseThatRan) {
  VirtualClockPair world;
  ManualScheduler& scheduler = world.scheduler;
  ActorSystem &client = world.client, &host_system = world.host_system;
  const auto model = test::models_dir() / "tinystories-656K";
  const ModelConfig config = read_model_config(model);
  const Checkpoint ckpt = Checkpoint::open(model);
  const std::int64_t h = config.hidden_size;
  auto owned = std::make_unique<BlockHost>(
      std::make_shared<const BlockStack>(BlockStack::load(ckpt, config, 0, config.num_layers, DType::kF32)), BlockHostOptions{});
  BlockHost* host_actor = owned.get();
  const auto host = host_system.adopt_with_id(kBlockHostActorId, std::move(owned));
  constexpr int kSessions = 3;
  std::vector<std::int64_t> length(kSessions + 1, 0);
  for (std::uint64_t id = 1; id <= kSessions; ++id) {
    std::optional<Result<SessionOpened>> opened;
    client.request(host, OpenSession{id, 32, 0, 0, {}, 0}, 60s, [&](Result<SessionOpened> r) { opened = std::move(r); });
    scheduler.run_all();
    ASSERT_TRUE(opened && opened->is_ok());
  }
  std::vector<std::optional<Result<StepResult>>> got(kSessions + 1);
  auto step = [&](int id) {
    got[id].reset();
    client.request(host, Step{static_cast<std::uint64_t>(id), length[id]++, varied_rows(1, h, 0.1f * id)}, 60s,
                   [&got, id](Result<StepResult> r) { got[id] = std::move(r); });
  };
  // Round 1: all three together, one batch.
  for (int id = 1; id <= kSessions; ++id) step(id);
  scheduler.run_all();
  for (int id = 1; id <= kSessions; ++id) ASSERT_TRUE(got[id] && got[id]->is_ok());
  auto before = host_actor->batches();
  // Round 2: sessions 1 and 2 wait for 3; its step completes the batch.
  step(1);
  step(2);
  scheduler.run_all();
  EXPECT_FALSE(got[1].has_value()) << "ran without waiting for session 3";
  step(3);
  scheduler.run_all();
  for (int id = 1; id <= kSessions; ++id) ASSERT_TRUE(got[id] && got[id]->is_ok());
  EXPECT_EQ(host_actor->batches().first - before.first, 1);
  // Round 3: session 3 does not come; after the host's patience the two run without it.
  step(1);
  step(2);
  scheduler.run_all();
  EXPECT_FALSE(got[1].has_value());
  scheduler.advance(1s);
  scheduler.run_all();
  ASSERT_TRUE(got[1] && got[1]->is_ok() && got[2] && got[2]->is_ok());
  // Session 3 comes late in round 3: sessions 1 and 2 have run in this round already, so it runs
  // at once (waiting for their next steps, which their clients send only after this round, was
  // how a client's 16 sessions had split into two batches a round on every host).
  step(3);
  scheduler.run_all();
  ASSERT_TRUE(got[3].has_value()) << "a late session waited for the sessions that ran before it";
  ASSERT_TRUE(got[3]->is_ok());
  // Round 4: session 3 has closed: nothing to wait for.
  std::optional<Result<SessionState>> closed;
  client.request(host, CloseSession{3}, 60s, [&](Result<SessionState> r) { closed = std::move(r); });
  scheduler.run_all();
  ASSERT_TRUE(closed && closed->is_ok());
  step(1);
  step(2);
  scheduler.run_all();
  EXPECT_TRUE(got[1] && got[1]->is_ok() && got[2] && got[2]->is_ok()) << "waited for a closed session";
}

// ---- training passes ----

TensorPayload floats(std::vector<std::int64_t> shape, const std::vector<float>& v) {
  return TensorPayload::copy_of(ElementType::kF32, std::move(shape), v.data(), v.size());
}

void expect_passes_are_the_local_blocks(std::shared_ptr<Backend> backend);

// On hosts with blocks on the CPU, and on hosts with blocks on a device (the CPU backend here).
TEST(BlockHostTraining, PassesAreTheLocalBlocksPassesBitForBit) {
  for (const bool on_device : {false, true}) {
    SCOPED_TRACE(on_device ? "blocks on a device" : "blocks on the CPU");
    expect_passes_are_the_local_blocks(on_device ? open_cpu_backend() : nullptr);
  }
}

void expect_passes_are_the_local_blocks(std::shared_ptr<Backend> backend) {
  const auto model = test::models_dir() / "tinystories-656K";
  LocalSwarm swarm(model, {{0, 1}, {1, 2}}, {}, std::move(backend));
  ActorSystem& c = swarm.client();
  const std::int64_t h = swarm.config().hidden_size;
  const BlockStack local = BlockStack::load(swarm.checkpoint(), swarm.config(), 0, 2, DType::kF32);
  const std::vector<std::int64_t> lengths{7, 5};
  const auto input = test::random_floats(12 * h, 1);
  const auto dy = test::random_floats(12 * h, 2);
  const auto prompts = test::random_floats(2 * 3 * h, 3, 0.3f);
  const DeepPrompts deep{prompts.data(), 3, 1};
  // Local: both blocks in one pass.
  std::vector<float> out = input, grad = dy, pgrad(prompts.size());
  local.forward_sequences(out.data(), lengths, 0, 2, &deep);
  local.backward_sequences(input.data(), lengths, 0, 2, &deep, grad.data(), pgrad.data());
  // Through the hosts: forward hop by hop, backward in reverse from each hop's input.
  const std::vector<float> p0(prompts.begin(), prompts.begin() + 3 * h), p1(prompts.begin() + 3 * h, prompts.end());
  auto f0 = c.request_sync(swarm.route()[0].host, TrainForward{0, 1, lengths, floats({12, h}, input), floats({1, 3, h}, p0), 1}, 5s);
  ASSERT_TRUE(f0.is_ok()) << f0.status().to_string();
  const auto mid = values_of(f0->hidden);
  auto f1 = c.request_sync(swarm.route()[1].host, TrainForward{1, 2, lengths, floats({12, h}, mid), floats({1, 3, h}, p1), 1}, 5s);
  ASSERT_TRUE(f1.is_ok()) << f1.status().to_string();
  EXPECT_EQ(values_of(f1->hidden), out);
  auto b1 = c.request_sync(swarm.route()[1].host,
                           TrainBackward{1, 2, lengths, floats({12, h}, mid), floats({12, h}, dy), floats({1, 3, h}, p1), 1}, 5s);
  ASSERT_TRUE(b1.is_ok()) << b1.status().to_string();
  auto b0 = c.request_sync(swarm.route()[0].host, TrainBackward{0, 1, lengths, floats({12, h}, input), b1->grad,
                                                               floats({1, 3, h}, p0), 1}, 5s);
  ASSERT_TRUE(b0.is_ok()) << b0.status().to_string();
  EXPECT_EQ(values_of(b0->grad), grad);
  std::vector<float> host_pgrad = values_of(b0->prompt_grads);
  const auto pg1 = values_of(b1->prompt_grads);
  host_pgrad.insert(host_pgrad.end(), pg1.begin(), pg1.end());
  EXPECT_EQ(host_pgrad, pgrad);
  // Without deep prompts the reply carries none.
  auto plain = c.request_sync(swarm.route()[0].host,
                              TrainBackward{0, 1, lengths, floats({12, h}, input), floats({12, h}, dy), {}, 0}, 5s);
  ASSERT_TRUE(plain.is_ok());
  EXPECT_EQ(plain->prompt_grads.elements(), 0);
}

// Adapters left on a host for training passes (AdapterPayload::held) serve their sender, their
// key and their blocks only; the key alone gives what the values give; values that are refused
// are not kept.
TEST(BlockHostTraining, KeptAdaptersServeOnlyTheirSenderKeyAndBlocks) {
  LocalSwarm swarm(test::models_dir() / "stories260K", {{1, 4}, {0, 1}});
  ActorSystem& c = swarm.client();
  ActorSystem& other = swarm.system(2);  // the second host's process, as another client
  const auto host = swarm.route()[0].host;
  const ModelConfig& config = swarm.config();
  const std::int64_t h = config.hidden_size;
  const AdapterShape shape{AdapterMethod::kLora, 2, 3.0, {Projection::kQ, Projection::kDown}};
  const std::int64_t per_block = shape.values_per_block(config);
  const std::vector<float> values = test::random_floats(static_cast<std::size_t>(3 * per_block), 93, 0.3f);
  const auto full = [&](std::uint64_t key, const std::vector<float>& v) {
    return AdapterPayload{1, shape.rank, shape.alpha, {0, 6}, floats({3, per_block}, v), key};
  };
  const auto key_only = [](std::uint64_t key) {
    AdapterPayload p;
    p.held = key;
    return p;
  };
  const TensorPayload rows = varied_rows(5, h, 0.2f);
  auto sent = c.request_sync(host, TrainForward{1, 4, {5}, rows, {}, 0, full(7, values)}, 5s);
  ASSERT_TRUE(sent.is_ok()) << sent.status().to_string();
  auto kept = c.request_sync(host, TrainForward{1, 4, {5}, rows, {}, 0, key_only(7)}, 5s);
  ASSERT_TRUE(kept.is_ok()) << kept.status().to_string();
  EXPECT_EQ(row_of(kept->hidden, 4), row_of(sent->hidden, 4));
  auto plain = c.request_sync(host, TrainForward{1, 4, {5}, rows, {}, 0}, 5s);
  ASSERT_TRUE(plain.is_ok());
  EXPECT_NE(row_of(plain->hidden, 4), row_of(sent->hidden, 4));  // the adapters do act
  const TensorPayload grad = varied_rows(5, h, 0.3f);
  auto back_sent = c.request_sync(host, TrainBackward{1, 4, {5}, rows, grad, {}, 0, full(7, values)}, 5s);
  auto back_kept = c.request_sync(host, TrainBackward{1, 4, {5}, rows, grad, {}, 0, key_only(7)}, 5s);
  ASSERT_TRUE(back_sent.is_ok() && back_kept.is_ok());
  EXPECT_EQ(row_of(back_kept->grad, 0), row_of(back_sent->grad, 0));
  EXPECT_EQ(back_kept->adapter_grads.bytes, back_sent->adapter_grads.bytes);
  EXPECT_EQ(0, std::memcmp(back_kept->adapter_grads.data, back_sent->adapter_grads.data, back_sent->adapter_grads.bytes));

  const auto expect_not_kept = [](const auto& result) {
    ASSERT_FALSE(result.is_ok());
    EXPECT_EQ(result.status().code(), StatusCode::kFailedPrecondition) << result.status().to_string();
    EXPECT_NE(result.status().message().find("are not held here"), std::string::npos) << result.status().message();
  };
  expect_not_kept(c.request_sync(host, TrainForward{1, 4, {5}, rows, {}, 0, key_only(8)}, 5s));      // another key
  expect_not_kept(other.request_sync(host, TrainForward{1, 4, {5}, rows, {}, 0, key_only(7)}, 5s));  // another client
  expect_not_kept(c.request_sync(host, TrainForward{1, 3, {5}, rows, {}, 0, key_only(7)}, 5s));      // other blocks
  std::vector<float> nan_values = values;
  nan_values[5] = std::nanf("");
  EXPECT_EQ(c.request_sync(host, TrainForward{1, 4, {5}, rows, {}, 0, full(9, nan_values)}, 5s).status().code(),
            StatusCode::kInvalidArgument);
  expect_not_kept(c.request_sync(host, TrainForward{1, 4, {5}, rows, {}, 0, key_only(9)}, 5s));
  // Still served after the refusals.
  EXPECT_TRUE(c.request_sync(host, TrainForward{1, 4, {5}, rows, {}, 0, key_only(7)}, 5s).is_ok());
}

TEST(BlockHostTraining, BadPassesGetErrorsAndTheHostGoesOn) {
  BlockHostOptions options;
  options.max_training_tokens = 20;
  LocalSwarm swarm(test::models_dir() / "stories260K", {{0, 2}}, options);
  ActorSystem& c = swarm.client();
  const auto host = swarm.route()[0].host;
  const std::int64_t h = swarm.config().hidden_size;
  const auto expect_code = [](const auto& result, StatusCode code, const std::string& needle) {
    ASSERT_FALSE(result.is_ok()) << "accepted; expected " << status_code_name(code);
    EXPECT_EQ(result.status().code(), code) << result.status().to_string();
    EXPECT_NE(result.status().message().find(needle), std::string::npos) << result.status().message();
  };
  const std::vector<float> two(2 * 2 * h, 0.1f);
  expect_code(c.request_sync(host, TrainForward{1, 3, {4}, hidden_rows(4, h), {}, 0}, 5s), StatusCode::kNotFound,
              "not a part of the served blocks");
  expect_code(c.request_sync(host, TrainForward{1, 1, {4}, hidden_rows(4, h), {}, 0}, 5s), StatusCode::kInvalidArgument,
              "an empty block range");
  expect_code(c.request_sync(host, TrainForward{0, 2, {3}, hidden_rows(4, h), {}, 0}, 5s), StatusCode::kInvalidArgument,
              "hold 3 tokens");
  expect_code(c.request_sync(host, TrainForward{0, 2, {4, 0}, hidden_rows(4, h), {}, 0}, 5s),
              StatusCode::kInvalidArgument, "a sequence of 0 tokens");
  expect_code(c.request_sync(host, TrainForward{0, 2, {}, hidden_rows(0, h), {}, 0}, 5s), StatusCode::kInvalidArgument,
              "at least one sequence");
  expect_code(c.request_sync(host, TrainForward{0, 2, {21}, hidden_rows(21, h), {}, 0}, 5s),
              StatusCode::kResourceExhausted, "the limit is 20");
  expect_code(c.request_sync(host, TrainForward{0, 2, {4}, hidden_rows(4, h), floats({1, 2, h}, {two.begin(), two.begin() + 2 * h}), 0}, 5s),
              StatusCode::kInvalidArgument, "deep prompts must be f32 [2, count, 64]");
  expect_code(c.request_sync(host, TrainForward{0, 2, {4}, hidden_rows(4, h), floats({2, 2, h}, two), 3}, 5s),
              StatusCode::kInvalidArgument, "do not fit in a sequence of 4");
  expect_code(c.request_sync(host, TrainBackward{0, 2, {4}, hidden_rows(4, h), hidden_rows(3, h), {}, 0}, 5s),
              StatusCode::kInvalidArgument, "output gradient must be f32 [4, 64]");
  EXPECT_TRUE(c.request_sync(host, TrainForward{0, 2, {4}, hidden_rows(4, h), floats({2, 2, h}, two), 1}, 5s).is_ok());
  EXPECT_TRUE(c.request_sync(host, TrainBackward{0, 2, {4}, hidden_rows(4, h), hidden_rows(4, h), {}, 0}, 5s).is_ok());
}


TEST(BlockHostTraining, DeepPromptsTravelWithTheSessionAndGiveTheLocalStates) {
  const auto model = test::models_dir() / "tinystories-656K";
  LocalSwarm swarm(model, {{0, 1}, {1, 2}});
  const std::int64_t h = swarm.config().hidden_size;
  const auto prompts = test::random_floats(2 * 3 * h, 7, 0.3f);
  const DeepPrompts deep{prompts.data(), 3, 1};
  const BlockStack local = BlockStack::load(swarm.checkpoint(), swarm.config(), 0, 2, DType::kF32);
  LocalPipeline expected(local, 16, &deep);
  ClientDriverOptions options;
  options.num_blocks = 2;
  options.push = false;
  options.wire_compression = false;
  const auto driver = add_client_driver(swarm.client(), std::make_unique<test::FixedRoutes>(swarm.route()), options);
  auto session = DriverSession::open(swarm.client(), driver, 16, floats({2, 3, h}, prompts), 1);
  ASSERT_TRUE(session.is_ok()) << session.status().to_string();
  // A prompt that covers the deep prompts' positions, then steps past them one at a time.
  for (std::int64_t n : {2, 3, 1, 1}) {
    auto a = test::random_floats(static_cast<std::size_t>(n * h), 10 + n);
    auto b = a;
    expected.forward(a.data(), n);
    session.value()->forward(b.data(), n);
    EXPECT_EQ(a, b) << "step of " << n;
  }
  // Prompts of the wrong shape are refused at the driver and at the host.
  EXPECT_FALSE(DriverSession::open(swarm.client(), driver, 16, floats({1, 3, h}, {prompts.begin(), prompts.begin() + 3 * h}), 1).is_ok());
  auto refused = swarm.client().request_sync(swarm.route()[0].host,
                                             OpenSession{77, 16, 0, 1, floats({1, 3, h - 1}, {prompts.begin(), prompts.begin() + 3 * (h - 1)}), 1}, 5s);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("deep prompts must be f32 [1, count, 128]"), std::string::npos);
  refused = swarm.client().request_sync(swarm.route()[0].host,
                                        OpenSession{78, 3, 0, 1, floats({1, 3, h}, {prompts.begin(), prompts.begin() + 3 * h}), 1}, 5s);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("do not fit in a session of 3"), std::string::npos);
}

}  // namespace
}  // namespace sepal

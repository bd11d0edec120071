// The balancer, route planning, and a whole swarm in one process (in-process transports, real
// model): hosts join through the balancer, the client routes through them with relay and with
// push, and a failure, a graceful leave, a leave that uncovers blocks, and a join during
// generation all keep the output identical to the reference; the balancer's block map is checked
// after each event, and a restarted balancer rebuilds it from the hosts' announcements.
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <future>
#include <thread>

#include "actors/balancer.h"
#include "actors/balancer_route_planner.h"
#include "actors/blocking_facade.h"
#include "actors/client_driver.h"
#include "actors/client_node.h"
#include "actors/host_node.h"
#include "actors/route_planning.h"
#include "kernels/error.h"
#include "model/synthetic_checkpoint.h"
#include "runtime/faulty_transport.h"
#include "runtime/inproc_transport.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;

// ---- route planning (pure) ----

TEST(RoutePlanning, PrefersTheCheaperChain) {
  // Host 1 serves everything slowly; hosts 2 and 3 split it and are fast.
  const std::vector<RouteCandidate> hosts{{1, {0, 8}, 10, 0.001}, {2, {0, 4}, 100, 0.001}, {3, {4, 8}, 100, 0.001}};
  auto r = plan_route(hosts, 0, 8);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r.value(), (std::vector<PlannedHop>{{2, {0, 4}}, {3, {4, 8}}}));
  // With a long round trip, one hop beats two.
  const std::vector<RouteCandidate> far{{1, {0, 8}, 10, 0.001}, {2, {0, 4}, 100, 1.0}, {3, {4, 8}, 100, 1.0}};
  auto one = plan_route(far, 0, 8);
  ASSERT_TRUE(one.is_ok());
  EXPECT_EQ(one.value(), (std::vector<PlannedHop>{{1, {0, 8}}}));
}

TEST(RoutePlanning, UsesPartsOfRangesAndAvoidsHosts) {
  const std::vector<RouteCandidate> hosts{{1, {0, 5}, 50, 0.01}, {2, {3, 8}, 50, 0.01}, {4, {0, 8}, 5, 0.01}};
  auto r = plan_route(hosts, 0, 8);
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ(r->at(0).peer, 1u);
  EXPECT_EQ(r->at(1).peer, 2u);
  EXPECT_EQ(r->at(0).blocks.last, r->at(1).blocks.first);  // blocks covered once, in order
  auto avoided = plan_route(hosts, 0, 8, {1});
  ASSERT_TRUE(avoided.is_ok());
  for (const auto& hop : avoided.value()) EXPECT_NE(hop.peer, 1u);
  auto sub = plan_route(hosts, 6, 8);
  ASSERT_TRUE(sub.is_ok());
  EXPECT_EQ(sub.value(), (std::vector<PlannedHop>{{2, {6, 8}}}));
}

TEST(RoutePlanning, AReplacementKeepsToHostsOfTheSameNumericsWhileTheyCoverTheBlocks) {
  const std::string f32 = "f32 weights, f32 caches, cpu avx512", int8 = "i8 weights (outlier threshold 6), f32 caches, cpu avx512";
  // The int8 host is the cheapest by far; the f32 hosts cover [0, 8) together.
  std::vector<RouteCandidate> hosts{{1, {0, 8}, 1000, 0.001, int8}, {2, {0, 4}, 10, 0.001, f32}, {3, {4, 8}, 10, 0.001, f32}};
  EXPECT_EQ(plan_route_like(hosts, 0, 8, "").value(), (std::vector<PlannedHop>{{1, {0, 8}}}));
  EXPECT_EQ(plan_route_like(hosts, 0, 8, f32).value(), (std::vector<PlannedHop>{{2, {0, 4}}, {3, {4, 8}}}));
  EXPECT_EQ(plan_route_like(hosts, 2, 4, f32).value(), (std::vector<PlannedHop>{{2, {2, 4}}}));
  // Host 3 avoided: the f32 hosts no longer cover [0, 8), so any host will do.
  EXPECT_EQ(plan_route_like(hosts, 0, 8, f32, {3}).value(), (std::vector<PlannedHop>{{1, {0, 8}}}));
  EXPECT_EQ(plan_route_like(hosts, 0, 8, "bf16 weights").value(), (std::vector<PlannedHop>{{1, {0, 8}}}));
  EXPECT_FALSE(plan_route_like(hosts, 0, 9, f32).is_ok());
}

TEST(RoutePlanning, NamesTheBlockNobodyServes) {
  const std::vector<RouteCandidate> hosts{{1, {0, 3}, 10, 0}, {2, {4, 8}, 10, 0}};
  auto r = plan_route(hosts, 0, 8);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("no host serves block 3"), std::string::npos) << r.status().message();
  EXPECT_FALSE(plan_route(hosts, 5, 5).is_ok());
}

// ---- a swarm in one process ----

test::GreedyReference stories260k_reference() { return test::greedy_reference("stories260K"); }

class InprocSwarm {
 public:
  explicit InprocSwarm(const std::filesystem::path& model, DType dtype = DType::kF32,
                       std::chrono::milliseconds move_timeout = 60s)
      : config_(read_model_config(model)), checkpoint_(Checkpoint::open(model)), dtype_(dtype) {
    hub_ = InprocHub::create(20ms);
    auto faulty = std::make_unique<FaultyTransport>(hub_->endpoint());
    client_faults_ = faulty.get();
    client_transport_ = std::move(faulty);
    client_ = std::make_unique<ActorSystem>(*client_transport_, scheduler_);
    world_.coordinator = client_->self();
    ClientActorSettings settings;
    settings.on_block_map_change = [this](const BlockMapReply& map, const std::string& event) {
      std::lock_guard lock(mutex_);
      events_.push_back(event);
      last_map_ = map;
    };
    settings.route_wait = 20s;
    settings.move_timeout = move_timeout;
    settings.driver.num_blocks = config_.num_layers;
    driver_ = add_client_actors(*client_, world_, settings);  // as a client node does
    balancer_ = world_.balancer();
    EXPECT_TRUE(client_->start().is_ok());
  }
  // Replaces the client's driver by one with `options`; no session may be open.
  void use_driver(ClientDriverOptions options) {
    client_->remove(driver_.address);
    options.num_blocks = config_.num_layers;
    BalancerRoutePlannerOptions planner;
    planner.route_wait = 20s;
    driver_ = add_client_driver(*client_,
                                std::make_unique<BalancerRoutePlanner>(*client_, kClientDriverActorId, balancer_, planner),
                                options);
  }
  Status wait_until_ready(std::int64_t hosts, std::chrono::milliseconds timeout) {
    return await_swarm_ready(*client_, driver_, hosts, timeout).status();
  }
  ~InprocSwarm() {
    for (auto& h : hosts_) {
      if (h.held_join.valid()) h.held_join.wait();  // the test released the loads
    }
    for (auto& h : hosts_) (void)h.system->send(h.agent, StopAnnouncing{});
    for (auto& h : hosts_) h.system->stop();
    client_->stop();
    scheduler_.shutdown();
  }

  // A host that holds `max_blocks` blocks at `throughput` tokens/s per block, with the swarm's
  // weight type or `dtype`, whose loads fail from the `fail_from_load`-th on (0: never) and wait
  // while `hold_loads` is set; returns its peer id (once joined: with loads held, before it
  // serves).
  PeerId add_host(std::int64_t max_blocks, double throughput, std::optional<DType> dtype = std::nullopt,
                  int fail_from_load = 0, std::shared_ptr<std::atomic<bool>> hold_loads = nullptr) {
    Host h;
    h.transport = hub_->endpoint();
    h.system = std::make_unique<ActorSystem>(*h.transport, scheduler_);
    HostAgentOptions options;
    options.model = "stories260K";
    options.num_blocks = config_.num_layers;
    options.max_blocks = max_blocks;
    options.throughput = throughput;
    options.announce_period = 100ms;
    const WeightLoading loading(dtype.value_or(dtype_));
    auto loads = std::make_shared<std::atomic<int>>(0);
    options.load = [this, loading, loads, fail_from_load, hold_loads](BlockRange r) {
      while (hold_loads && *hold_loads) std::this_thread::sleep_for(10ms);
      if (fail_from_load > 0 && ++*loads >= fail_from_load) throw Error("out of memory (a test's)");
      return std::make_shared<const BlockStack>(BlockStack::load(checkpoint_, config_, r.first, r.last, loading));
    };
    options.on_failure = [this](const Status& why) {
      std::lock_guard lock(mutex_);
      failures_.push_back(why.message());
    };
    BlockHostOptions host_options;
    host_options.numerics = describe_numerics(loading, "cpu");
    const HostActors actors = add_host_actors(*h.system, world_, host_options, options);  // as a host node does
    h.agent = actors.agent;
    EXPECT_TRUE(h.system->start().is_ok());
    const PeerId peer = h.system->self();
    if (hold_loads) {
      // The join's answer waits for the first load: ask on a thread of its own.
      ActorSystem* system = h.system.get();
      const ActorRef<HostAgentProtocol> agent = h.agent;
      h.held_join = std::async(std::launch::async, [system, agent] { return join_swarm(*system, agent, 60s).status(); });
      hosts_.push_back(std::move(h));
      return peer;
    }
    const auto joined = join_swarm(*h.system, h.agent, 10s);
    EXPECT_TRUE(joined.is_ok()) << joined.status().to_string();
    hosts_.push_back(std::move(h));
    return peer;
  }
  void kill(PeerId peer) {
    Host& h = host(peer);
    (void)h.system->send(h.agent, StopAnnouncing{});
    hub_->kill(peer);
  }
  void leave(PeerId peer) {
    Host& h = host(peer);
    EXPECT_TRUE(leave_swarm(*h.system, h.agent).is_ok());
  }
  // Nothing passes between the client and `peer` (either way) until heal().
  void partition(PeerId peer) { client_faults_->partition(peer); }
  void heal(PeerId peer) { client_faults_->heal(peer); }
  void restart_balancer() {
    client_->remove(balancer_.address);
    balancer_ = client_->spawn_with_id<Balancer>(kBalancerActorId, BalancerOptions{});
  }

  BlockMapReply map() {
    auto m = client_->request_sync(balancer_, GetBlockMap{}, 10s);
    EXPECT_TRUE(m.is_ok()) << m.status().to_string();
    return m.is_ok() ? m.value() : BlockMapReply{};
  }
  // Waits until the balancer's map has settled (every host serves what it is assigned).
  BlockMapReply settled_map(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    BlockMapReply m;
    while (std::chrono::steady_clock::now() < deadline) {
      m = map();
      const bool settled = std::all_of(m.hosts.begin(), m.hosts.end(), [](const HostRecord& h) {
        return h.first == h.serving_first && h.last == h.serving_last;
      });
      if (settled) return m;
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << "the block map did not settle";
    return m;
  }
  std::vector<std::string> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  // What hosts that gave up (HostAgentOptions::on_failure) said.
  std::vector<std::string> failures() {
    std::lock_guard lock(mutex_);
    return failures_;
  }

  ActorSystem& client() { return *client_; }
  ActorRef<ClientDriverProtocol> driver() const { return driver_; }
  const ModelConfig& config() const { return config_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }
  DType dtype() const { return dtype_; }

 private:
  struct Host {
    std::unique_ptr<InprocTransport> transport;
    std::unique_ptr<ActorSystem> system;
    ActorRef<HostAgentProtocol> agent;
    std::future<Status> held_join;  // a join whose loads were held (add_host's hold_loads)
  };
  Host& host(PeerId peer) {
    for (auto& h : hosts_) {
      if (h.system->self() == peer) return h;
    }
    throw std::runtime_error("no such host");
  }

  ModelConfig config_;
  Checkpoint checkpoint_;
  DType dtype_;
  ThreadPoolScheduler scheduler_{4};
  std::shared_ptr<InprocHub> hub_;
  std::unique_ptr<Transport> client_transport_;
  FaultyTransport* client_faults_ = nullptr;
  std::unique_ptr<ActorSystem> client_;
  SwarmWorld world_;
  ActorRef<BalancerProtocol> balancer_;
  ActorRef<ClientDriverProtocol> driver_;
  std::vector<Host> hosts_;
  std::mutex mutex_;
  std::vector<std::string> events_;
  std::vector<std::string> failures_;
  BlockMapReply last_map_;
};

BlockRange assigned(const BlockMapReply& map, PeerId peer) {
  for (const auto& h : map.hosts) {
    if (h.peer == peer) return {h.first, h.last};
  }
  return {-1, -1};
}
bool covers(const BlockMapReply& map) {
  for (std::int64_t b = 0; b < map.num_blocks; ++b) {
    bool served = false;
    for (const auto& h : map.hosts) served = served || (h.serving_first <= b && b < h.serving_last);
    if (!served) return false;
  }
  return true;
}

TEST(Balancer, JoinsCoverTheModelThenReplicateTheWeakestBlocks) {
  InprocSwarm swarm(test::models_dir() / "stories260K");  // 5 blocks
  const PeerId a = swarm.add_host(3, 10), b = swarm.add_host(3, 10), c = swarm.add_host(3, 10);
  const BlockMapReply map = swarm.settled_map();
  EXPECT_EQ(map.num_blocks, 5);
  EXPECT_EQ(assigned(map, a), (BlockRange{0, 3}));
  EXPECT_EQ(assigned(map, b), (BlockRange{2, 5}));  // covers the unserved blocks 3 and 4
  EXPECT_EQ(assigned(map, c), (BlockRange{0, 3}));  // then the weakest blocks, leftmost on ties
  EXPECT_TRUE(covers(map));
}

TEST(Balancer, ALeaveThatUncoversBlocksMovesAReplicaThere) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  const PeerId a = swarm.add_host(3, 10), b = swarm.add_host(3, 10), c = swarm.add_host(3, 10);
  swarm.leave(b);  // blocks 3 and 4 lose their only host
  const BlockMapReply map = swarm.settled_map();
  ASSERT_EQ(map.hosts.size(), 2u);
  EXPECT_EQ(assigned(map, b), (BlockRange{-1, -1}));
  // One of the two replicas of [0, 3) moved to [2, 5); the weakest block is served again.
  const BlockRange ra = assigned(map, a), rc = assigned(map, c);
  EXPECT_TRUE((ra == BlockRange{0, 3} && rc == BlockRange{2, 5}) || (ra == BlockRange{2, 5} && rc == BlockRange{0, 3}));
  EXPECT_TRUE(covers(map));
}

// A host whose blocks for a move will not load leaves (and says why) rather than keeping the
// balancer waiting for the move: the blocks it held stay with the other replica.
TEST(Balancer, AHostThatCannotLoadItsMoveLeaves) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  // a and c load their first blocks and fail on any later load; b serves [2, 5).
  const PeerId a = swarm.add_host(3, 10, std::nullopt, 2), b = swarm.add_host(3, 10),
               c = swarm.add_host(3, 10, std::nullopt, 2);
  swarm.leave(b);  // blocks 3 and 4 lose their only host: a replica of [0, 3) is moved there
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (swarm.failures().empty() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(swarm.failures().size(), 1u);
  EXPECT_EQ(swarm.failures()[0], "cannot load blocks [2, 5): out of memory (a test's)");
  BlockMapReply map;
  while (std::chrono::steady_clock::now() < deadline) {
    map = swarm.settled_map();
    if (map.hosts.size() == 1) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(map.hosts.size(), 1u) << "the host that could not move is still in the map";
  const PeerId kept = map.hosts[0].peer, gone = kept == a ? c : a;
  EXPECT_TRUE(kept == a || kept == c);
  EXPECT_EQ(assigned(map, kept), (BlockRange{0, 3}));
  const auto events = swarm.events();
  EXPECT_NE(std::find(events.begin(), events.end(), "leave " + std::to_string(gone)), events.end());
}

TEST(Balancer, AHostStuckLoadingDoesNotHoldUpTheMovesThatCoverABlock) {
  InprocSwarm swarm(test::models_dir() / "stories260K", DType::kF32, 500ms);
  swarm.add_host(3, 10);
  const PeerId b = swarm.add_host(3, 10);
  swarm.add_host(3, 10);
  EXPECT_EQ(assigned(swarm.settled_map(), b), (BlockRange{2, 5}));
  // d joins and hangs loading its blocks; then b, the only host of blocks 3 and 4, leaves.
  auto hold = std::make_shared<std::atomic<bool>>(true);
  const PeerId d = swarm.add_host(3, 10, std::nullopt, 0, hold);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (assigned(swarm.map(), d).size() <= 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  swarm.leave(b);
  // Once d's move is overdue, a or c moves to serve blocks 3 and 4 although d still loads.
  BlockMapReply map;
  while (std::chrono::steady_clock::now() < deadline) {
    map = swarm.map();
    if (covers(map)) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(covers(map)) << "no host serves some block while d is stuck";
  const HostRecord* stuck = nullptr;
  for (const auto& h : map.hosts) stuck = h.peer == d ? &h : stuck;
  EXPECT_TRUE(stuck != nullptr && stuck->serving_last == stuck->serving_first) << "d was to be in the map, stuck loading";
  const auto events = swarm.events();
  EXPECT_NE(std::find_if(events.begin(), events.end(),
                         [&](const std::string& e) { return e.find("host " + std::to_string(d) + " has not served") != std::string::npos; }),
            events.end());
  *hold = false;  // d loads at last: every host serves what it is assigned
  map = swarm.settled_map();
  EXPECT_TRUE(covers(map));
  EXPECT_EQ(map.hosts.size(), 3u);
}

TEST(Balancer, AFailureIsForgottenAndABalancedSwarmDoesNotMove) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  const PeerId a = swarm.add_host(3, 10), b = swarm.add_host(3, 10), c = swarm.add_host(3, 10),
               d = swarm.add_host(3, 10);
  BlockMapReply map = swarm.settled_map();
  EXPECT_EQ(assigned(map, d), (BlockRange{2, 5}));
  swarm.kill(c);  // [0, 3) keeps host a: every block still served, no move is a clear gain
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (swarm.map().hosts.size() != 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  map = swarm.settled_map();
  ASSERT_EQ(map.hosts.size(), 3u);
  EXPECT_EQ(assigned(map, a), (BlockRange{0, 3}));
  EXPECT_EQ(assigned(map, b), (BlockRange{2, 5}));
  EXPECT_EQ(assigned(map, d), (BlockRange{2, 5}));
  const auto events = swarm.events();
  EXPECT_NE(std::find(events.begin(), events.end(), "failure " + std::to_string(c)), events.end());
}

TEST(Balancer, ARestartedBalancerRebuildsTheMapFromAnnouncements) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  swarm.add_host(3, 10);
  swarm.add_host(3, 10);
  swarm.add_host(2, 20);
  const BlockMapReply before = swarm.settled_map();
  swarm.restart_balancer();
  EXPECT_TRUE(swarm.map().hosts.empty());
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (swarm.map().hosts.size() < 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  const BlockMapReply after = swarm.settled_map();
  ASSERT_EQ(after.hosts.size(), before.hosts.size());
  for (std::size_t i = 0; i < before.hosts.size(); ++i) {
    EXPECT_EQ(after.hosts[i].peer, before.hosts[i].peer);
    EXPECT_EQ(after.hosts[i].first, before.hosts[i].first);
    EXPECT_EQ(after.hosts[i].last, before.hosts[i].last);
    EXPECT_EQ(after.hosts[i].throughput, before.hosts[i].throughput);
  }
}

TEST(Balancer, RefusesAnotherModelAndBadAnnouncements) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  swarm.add_host(5, 10);
  auto other = swarm.client().request_sync(ActorRef<BalancerProtocol>{{0, kBalancerActorId}},
                                           Announce{"llama-7b", 32, 4, 1.0, 0, 0, 0, 0, false}, 5s);
  ASSERT_FALSE(other.is_ok());
  EXPECT_EQ(other.status().code(), StatusCode::kRefused);
  EXPECT_NE(other.status().message().find("this swarm serves stories260K"), std::string::npos);
  auto bad = swarm.client().request_sync(ActorRef<BalancerProtocol>{{0, kBalancerActorId}},
                                         Announce{"stories260K", 5, 0, 1.0, 0, 0, 0, 0, false}, 5s);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  auto nan = swarm.client().request_sync(ActorRef<BalancerProtocol>{{0, kBalancerActorId}},
                                         Announce{"stories260K", 5, 2, std::nan(""), 0, 0, 0, 0, false}, 5s);
  EXPECT_EQ(nan.status().code(), StatusCode::kInvalidArgument);
  auto outside = swarm.client().request_sync(ActorRef<BalancerProtocol>{{0, kBalancerActorId}},
                                             Announce{"stories260K", 5, 2, 1.0, 4, 7, 0, 0, false}, 5s);
  EXPECT_EQ(outside.status().code(), StatusCode::kInvalidArgument);
  for (const std::string& numerics : {std::string(201, 'x'), std::string("f32\nweights"), std::string("f32 \x1b[31m")}) {
    auto bad_numerics = swarm.client().request_sync(ActorRef<BalancerProtocol>{{0, kBalancerActorId}},
                                                    Announce{"stories260K", 5, 2, 1.0, 0, 0, 0, 0, false, numerics}, 5s);
    EXPECT_EQ(bad_numerics.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(bad_numerics.status().message().find("printable ASCII"), std::string::npos);
  }
}

// Generates the reference with an event at token `at`; returns the ids and the failovers.
struct EventRun {
  std::vector<std::int32_t> ids;
  int failovers = 0;
  std::vector<float> outputs;  ///< every forward's output hidden states, in order
};

// Passes forwards through and keeps their outputs: bit-for-bit comparisons see what a text
// comparison (greedy argmax) would miss.
class RecordingPipeline final : public BlockPipeline {
 public:
  explicit RecordingPipeline(BlockPipeline& inner) : inner_(inner) {}
  void forward(float* hidden, std::int64_t n) override {
    inner_.forward(hidden, n);
    const auto count = static_cast<std::size_t>(n * hidden_size_);
    outputs.insert(outputs.end(), hidden, hidden + count);
  }
  std::int64_t length() const override { return inner_.length(); }
  std::int64_t hidden_size_ = 0;
  std::vector<float> outputs;

 private:
  BlockPipeline& inner_;
};
GenerationRequest stories260k_request() {
  const test::GreedyReference ref = stories260k_reference();
  GenerationRequest request;
  request.prompt_ids = ref.prompt_ids;
  request.max_new_tokens = ref.max_new_tokens;
  return request;
}
// The route's first and last hosts of a session.
PeerId first_host(DriverSession& session) {
  auto report = session.report();
  EXPECT_TRUE(report.is_ok()) << report.status().to_string();
  return report.is_ok() && !report->route.empty() ? report->route.front().host : 0;
}
PeerId last_host(DriverSession& session) {
  auto report = session.report();
  EXPECT_TRUE(report.is_ok()) << report.status().to_string();
  return report.is_ok() && !report->route.empty() ? report->route.back().host : 0;
}

EventRun generate_with_event(InprocSwarm& swarm, bool push, std::size_t at, const std::function<void(DriverSession&)>& event,
                             bool wire_compression = false, const GenerationRequest& request = stories260k_request(),
                             std::chrono::milliseconds timeout = 10s) {
  const ModelEnds ends = ModelEnds::load(swarm.checkpoint(), swarm.config(), swarm.dtype());
  ClientDriverOptions options;
  options.timeout = timeout;
  options.wire_compression = wire_compression;  // f32 by default: the text is the reference's
  options.push = push;
  swarm.use_driver(options);
  auto session = DriverSession::open(swarm.client(), swarm.driver(), session_capacity(swarm.config(), request));
  EXPECT_TRUE(session.is_ok()) << session.status().to_string();
  if (!session.is_ok()) return {};
  DriverSession& pipeline = *session.value();
  RecordingPipeline recording(pipeline);
  recording.hidden_size_ = swarm.config().hidden_size;
  std::size_t count = 0;
  const auto result = generate(ends, recording, request, [&](std::int32_t) {
    if (++count == at && event) event(pipeline);
  });
  auto report = pipeline.report();
  EXPECT_TRUE(report.is_ok());
  return {result.generated_ids, report.is_ok() ? static_cast<int>(report->failovers) : -1, std::move(recording.outputs)};
}

class SwarmEvents : public ::testing::TestWithParam<bool> {};  // push or relay

TEST_P(SwarmEvents, WithCompressedHiddenStatesAKilledHostIsReplacedAndTheTextDoesNotChange) {
  // Hosts [0,2) [2,5) [0,2) [2,5): every route splits at block 2, so every route quantizes the
  // hidden states at the same place, and a replayed hop must give back exactly the same values.
  std::vector<std::int32_t> uninterrupted;
  for (bool kill : {false, true}) {
    InprocSwarm swarm(test::models_dir() / "stories260K");
    swarm.add_host(2, 10);
    swarm.add_host(3, 10);
    swarm.add_host(2, 10);
    swarm.add_host(3, 10);
    ASSERT_TRUE(swarm.wait_until_ready(4, 10s).is_ok());
    const EventRun run = generate_with_event(swarm, GetParam(), 20, [&](DriverSession& p) {
      if (kill) swarm.kill(first_host(p));
    }, /*wire_compression=*/true);
    EXPECT_EQ(run.failovers, kill ? 1 : 0);
    if (!kill) uninterrupted = run.ids;
    else EXPECT_EQ(run.ids, uninterrupted);
  }
}

TEST_P(SwarmEvents, NoEventGivesTheReference) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  swarm.add_host(2, 10);
  swarm.add_host(2, 10);
  swarm.add_host(2, 10);
  ASSERT_TRUE(swarm.wait_until_ready(3, 10s).is_ok());
  const EventRun run = generate_with_event(swarm, GetParam(), 0, nullptr);
  EXPECT_EQ(run.ids, stories260k_reference().generated_ids);
  EXPECT_EQ(run.failovers, 0);
}

TEST_P(SwarmEvents, AKilledHostIsReplacedAndTheTextDoesNotChange) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  for (int i = 0; i < 4; ++i) swarm.add_host(3, 10);  // [0,3) [2,5) [0,3) [2,5)
  ASSERT_TRUE(swarm.wait_until_ready(4, 10s).is_ok());
  PeerId killed = 0;
  const EventRun run = generate_with_event(swarm, GetParam(), 10, [&](DriverSession& p) {
    killed = last_host(p);
    swarm.kill(killed);
  });
  EXPECT_EQ(run.ids, stories260k_reference().generated_ids);
  EXPECT_GE(run.failovers, 1);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (swarm.map().hosts.size() != 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  const BlockMapReply map = swarm.settled_map();
  EXPECT_EQ(map.hosts.size(), 3u);
  EXPECT_EQ(assigned(map, killed), (BlockRange{-1, -1}));
  EXPECT_TRUE(covers(map));
}

TEST_P(SwarmEvents, AGracefulLeaveThatUncoversBlocksWaitsForTheMoveAndTheTextDoesNotChange) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  const PeerId a = swarm.add_host(3, 10), b = swarm.add_host(3, 10), c = swarm.add_host(3, 10);
  ASSERT_TRUE(swarm.wait_until_ready(3, 10s).is_ok());
  const EventRun run = generate_with_event(swarm, GetParam(), 12, [&](DriverSession&) { swarm.leave(b); });
  EXPECT_EQ(run.ids, stories260k_reference().generated_ids);
  EXPECT_GE(run.failovers, 1);
  const BlockMapReply map = swarm.settled_map();
  ASSERT_EQ(map.hosts.size(), 2u);
  EXPECT_TRUE(covers(map));
  EXPECT_NE(assigned(map, a), assigned(map, c));  // one replica moved to the uncovered blocks
}

TEST_P(SwarmEvents, AFailoverKeepsToAReplicaOfTheFailedHostsNumerics) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  const PeerId a = swarm.add_host(5, 10), b = swarm.add_host(5, 10);  // f32, the whole model each
  ASSERT_TRUE(swarm.wait_until_ready(2, 10s).is_ok());
  PeerId fast = 0, first = 0;
  std::vector<PeerId> after_first, after_second;
  auto route_of = [](DriverSession& p) {
    std::vector<PeerId> hosts;
    if (auto report = p.report(); report.is_ok()) {
      for (const auto& hop : report->route) hosts.push_back(hop.host);
    }
    return hosts;
  };
  std::size_t token = 0;
  const GenerationRequest request = stories260k_request();
  const ModelEnds ends = ModelEnds::load(swarm.checkpoint(), swarm.config(), swarm.dtype());
  ClientDriverOptions options;
  options.timeout = 10s;
  options.wire_compression = false;
  options.push = GetParam();
  swarm.use_driver(options);
  auto session = DriverSession::open(swarm.client(), swarm.driver(), session_capacity(swarm.config(), request));
  ASSERT_TRUE(session.is_ok()) << session.status().to_string();
  DriverSession& pipeline = *session.value();
  const auto result = generate(ends, pipeline, request, [&](std::int32_t) {
    ++token;
    if (token == 6) {
      // A bf16 replica of the whole model, a hundred times as fast as the f32 ones by its word:
      // the cheapest route from now on, but not the same bits.
      fast = swarm.add_host(5, 1000, DType::kBF16);
      const auto deadline = std::chrono::steady_clock::now() + 10s;
      while (assigned(swarm.map(), fast).size() <= 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(10ms);
      }
      (void)swarm.settled_map();
      first = first_host(pipeline);
      swarm.kill(first);
    }
    if (token == 12) {
      after_first = route_of(pipeline);
      swarm.kill(after_first.empty() ? 0 : after_first.front());  // the last f32 host: only bf16 is left
    }
    if (token == 18) after_second = route_of(pipeline);
  });
  EXPECT_TRUE(first == a || first == b);
  // The f32 replica, not the faster bf16 host, took the failed host's blocks: the text so far is
  // the reference's.
  EXPECT_EQ(after_first, std::vector<PeerId>{first == a ? b : a});
  EXPECT_EQ(after_second, std::vector<PeerId>{fast});  // with none left, the bf16 host
  ASSERT_GE(result.generated_ids.size(), 12u);
  const auto reference = stories260k_reference().generated_ids;
  EXPECT_TRUE(std::equal(result.generated_ids.begin(), result.generated_ids.begin() + 12, reference.begin()));
  const BlockMapReply map = swarm.map();
  const auto announced = std::find_if(map.hosts.begin(), map.hosts.end(), [&](const HostRecord& h) { return h.peer == fast; });
  ASSERT_NE(announced, map.hosts.end());
  EXPECT_EQ(announced->numerics, "bf16 weights, f32 caches, cpu");
}

TEST_P(SwarmEvents, AJoinDuringGenerationIsPlacedAndTheTextDoesNotChange) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  const PeerId a = swarm.add_host(3, 10), b = swarm.add_host(3, 10);
  ASSERT_TRUE(swarm.wait_until_ready(2, 10s).is_ok());
  PeerId joined = 0;
  const EventRun run = generate_with_event(swarm, GetParam(), 8, [&](DriverSession&) { joined = swarm.add_host(2, 10); });
  EXPECT_EQ(run.ids, stories260k_reference().generated_ids);
  EXPECT_EQ(run.failovers, 0);
  const BlockMapReply map = swarm.settled_map();
  ASSERT_EQ(map.hosts.size(), 3u);
  EXPECT_EQ(assigned(map, a), (BlockRange{0, 3}));
  EXPECT_EQ(assigned(map, b), (BlockRange{2, 5}));
  // Blocks 0, 1, 3, 4 have one host, block 2 two: the leftmost weakest pair is [0, 2).
  EXPECT_EQ(assigned(map, joined), (BlockRange{0, 2}));
}

// Failover with int8 weights: LLM.int8() picks its outlier columns per batch, and prompts (more
// than kStreamingMaxTokens rows) take another kernel path than decode steps, so a replay must
// feed the new host the steps in the shapes decoding used for the rebuilt cache to be the same
// bits. On tinystories-656K and on a synthetic model of real width (TinyLlama's 2048 x 5632, with
// outlier features), killed right after the prompt and in the middle of decoding.
class Int8Failovers : public ::testing::TestWithParam<std::tuple<std::string, std::size_t, bool>> {};

// Written once for all the cases that use it.
std::filesystem::path int8_failover_model(const std::string& name) {
  if (name != "synthetic-2048") return test::models_dir() / name;
  static const test::TempDir dir;
  SyntheticSpec spec;
  spec.hidden_size = 2048;
  spec.intermediate_size = 5632;
  spec.num_layers = 2;
  spec.num_heads = 32;
  spec.num_kv_heads = 4;
  spec.vocab_size = 512;
  spec.dtype = DType::kBF16;
  spec.outlier_dims = 6;
  spec.seed = 11;
  const auto path = dir / "synthetic";
  if (!std::filesystem::exists(path / "config.json")) write_synthetic_checkpoint(spec, path);
  return path;
}

TEST_P(Int8Failovers, AReplayRebuildsTheCacheDecodingBuilt) {
  const auto& [name, kill_at, push] = GetParam();
  const auto model = int8_failover_model(name);
  GenerationRequest request;
  request.prompt_ids = {1, 43, 87, 130, 211, 64, 300, 9};
  request.max_new_tokens = 24;
  EventRun uninterrupted;
  for (bool kill : {false, true}) {
    InprocSwarm swarm(model, DType::kI8);
    const std::int64_t half = swarm.config().num_layers / 2;
    for (int i = 0; i < 2; ++i) {  // [0, half) [half, L) twice: every route splits at the same block
      swarm.add_host(half, 10);
      swarm.add_host(swarm.config().num_layers - half, 10);
    }
    ASSERT_TRUE(swarm.wait_until_ready(4, 20s).is_ok());
    const EventRun run = generate_with_event(swarm, push, kill_at, [&](DriverSession& p) {
      if (kill) swarm.kill(first_host(p));
    }, /*wire_compression=*/false, request);
    ASSERT_EQ(run.ids.size(), 24u);
    EXPECT_EQ(run.failovers, kill ? 1 : 0);
    if (!kill) {
      uninterrupted = run;
      continue;
    }
    EXPECT_EQ(run.ids, uninterrupted.ids) << name << ", killed after token " << kill_at;
    // Bit for bit: the hidden states the rebuilt caches give are the ones decoding gave.
    ASSERT_EQ(run.outputs.size(), uninterrupted.outputs.size());
    EXPECT_EQ(std::memcmp(run.outputs.data(), uninterrupted.outputs.data(), run.outputs.size() * sizeof(float)), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, Int8Failovers,
                         ::testing::Combine(::testing::Values("tinystories-656K", "synthetic-2048"),
                                            ::testing::Values(std::size_t{1}, std::size_t{13}), ::testing::Bool()),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param);
                           for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n + "_kill_after_" + std::to_string(std::get<1>(info.param)) +
                                  (std::get<2>(info.param) ? "_push" : "_relay");
                         });

// The partition row of the fault matrix (tests/tools/run_fault_matrix.sh has the others): the client
// loses contact with the route's first host right after the prompt, early or late; with no
// heartbeats here, its requests time out (after 1 s), it routes around the host, and the text
// is the reference's. Healed, the host still answers.
class SwarmPartitions : public ::testing::TestWithParam<std::tuple<std::size_t, bool>> {};

TEST_P(SwarmPartitions, APartitionedHostIsRoutedAroundAndServesAgainWhenHealed) {
  const auto& [at, push] = GetParam();
  InprocSwarm swarm(test::models_dir() / "stories260K");
  for (int i = 0; i < 4; ++i) swarm.add_host(3, 10);  // [0,3) [2,5) [0,3) [2,5)
  ASSERT_TRUE(swarm.wait_until_ready(4, 10s).is_ok());
  PeerId cut = 0;
  const auto started = std::chrono::steady_clock::now();
  const EventRun run = generate_with_event(swarm, push, at, [&](DriverSession& p) {
    cut = first_host(p);
    swarm.partition(cut);
  }, /*wire_compression=*/false, stories260k_request(), 1s);
  EXPECT_EQ(run.ids, stories260k_reference().generated_ids);
  EXPECT_GE(run.failovers, 1);
  std::printf("partition after token %zu (%s): done in %.1f s with %d failover(s)\n", at, push ? "push" : "relay",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), run.failovers);
  swarm.heal(cut);
  auto info = swarm.client().request_sync(ActorRef<BlockHostProtocol>{{cut, kBlockHostActorId}}, HostInfo{}, 5s);
  EXPECT_TRUE(info.is_ok()) << info.status().to_string();
}

INSTANTIATE_TEST_SUITE_P(Points, SwarmPartitions,
                         ::testing::Combine(::testing::Values(std::size_t{1}, std::size_t{10}, std::size_t{40}), ::testing::Bool()),
                         [](const auto& info) {
                           return "after_" + std::to_string(std::get<0>(info.param)) + (std::get<1>(info.param) ? "_push" : "_relay");
                         });

// Many sessions of one client at once: 8 generations (different prompts, greedy and sampled)
// through 3 hosts, together, while one host is killed; each must give exactly what it gave alone.
TEST(SwarmSessions, EightGenerationsAtOnceEachGiveWhatTheyGaveAlone) {
  InprocSwarm swarm(test::models_dir() / "stories260K");
  for (int i = 0; i < 3; ++i) swarm.add_host(3, 10);  // [0,3) [2,5) [0,3): the first blocks have a replica
  ASSERT_TRUE(swarm.wait_until_ready(3, 10s).is_ok());
  ClientDriverOptions options;
  options.wire_compression = false;  // routes that split elsewhere after the failover give the same bits
  swarm.use_driver(options);
  const ModelEnds ends = ModelEnds::load(swarm.checkpoint(), swarm.config(), DType::kF32);
  std::vector<GenerationRequest> requests(8);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    requests[i].prompt_ids = {1, static_cast<std::int32_t>(300 + 17 * i), static_cast<std::int32_t>(40 + i), 261};
    requests[i].max_new_tokens = 40;
    if (i % 2) requests[i].sampling = SamplingParams{0.8f, 20, 0.95f};
    requests[i].seed = 100 + i;
  }
  std::atomic<std::int64_t> failovers{0};
  auto run = [&](const GenerationRequest& request, const std::function<void(std::size_t, DriverSession&)>& on_token) {
    auto session = DriverSession::open(swarm.client(), swarm.driver(), session_capacity(swarm.config(), request));
    if (!session.is_ok()) return std::vector<std::int32_t>{};
    std::size_t count = 0;
    auto ids = generate(ends, *session.value(), request, [&](std::int32_t) {
      if (on_token) on_token(++count, *session.value());
    }).generated_ids;
    if (auto report = session.value()->report(); report.is_ok()) failovers += report->failovers;
    return ids;
  };
  std::vector<std::vector<std::int32_t>> alone, together(requests.size());
  for (const auto& r : requests) alone.push_back(run(r, nullptr));
  ASSERT_EQ(failovers.load(), 0);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      together[i] = run(requests[i], [&](std::size_t tokens, DriverSession& session) {
        if (i == 3 && tokens == 12) swarm.kill(first_host(session));  // a host that session's route uses
      });
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GE(failovers.load(), 1);  // the sessions routed through the killed host moved
  for (std::size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(alone[i].size(), 40u) << "prompt " << i;
    EXPECT_EQ(together[i], alone[i]) << "prompt " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, SwarmEvents, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "push" : "relay"; });

}  // namespace
}  // namespace sepal

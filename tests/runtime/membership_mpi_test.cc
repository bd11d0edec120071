// Membership across processes, as users launch them:
//   mpirun -np 3 membership_mpi_test swarm GOOD_SECRET_FILE BAD_SECRET_FILE
//     rank 0 listens on a join port and spawns a joiner with the secret (admitted, talks to
//     rank 1, leaves gracefully) and one with a wrong secret (refused, logged); then rank 2 is
//     killed with SIGKILL and the survivors see it failed within the timeout and go on.
//   mpirun -np 2 membership_mpi_test listen PORT_FILE SECRET_FILE     (job A)
//   mpirun -np 1 membership_mpi_test connect PORT_FILE SECRET_FILE    (job B)
//     a separately launched job joins through the port file, talks to rank 1, leaves gracefully.
// Every process prints "<who>: passed" or "<who>: FAILED: why"; tests/run_mpi_test.sh counts them.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <mutex>

#include "runtime/actor_system.h"
#include "runtime/log.h"
#include "runtime/membership.h"
#include "runtime/mpi_transport.h"
#include "runtime/mpi_environment.h"
#include "runtime/process_spawn.h"
#include "runtime/swarm_join.h"
#include "runtime/ucx_transport.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;

const LivenessOptions kLiveness{100ms, 1000ms};
const MembershipOptions kMembership{200ms, 1500ms};
constexpr std::uint32_t kControlActor = 2;

struct EchoReply {
  static constexpr std::uint16_t kTypeId = 0x7301;
  std::string text;
  SEPAL_FIELDS(text)
};
struct Echo {
  static constexpr std::uint16_t kTypeId = 0x7302;
  using Reply = EchoReply;
  std::string text;
  SEPAL_FIELDS(text)
};
struct Command {  // one-way: tells a process what to do next
  static constexpr std::uint16_t kTypeId = 0x7303;
  std::string what;
  SEPAL_FIELDS(what)
};
struct ControlProtocol {
  using accepts = Accepts<Echo, Command>;
};

// Answers echoes and queues commands for the main thread.
class Control final : public TypedActor<Control, ControlProtocol> {
 public:
  std::string name() const override { return "control"; }
  Result<EchoReply> handle(ActorContext& ctx, const Echo& m) {
    return EchoReply{m.text + " from " + std::to_string(ctx.self().peer)};
  }
  void handle(ActorContext&, const Command& m) {
    if (m.what == "die") {
      std::printf("rank %d: dying as asked\n", mpi_world_rank());
      std::fflush(stdout);
      std::raise(SIGKILL);
    }
    std::lock_guard lock(mutex_);
    commands_.push_back(m.what);
    ready_.notify_all();
  }
  bool wait_for(const std::string& what, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return ready_.wait_for(lock, timeout, [&] { return std::find(commands_.begin(), commands_.end(), what) != commands_.end(); });
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::string> commands_;
};

// The Control actor, telling its creator where it lives.
class ControlHandle final : public TypedActor<ControlHandle, ControlProtocol> {
 public:
  explicit ControlHandle(Control** out) { *out = &control_; }
  std::string name() const override { return "control"; }
  Result<EchoReply> handle(ActorContext& ctx, const Echo& m) { return control_.handle(ctx, m); }
  void handle(ActorContext& ctx, const Command& m) { control_.handle(ctx, m); }

 private:
  Control control_;
};

ActorRef<ControlProtocol> control_of(PeerId peer) { return {{peer, kControlActor}}; }

std::string g_who = "?";
ActorSystem* g_system = nullptr;  // stopped (transport flushed) before the process ends
[[noreturn]] void verdict(bool ok, const std::string& why = "") {
  if (g_system) g_system->stop();
  if (ok) std::printf("%s: passed\n", g_who.c_str());
  else std::printf("%s: FAILED: %s\n", g_who.c_str(), why.c_str());
  std::fflush(stdout);
  std::_Exit(ok ? 0 : 1);  // no MPI_Finalize: a killed member would make it wait
}
#define CHECK(cond, why) \
  do {                   \
    if (!(cond)) verdict(false, why); \
  } while (0)

// A process of the swarm: transport, actors, membership.
struct Node {
  LinkKeyAuthority keys;  // the coordinator's (rank 0)
  std::unique_ptr<UcxTransport> transport;
  ThreadPoolScheduler scheduler{2};
  std::unique_ptr<ActorSystem> system;
  Control* control = nullptr;
  std::unique_ptr<Membership> membership;

  void start(const MemberInfo& self, const std::vector<MemberInfo>& members) {
    set_log_prefix(g_who);
    system = std::make_unique<ActorSystem>(*transport, scheduler);
    CHECK(system->start().is_ok(), "actor system did not start");
    g_system = system.get();
    system->spawn_with_id<ControlHandle>(kControlActor, &control);
    membership = std::make_unique<Membership>(*system, self, members, kMembership);
    CHECK(membership->start().is_ok(), "membership did not start");
  }
  Control& ctl() { return *control; }
};

// A rank of a swarm launched together: UCX over MPI_COMM_WORLD, members exchanged, started.
void start_world_node(Node& node, int rank) {
  auto t = UcxTransport::create_over_mpi(MPI_COMM_WORLD, UcxOptions{kLiveness}, &node.keys);
  CHECK(t.is_ok(), t.status().to_string());
  node.transport = std::move(t).value();
  auto members = exchange_members(MPI_COMM_WORLD, rank == 0 ? "coordinator" : "host", *node.transport);
  CHECK(members.is_ok(), members.status().to_string());
  node.start(members->at(rank), members.value());
}

int joiner(Node& node, const std::string& port_file, const SwarmSecret& secret, bool expect_admitted) {
  auto link = connect_to_swarm(port_file, 60000ms);
  CHECK(link.is_ok(), link.status().to_string());
  auto joined = join_swarm(link.value(), secret, "host", [&](PeerId id) -> Result<std::vector<std::uint8_t>> {
    auto t = UcxTransport::create(id, UcxOptions{kLiveness});
    if (!t.is_ok()) return t.status();
    node.transport = std::move(t).value();
    const auto a = node.transport->address();
    return std::vector<std::uint8_t>(reinterpret_cast<const std::uint8_t*>(a.data()),
                                     reinterpret_cast<const std::uint8_t*>(a.data()) + a.size());
  });
  if (!expect_admitted) {
    CHECK(!joined.is_ok() && joined.status().code() == StatusCode::kRefused,
          "a joiner with the wrong secret was not refused: " + joined.status().to_string());
    std::printf("%s: refused as expected (%s)\n", g_who.c_str(), joined.status().message().c_str());
    verdict(true);
  }
  CHECK(joined.is_ok(), "join failed: " + joined.status().to_string());
  g_who = "joiner " + std::to_string(joined->self);
  MemberInfo self;
  for (std::size_t i = 0; i < joined->members.size(); ++i) {
    const MemberInfo& m = joined->members[i];
    if (m.peer == joined->self) {
      self = m;
      continue;
    }
    const auto* bytes = reinterpret_cast<const std::byte*>(m.address.data());
    CHECK(node.transport->connect(m.peer, {bytes, m.address.size()}, joined->keys[i]).is_ok(), "cannot connect to member " + std::to_string(m.peer));
  }
  node.start(self, joined->members);
  CHECK(node.membership->wait_until_heard_from_all(10000ms), "not every member acknowledged the joiner");
  // Full mesh: talk to rank 1 directly, not through the coordinator.
  auto reply = node.system->request_sync(control_of(1), Echo{"hello"}, 5000ms);
  CHECK(reply.is_ok(), "echo from member 1 failed: " + reply.status().to_string());
  CHECK(reply->text == "hello from 1", "unexpected echo: " + reply->text);
  const Status left = node.membership->leave(5000ms);
  CHECK(left.is_ok(), "graceful leave was not acknowledged: " + left.to_string());
  verdict(true);
}

// The admissions a listener made, in order, for the main thread.
class Admissions {
 public:
  void add(Result<MemberInfo> r) {
    std::lock_guard lock(mutex_);
    results_.push_back(std::move(r));
    ready_.notify_all();
  }
  Result<MemberInfo> next(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!ready_.wait_for(lock, timeout, [&] { return !results_.empty(); })) {
      return error(StatusCode::kTimeout, "no joiner came");
    }
    auto r = std::move(results_.front());
    results_.pop_front();
    return r;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Result<MemberInfo>> results_;
};

int swarm(int argc, char** argv) {
  CHECK(argc >= 5, "usage: swarm GOOD_SECRET_FILE BAD_SECRET_FILE PORT_FILE");
  const int rank = mpi_world_rank();
  g_who = "rank " + std::to_string(rank);
  CHECK(mpi_world_size() == 3, "run with mpirun -np 3");
  auto secret = SwarmSecret::from_file(argv[2]);
  CHECK(secret.is_ok(), secret.status().to_string());
  Node node;
  start_world_node(node, rank);
  Membership& m = *node.membership;
  CHECK(m.wait_until([](const auto& a) { return a.size() == 3; }, 5000ms), "initial members not all alive");
  MPI_Barrier(MPI_COMM_WORLD);

  if (rank == 0) {
    Admissions admissions;
    auto listener = JoinListener::open(argv[4], [&](JoinConnection& link) {
      admissions.add(admit_joiner(link, secret.value(), node.keys, m, "spawned child"));
    });
    CHECK(listener.is_ok(), listener.status().to_string());
    // 1. A spawned joiner with the secret.
    auto inter = spawn_processes(argv[0], {"child", argv[2], "admitted", argv[4]}, 1, 60000ms);
    CHECK(inter.is_ok(), "spawn failed: " + inter.status().to_string());
    auto admitted = admissions.next(60000ms);
    CHECK(admitted.is_ok(), "admission failed: " + admitted.status().to_string());
    const PeerId joiner_id = admitted->peer;
    CHECK(m.wait_until([](const auto& a) { return a.size() == 4; }, 10000ms), "joiner not seen alive");
    CHECK(m.wait_until([&](const auto&) { return m.state(joiner_id) == MemberState::kLeft; }, 20000ms), "joiner did not leave");
    // 2. A spawned joiner with a wrong secret is refused, and nothing changes.
    auto inter2 = spawn_processes(argv[0], {"child", argv[3], "refused", argv[4]}, 1, 60000ms);
    CHECK(inter2.is_ok(), "second spawn failed: " + inter2.status().to_string());
    auto refused = admissions.next(60000ms);
    CHECK(!refused.is_ok() && refused.status().code() == StatusCode::kRefused, "wrong secret admitted: " + refused.status().to_string());
    CHECK(m.alive().size() == 3, "membership changed after a refused join");
    // 3. Kill -9 of rank 2: seen as failed within the timeout, and the rest goes on.
    (void)node.system->send(control_of(1), Command{"joins done"});
    const auto killed_at = std::chrono::steady_clock::now();
    (void)node.system->send(control_of(2), Command{"die"});
    CHECK(m.wait_until([&](const auto&) { return m.state(2) == MemberState::kFailed; }, 5000ms), "rank 2 not seen failed");
    const auto seen_after = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed_at);
    std::printf("rank 0: rank 2 seen failed %lld ms after the kill (failure timeout %lld ms)\n",
                static_cast<long long>(seen_after.count()), static_cast<long long>(kMembership.failure_timeout.count()));
    CHECK(seen_after <= kMembership.failure_timeout + 500ms, "failure seen later than the timeout allows");
    auto echo = node.system->request_sync(control_of(1), Echo{"still here"}, 5000ms);
    CHECK(echo.is_ok(), "survivors cannot talk: " + echo.status().to_string());
    (void)node.system->send(control_of(1), Command{"done"});
    verdict(true);
  }
  // Ranks 1 and 2 follow the joins through their own membership.
  CHECK(m.wait_until([](const auto& a) { return a.size() == 4; }, 20000ms), "joiner not seen alive");
  CHECK(m.wait_until([](const auto& a) { return a.size() == 3; }, 20000ms), "joiner's leave not seen");
  CHECK(m.state(3) == MemberState::kLeft, "joiner was not marked as left");
  if (rank == 2) {
    std::this_thread::sleep_for(60s);  // rank 0 kills this rank
    verdict(false, "was not killed");
  }
  CHECK(m.wait_until([&](const auto&) { return m.state(2) == MemberState::kFailed; }, 30000ms), "rank 2 not seen failed");
  // Wait for rank 0's final word before leaving.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline && m.state(0) == MemberState::kAlive) {
    if (node.ctl().wait_for("done", 100ms)) verdict(true);
  }
  verdict(false, "no final word from rank 0");
}

int child(int argc, char** argv) {
  g_who = "spawned child";
  CHECK(argc >= 5, "usage: child SECRET_FILE admitted|refused PORT_FILE");
  auto secret = SwarmSecret::from_file(argv[2]);
  CHECK(secret.is_ok(), secret.status().to_string());
  Node node;
  return joiner(node, argv[4], secret.value(), std::string(argv[3]) == "admitted");
}

int listen(int argc, char** argv) {
  CHECK(argc >= 4, "usage: listen PORT_FILE SECRET_FILE");
  const int rank = mpi_world_rank();
  g_who = "listening rank " + std::to_string(rank);
  auto secret = SwarmSecret::from_file(argv[3]);
  CHECK(secret.is_ok(), secret.status().to_string());
  Node node;
  start_world_node(node, rank);
  Membership& m = *node.membership;
  std::unique_ptr<JoinListener> listener;
  if (rank == 0) {
    auto l = JoinListener::open(argv[2], [&](JoinConnection& link) {
      auto r = admit_joiner(link, secret.value(), node.keys, m, "connected job");
      if (!r.is_ok()) std::printf("listening rank 0: %s\n", r.status().to_string().c_str());
    });
    CHECK(l.is_ok(), l.status().to_string());
    listener = std::move(l).value();
  }
  CHECK(m.wait_until([](const auto& a) { return a.size() == 3; }, 60000ms), "no joiner from the other job");
  CHECK(m.wait_until([](const auto& a) { return a.size() == 2; }, 30000ms), "the joiner did not leave");
  CHECK(m.state(2) == MemberState::kLeft, "the joiner was not marked as left");
  MPI_Barrier(MPI_COMM_WORLD);
  listener.reset();
  verdict(true);
}

int connect(int argc, char** argv) {
  CHECK(argc >= 4, "usage: connect PORT_FILE SECRET_FILE");
  g_who = "connecting job";
  auto secret = SwarmSecret::from_file(argv[3]);
  CHECK(secret.is_ok(), secret.status().to_string());
  Node node;
  return joiner(node, argv[2], secret.value(), true);
}

struct Numbered {
  static constexpr std::uint16_t kTypeId = 0x7304;
  std::uint64_t index = 0;
  TensorPayload data;
  SEPAL_FIELDS(index, data)
};

// Collects frames delivered by a transport.
class Collector final : public TransportHandler {
 public:
  void on_frame(PeerId from, std::shared_ptr<const Buffer> frame) override {
    std::lock_guard lock(mutex_);
    frames_.emplace_back(from, std::move(frame));
    ready_.notify_all();
  }
  void on_peer_failed(PeerId, const Status&) override {}
  std::optional<std::pair<PeerId, std::shared_ptr<const Buffer>>> next(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!ready_.wait_for(lock, timeout, [&] { return !frames_.empty(); })) return std::nullopt;
    auto f = std::move(frames_.front());
    frames_.pop_front();
    return f;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::pair<PeerId, std::shared_ptr<const Buffer>>> frames_;
};

// The MPI transport across the intercommunicator MPI_Comm_spawn creates: 300 ordered frames each
// way, then a 16 MiB frame each way.
void exchange_over(MpiTransport& t, PeerId other, Collector& inbox) {
  constexpr std::uint64_t kCount = 300;
  auto big = std::make_shared<const std::vector<std::uint8_t>>(std::size_t{16} << 20, 0x3c);
  for (std::uint64_t i = 0; i < kCount; ++i) CHECK(t.send(other, encode(Envelope{}, Numbered{i, {}})).is_ok(), "send failed");
  CHECK(t.send(other, encode(Envelope{}, Numbered{kCount, share_vector<std::uint8_t>(ElementType::kU8, {std::int64_t{16} << 20}, big)})).is_ok(), "big send failed");
  for (std::uint64_t i = 0; i <= kCount; ++i) {
    auto f = inbox.next(20000ms);
    CHECK(f.has_value(), "frame " + std::to_string(i) + " did not arrive over the intercommunicator");
    CHECK(f->first == other, "frame from an unexpected peer");
    auto m = decode_message<Numbered>(f->second);
    CHECK(m.is_ok() && m->index == i, "frame out of order or malformed");
    if (i == kCount) CHECK(m->data.bytes == big->size() && m->data.as<std::uint8_t>()[12345] == 0x3c, "16 MiB frame damaged");
  }
}

int intercomm_parent(int, char** argv) {
  g_who = "intercomm parent";
  auto inter = spawn_processes(argv[0], {"intercomm-child"}, 1, 60000ms);
  CHECK(inter.is_ok(), "spawn failed: " + inter.status().to_string());
  auto t = MpiTransport::create(MPI_COMM_SELF, kLiveness);
  CHECK(t.is_ok(), t.status().to_string());
  CHECK(t.value()->add_peer(1, inter.value(), 0).is_ok(), "add_peer failed");
  Collector inbox;
  CHECK(t.value()->start(&inbox).is_ok(), "start failed");
  exchange_over(*t.value(), 1, inbox);
  t.value()->stop();
  verdict(true);
}

int intercomm_child(int, char**) {
  g_who = "intercomm child";
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  CHECK(parent != MPI_COMM_NULL, "not spawned");
  auto t = MpiTransport::create_detached(1, kLiveness);  // the parent is 0, this child 1
  CHECK(t.is_ok(), t.status().to_string());
  CHECK(t.value()->add_peer(0, parent, 0).is_ok(), "add_peer failed");
  Collector inbox;
  CHECK(t.value()->start(&inbox).is_ok(), "start failed");
  exchange_over(*t.value(), 0, inbox);
  t.value()->stop();
  verdict(true);
}

}  // namespace
}  // namespace sepal

int main(int argc, char** argv) {
  using namespace sepal;
  if (Status s = mpi_init(&argc, &argv); !s.is_ok()) {
    std::printf("FAILED: %s\n", s.to_string().c_str());
    return 1;
  }
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "swarm") return swarm(argc, argv);
  if (mode == "child") return child(argc, argv);
  if (mode == "listen") return listen(argc, argv);
  if (mode == "connect") return connect(argc, argv);
  if (mode == "intercomm") return intercomm_parent(argc, argv);
  if (mode == "intercomm-child") return intercomm_child(argc, argv);
  std::printf("FAILED: unknown mode '%s' (swarm, child, listen, connect)\n", mode.c_str());
  return 2;
}

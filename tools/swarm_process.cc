#include "tools/swarm_process.h"

#include <future>
#include <thread>

#include "kernels/error.h"
#include "runtime/mpi_environment.h"
#include "runtime/mpi_transport.h"
#include "runtime/ucx_transport.h"
#include "runtime/wan_transport.h"

namespace sepal::tools {
namespace {

// Keepalives every 100 ms; a peer silent for 2 s is dead (a stopped or partitioned one). A killed
// process is found sooner, by UCX itself: a broken connection between nodes, and on one node its
// keepalive, which checks that the peer process still exists (UcxTransport sets its interval).
// Chunks count as proof of life, so a busy peer in the middle of a large frame is not taken for
// dead, and a 1 s timeout proved too short with every core busy.
const LivenessOptions kLiveness{std::chrono::milliseconds(100), std::chrono::milliseconds(2000)};

std::unique_ptr<Transport> wrap(std::unique_ptr<Transport> t, const WanConfig& wan) {
  if (wan.enabled()) return std::make_unique<WanTransport>(std::move(t), wan);
  return t;
}

}  // namespace

std::unique_ptr<SwarmProcess> SwarmProcess::over_comm(MPI_Comm comm, const std::string& role,
                                                      const SwarmSettings& settings) {
  std::unique_ptr<SwarmProcess> p(new SwarmProcess());
  if (settings.transport == "mpi") {
    auto t = MpiTransport::create(comm, kLiveness);
    if (!t.is_ok()) fail(t.status().to_string());
    p->transport_ = wrap(std::move(t).value(), settings.wan);
  } else {
    auto t = UcxTransport::create_over_mpi(comm, UcxOptions{kLiveness, settings.authenticate}, &p->keys_);
    if (!t.is_ok()) fail(t.status().to_string());
    p->transport_ = wrap(std::move(t).value(), settings.wan);
  }
  auto members = exchange_members(comm, role, *p->transport_);
  if (!members.is_ok()) fail(members.status().to_string());
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  p->start(members->at(static_cast<std::size_t>(rank)), members.value(), settings);
  return p;
}

std::unique_ptr<SwarmProcess> SwarmProcess::join(const std::string& port_file, const SwarmSecret& secret,
                                                 const std::string& role, const SwarmSettings& settings) {
  if (settings.transport != "ucx") fail("joining a running swarm needs --transport ucx");
  auto inter = connect_to_swarm(port_file, std::chrono::seconds(60));
  if (!inter.is_ok()) fail("cannot reach the swarm through ", port_file, ": ", inter.status().message());
  std::unique_ptr<SwarmProcess> p(new SwarmProcess());
  auto joined = join_swarm(inter.value(), secret, role, [&](PeerId id) -> Result<std::vector<std::uint8_t>> {
    auto t = UcxTransport::create(id, UcxOptions{kLiveness, settings.authenticate});
    if (!t.is_ok()) return t.status();
    p->transport_ = wrap(std::move(t).value(), settings.wan);
    const auto a = p->transport_->address();
    return std::vector<std::uint8_t>(reinterpret_cast<const std::uint8_t*>(a.data()),
                                     reinterpret_cast<const std::uint8_t*>(a.data()) + a.size());
  });
  if (!joined.is_ok()) fail("the swarm did not admit this process: ", joined.status().message());
  MemberInfo self;
  for (std::size_t i = 0; i < joined->members.size(); ++i) {
    const MemberInfo& m = joined->members[i];
    if (m.peer == joined->self) {
      self = m;
      continue;
    }
    const auto* bytes = reinterpret_cast<const std::byte*>(m.address.data());
    if (Status s = p->transport_->connect(m.peer, {bytes, m.address.size()}, joined->keys[i]); !s.is_ok()) {
      fail("cannot connect to member ", m.peer, ": ", s.message());
    }
  }
  p->start(self, joined->members, settings);
  return p;
}

void SwarmProcess::start(const MemberInfo& self, const std::vector<MemberInfo>& members, const SwarmSettings& settings) {
  scheduler_ = std::make_unique<ThreadPoolScheduler>(2);
  system_ = std::make_unique<ActorSystem>(*transport_, *scheduler_);
  if (Status s = system_->start(); !s.is_ok()) fail(s.to_string());
  membership_ = std::make_unique<Membership>(*system_, self, members, settings.membership);
  if (Status s = membership_->start(); !s.is_ok()) fail(s.to_string());
}

void SwarmProcess::listen(const std::string& port_file, SwarmSecret secret) {
  auto l = JoinListener::open(port_file, [this, secret](MPI_Comm inter) {
    auto r = admit_joiner(inter, secret, keys_, *membership_, "joining process");
    if (!r.is_ok()) log(LogLevel::kWarn, "join refused: ", r.status().to_string());
  });
  if (!l.is_ok()) fail("cannot listen for joining hosts: ", l.status().message());
  listener_ = std::move(l).value();
}

void SwarmProcess::stop() {
  if (stopped_) return;
  stopped_ = true;
  system_->stop();
}

SwarmProcess::~SwarmProcess() {
  if (system_) stop();
  if (scheduler_) scheduler_->shutdown();
}

MPI_Comm spawn_and_merge(const std::string& command, const std::vector<std::string>& args, int count,
                         std::chrono::milliseconds timeout) {
  if (Status s = mpi_init(); !s.is_ok()) fail(s.to_string());
  struct Outcome {
    int rc = MPI_SUCCESS;
    MPI_Comm merged = MPI_COMM_NULL;
  };
  auto promise = std::make_shared<std::promise<Outcome>>();
  auto future = promise->get_future();
  // MPI_Comm_spawn has no timeout of its own (and sometimes hangs: docs/operations.md), so it runs
  // on a thread that is abandoned if it does not return in time.
  std::thread([promise, command, args, count] {
    std::vector<std::string> owned = args;
    std::vector<char*> argv;
    for (auto& a : owned) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<int> errors(static_cast<std::size_t>(count), MPI_SUCCESS);
    Outcome o;
    MPI_Comm inter = MPI_COMM_NULL;
    o.rc = MPI_Comm_spawn(command.c_str(), argv.data(), count, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter, errors.data());
    for (int e : errors) {
      if (o.rc == MPI_SUCCESS && e != MPI_SUCCESS) o.rc = e;
    }
    if (o.rc == MPI_SUCCESS) o.rc = MPI_Intercomm_merge(inter, /*high=*/0, &o.merged);
    promise->set_value(o);
  }).detach();
  if (future.wait_for(timeout) != std::future_status::ready) {
    fail("MPI_Comm_spawn of ", count, " hosts did not return in ", timeout.count() / 1000, " s");
  }
  const Outcome o = future.get();
  if (o.rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(o.rc, text, &length);
    fail("cannot spawn ", count, " hosts: ", std::string(text, static_cast<std::size_t>(length)));
  }
  return o.merged;
}

MPI_Comm merge_with_parent() {
  if (Status s = mpi_init(); !s.is_ok()) fail(s.to_string());
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent == MPI_COMM_NULL) fail("not started by sepal generate --hosts (no parent process)");
  MPI_Comm merged = MPI_COMM_NULL;
  if (MPI_Intercomm_merge(parent, /*high=*/1, &merged) != MPI_SUCCESS) fail("cannot merge with the parent process");
  return merged;
}

}  // namespace sepal::tools

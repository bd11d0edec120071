#include "actors/swarm_node.h"

namespace sepal {

Result<std::unique_ptr<SwarmNode>> SwarmNode::over_comm(MPI_Comm comm, const std::string& role,
                                                        const SwarmNodeSettings& settings) {
  std::unique_ptr<SwarmNode> node(new SwarmNode());
  auto transport = transport_over_comm(comm, settings.transport, &node->keys_);
  if (!transport.is_ok()) return transport.status();
  node->transport_ = std::move(transport).value();
  auto members = exchange_members(comm, role, *node->transport_);
  if (!members.is_ok()) return members.status();
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  SEPAL_RETURN_IF_ERROR(node->start(members->at(static_cast<std::size_t>(rank)), members.value(), settings));
  return node;
}

Result<std::unique_ptr<SwarmNode>> SwarmNode::join(const std::string& port_file, const SwarmSecret& secret,
                                                   const std::string& role, const SwarmNodeSettings& settings) {
  if (settings.transport.name != "ucx") return error(StatusCode::kInvalidArgument, "joining a running swarm needs --transport ucx");
  auto inter = connect_to_swarm(port_file, settings.join_timeout);
  if (!inter.is_ok()) {
    return error(inter.status().code(), "cannot reach the swarm through ", port_file, ": ", inter.status().message());
  }
  std::unique_ptr<SwarmNode> node(new SwarmNode());
  node->joined_ = true;
  auto joined = join_swarm(inter.value(), secret, role, [&](PeerId id) -> Result<std::vector<std::uint8_t>> {
    auto t = transport_for_joiner(id, settings.transport);
    if (!t.is_ok()) return t.status();
    node->transport_ = std::move(t).value();
    const auto a = node->transport_->address();
    return std::vector<std::uint8_t>(reinterpret_cast<const std::uint8_t*>(a.data()),
                                     reinterpret_cast<const std::uint8_t*>(a.data()) + a.size());
  });
  if (!joined.is_ok()) {
    return error(joined.status().code(), "cannot join the swarm: ", joined.status().message());
  }
  MemberInfo self;
  for (std::size_t i = 0; i < joined->members.size(); ++i) {
    const MemberInfo& m = joined->members[i];
    if (m.peer == joined->self) {
      self = m;
      continue;
    }
    const auto* bytes = reinterpret_cast<const std::byte*>(m.address.data());
    if (Status s = node->transport_->connect(m.peer, {bytes, m.address.size()}, joined->keys[i]); !s.is_ok()) {
      return error(s.code(), "cannot connect to member ", m.peer, ": ", s.message());
    }
  }
  SEPAL_RETURN_IF_ERROR(node->start(self, joined->members, settings));
  return node;
}

Status SwarmNode::start(const MemberInfo& self, const std::vector<MemberInfo>& members, const SwarmNodeSettings& settings) {
  MembershipOptions membership = settings.membership;
  membership.coordinator = world_.coordinator;
  scheduler_ = std::make_unique<ThreadPoolScheduler>(settings.scheduler_threads);
  system_ = std::make_unique<ActorSystem>(*transport_, *scheduler_);
  SEPAL_RETURN_IF_ERROR(system_->start());
  membership_ = std::make_unique<Membership>(*system_, self, members, membership);
  return membership_->start();
}

Status SwarmNode::listen(const std::string& port_file, SwarmSecret secret, const std::string& advertised_host) {
  auto l = JoinListener::open(
      port_file,
      [this, secret](JoinConnection& link) {
        auto r = admit_joiner(link, secret, keys_, *membership_, "from " + link.peer());
        if (!r.is_ok()) log(LogLevel::kWarn, r.status().message());
      },
      advertised_host);
  if (!l.is_ok()) return error(l.status().code(), "cannot listen for joining hosts: ", l.status().message());
  listener_ = std::move(l).value();
  return Status::ok();
}

void SwarmNode::stop() {
  if (stopped_) return;
  stopped_ = true;
  listener_.reset();  // no admissions into a stopping node
  system_->stop();
}

SwarmNode::~SwarmNode() {
  if (system_) stop();
  if (scheduler_) scheduler_->shutdown();
}

}  // namespace sepal

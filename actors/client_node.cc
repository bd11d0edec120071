#include "actors/client_node.h"

#include <cstdio>
#include <iostream>

#include "actors/balancer_route_planner.h"
#include "actors/protocol/block_host.h"
#include "actors/swarm_node.h"

namespace sepal {

ActorRef<ClientDriverProtocol> add_client_actors(ActorSystem& system, const SwarmWorld& world, ClientActorSettings settings) {
  BalancerOptions balancer;
  balancer.on_change = std::move(settings.on_block_map_change);
  balancer.may_host = std::move(settings.may_host);
  balancer.move_timeout = settings.move_timeout;
  system.spawn_with_id<Balancer>(kBalancerActorId, balancer);
  BalancerRoutePlannerOptions planner;
  planner.route_wait = settings.route_wait;
  return add_client_driver(system,
                           std::make_unique<BalancerRoutePlanner>(system, kClientDriverActorId, world.balancer(), planner),
                           settings.driver);
}

Result<std::unique_ptr<ClientNode>> ClientNode::start(std::unique_ptr<SwarmNode> node, ClientNodeSettings settings) {
  std::unique_ptr<ClientNode> client(new ClientNode());
  Membership& membership = node->membership();
  if (!settings.actors.may_host) {
    settings.actors.may_host = [&membership](PeerId peer) {
      for (const MemberInfo& m : membership.alive()) {
        if (m.peer == peer) return m.role == kHostRole;
      }
      return false;
    };
  }
  client->driver_ = add_client_actors(node->system(), node->world(), std::move(settings.actors));
  client->node_ = std::move(node);
  auto ready = await_swarm_ready(client->node_->system(), client->driver_, settings.expected_hosts, settings.ready_timeout);
  if (!ready.is_ok()) return ready.status();
  return client;
}

ClientNode::~ClientNode() { shutdown(); }

Result<std::unique_ptr<DriverSession>> ClientNode::open(std::int64_t capacity, TensorPayload prompts,
                                                        std::int64_t prompt_offset, AdapterPayload adapter) {
  return DriverSession::open(node_->system(), driver_, capacity, std::move(prompts), prompt_offset, std::move(adapter));
}

Result<BlockMapReply> ClientNode::block_map() {
  return fetch_block_map(node_->system(), node_->world().balancer(), std::chrono::seconds(10));
}

void ClientNode::shutdown() {
  if (shut_down_ || !node_) return;
  shut_down_ = true;
  // What the command printed goes out now: ending the swarm and MPI can take the process down
  // without the usual flush at exit (a finalize that waits on a dead rank is cut short).
  std::cout.flush();
  std::fflush(nullptr);
  const PeerId self = node_->self();
  for (const auto& m : node_->membership().alive()) {
    if (m.peer == self) continue;
    (void)node_->system().send(ActorRef<BlockHostProtocol>{{m.peer, kBlockHostActorId}}, Shutdown{"client finished"});
  }
  // Hosts leave the membership as they end; waiting for that keeps spawned hosts from outliving
  // this process (their output goes through it).
  (void)node_->membership().wait_until([self](const std::vector<MemberInfo>& alive) {
    return alive.size() == 1 && alive.front().peer == self;
  }, std::chrono::seconds(10));
  node_->stop();
}

}  // namespace sepal

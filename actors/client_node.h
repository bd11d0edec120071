#pragma once
// The client's node: on the coordinator's actor system, the balancer (placing the hosts as they
// announce themselves) and the client driver (routing the sessions through them, with a planner
// that asks that balancer). add_client_actors() puts them on any actor system, so the tests'
// in-process swarms are built as the real one is; ClientNode adds them to a SwarmNode, waits for
// the swarm to be ready, and ends the hosts when the client is done.
//
// Thread-safety: ClientNode's methods are for the thread that owns it; sessions may be used from
// other threads (actors/blocking_facade.h).

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "actors/balancer.h"
#include "actors/client_driver.h"
#include "actors/blocking_facade.h"
#include "actors/node_settings.h"
#include "actors/swarm_world.h"

namespace sepal {

class SwarmNode;

struct ClientActorSettings {
  ClientDriverOptions driver;                        ///< num_blocks, push, wire compression, ...
  std::chrono::milliseconds route_wait{30000};       ///< a step waits this long for a host of each block
  /// Called after every change of the block map (on the balancer's turn).
  std::function<void(const BlockMapReply&, const std::string& event)> on_block_map_change;
  /// Whether a peer was admitted as a block host (null: any peer may host).
  std::function<bool(PeerId)> may_host;
  std::chrono::milliseconds move_timeout{60000};     ///< BalancerOptions::move_timeout
};

/// Adds the balancer and the client driver of `world`'s coordinator to `system`; the driver.
ActorRef<ClientDriverProtocol> add_client_actors(ActorSystem& system, const SwarmWorld& world, ClientActorSettings settings);

struct ClientNodeSettings {
  ClientActorSettings actors;
  std::int64_t expected_hosts = 0;                  ///< hosts that must be placed and measured first
  std::chrono::milliseconds ready_timeout{std::chrono::minutes(5)};
};

class ClientNode {
 public:
  /// Adds the client's actors to `node` (the coordinator) and waits until the swarm can serve.
  static Result<std::unique_ptr<ClientNode>> start(std::unique_ptr<SwarmNode> node, ClientNodeSettings settings);
  /// shutdown().
  ~ClientNode();

  /// A session of `capacity` positions through every block (with deep prompts and adapters:
  /// DriverSession::open).
  Result<std::unique_ptr<DriverSession>> open(std::int64_t capacity, TensorPayload prompts = {},
                                              std::int64_t prompt_offset = 0, AdapterPayload adapter = {});
  /// The balancer's block map.
  Result<BlockMapReply> block_map();
  /// The client driver (training passes go to it: actors/swarm_training.h).
  ActorRef<ClientDriverProtocol> driver() const { return driver_; }
  SwarmNode& node() { return *node_; }
  /// Tells every host to end and waits (up to 10 s) until they have left; then stops the node.
  void shutdown();

 private:
  ClientNode() = default;
  std::unique_ptr<SwarmNode> node_;
  ActorRef<ClientDriverProtocol> driver_;
  bool shut_down_ = false;
};

}  // namespace sepal

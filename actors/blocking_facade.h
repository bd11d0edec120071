#pragma once
// The blocking side of the actors, for threads that can wait: the generation loop, the nodes'
// main threads, the commands, tests. Each call is a request to an actor and waits for its answer,
// so none may be made from an actor's handler; inside actors/, only this file waits. Many threads
// may each run their own session of the client driver at once; the driver interleaves them.
//
// Thread-safety: a DriverSession belongs to one thread at a time; the functions are thread-safe.

#include <chrono>
#include <memory>
#include <span>
#include <vector>

#include "actors/protocol/balancer.h"
#include "actors/protocol/client_driver.h"
#include "actors/protocol/draft_decoder.h"
#include "actors/protocol/host_agent.h"
#include "model/generation.h"
#include "runtime/actor_system.h"

namespace sepal {

/// An inference session of the driver as a BlockPipeline, so that the generation loop
/// (model/generation.h) drives a swarm as it drives local blocks.
class DriverSession final : public BlockPipeline {
 public:
  /// Opens a session of `capacity` positions through every block; the error names the host and
  /// its reason when no route opens.
  /// `prompts`: a tuned prompt's deep prompts for every block (OpenInference), or empty;
  /// `adapter`: PEQA or LoRA adapters of every block, or empty.
  static Result<std::unique_ptr<DriverSession>> open(ActorSystem& system, ActorRef<ClientDriverProtocol> driver,
                                                     std::int64_t capacity, TensorPayload prompts = {},
                                                     std::int64_t prompt_offset = 0, AdapterPayload adapter = {});
  /// Closes the session (its hosts free their caches).
  ~DriverSession() override;

  /// Throws sepal::Error with the driver's one-line reason when the step fails.
  void forward(float* hidden, std::int64_t n) override;
  std::int64_t length() const override { return length_; }
  /// Token trees run on the hosts; a kept path travels with the next step (no round trip of its
  /// own), so length() counts it at once.
  bool runs_trees() const override { return true; }
  void forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents) override;
  void keep_path(std::span<const std::int32_t> path) override;
  std::uint64_t id() const { return id_; }
  /// Route and counters.
  Result<InferenceReport> report() const;

  /// Time this session's thread waited for the swarm's answers: every step, and the steps of
  /// one row (decoding) apart. The rest of a generation's time is the client's own work.
  struct Waits {
    std::int64_t steps = 0, single_row_steps = 0;
    double seconds = 0, single_row_seconds = 0;
  };
  const Waits& waits() const { return waits_; }

 private:
  DriverSession(ActorSystem& system, ActorRef<ClientDriverProtocol> driver, std::uint64_t id, std::int64_t hidden_size)
      : system_(system), driver_(driver), id_(id), hidden_size_(hidden_size) {}

  // One step through the driver (InferenceStep), with the kept path waiting for it.
  void step(float* hidden, std::int64_t n, std::span<const std::int32_t> parents);

  ActorSystem& system_;
  ActorRef<ClientDriverProtocol> driver_;
  std::uint64_t id_;
  std::int64_t hidden_size_;
  std::int64_t length_ = 0;
  std::vector<std::int32_t> keep_;  // a path of the last tree, sent with the next step
  Waits waits_;
};

/// A draft of the draft decoder (actors/draft_decoder.h) as a DraftSource, so that the generation
/// loop drafts through it: keep() is sent with the next propose(), and verifying() lets the
/// decoder prepare the next tree meanwhile. Errors throw sepal::Error with the decoder's reason.
class DraftDecoderSession final : public DraftSource {
 public:
  DraftDecoderSession(ActorSystem& system, ActorRef<DraftDecoderProtocol> decoder, std::int64_t capacity);
  /// Closes the draft.
  ~DraftDecoderSession() override;
  void start(std::span<const std::int32_t> prompt) override;
  TokenTree propose(std::int32_t root, std::int64_t size) override;
  void keep(std::span<const std::int32_t> path) override;
  void verifying(const TokenTree& tree) override;
  std::int64_t length() const override { return length_; }
  /// Not for a remote draft: throws.
  void rewind(std::int64_t length, std::span<const std::int32_t> tokens) override;
  /// Trees the decoder had prepared during the last verification (its guess was right).
  std::int64_t anticipated() const { return anticipated_; }

 private:
  ActorSystem& system_;
  ActorRef<DraftDecoderProtocol> decoder_;
  std::int64_t capacity_;
  std::uint64_t id_ = 0;
  std::int64_t length_ = 0;
  std::vector<std::int32_t> keep_;
  std::int64_t anticipated_ = 0;
};

/// Waits until the driver's swarm can serve (AwaitSwarmReady); the block map then.
Result<BlockMapReply> await_swarm_ready(ActorSystem& system, ActorRef<ClientDriverProtocol> driver,
                                        std::int64_t min_hosts, std::chrono::milliseconds timeout);

/// The balancer's block map.
Result<BlockMapReply> fetch_block_map(ActorSystem& system, ActorRef<BalancerProtocol> balancer,
                                      std::chrono::milliseconds timeout);

/// Has the host agent join the swarm (JoinSwarm); the blocks it serves then.
Result<HostJoined> join_swarm(ActorSystem& system, ActorRef<HostAgentProtocol> agent, std::chrono::milliseconds timeout);
/// Has the host agent leave gracefully (LeaveSwarm); an error when the balancer did not acknowledge.
Status leave_swarm(ActorSystem& system, ActorRef<HostAgentProtocol> agent);

}  // namespace sepal

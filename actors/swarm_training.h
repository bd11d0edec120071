#pragma once
// The blocks of a training run served by a swarm: TrainingBlocks (model/prompt_tuning.h) over the
// client driver's training passes (actors/protocol/client_driver.h, TrainingPass). Every
// micro-batch of a step is sent at once, so the hosts work on several (a pipeline); hosts that
// fail are replaced inside the driver. Blocks the calling thread (actors/blocking_facade.h rules).
//
// Thread-safety: belongs to one trainer thread.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>

#include "actors/protocol/client_driver.h"
#include "model/prompt_tuning.h"
#include "runtime/actor_system.h"

namespace sepal {

class SwarmTrainingBlocks final : public TrainingBlocks {
 public:
  /// Sends passes to the driver and returns their answers in order, once all have come.
  using PassRunner = std::function<std::vector<Result<TrainingPassDone>>(std::vector<TrainingPass>)>;
  /// Passes go to `driver` through `system`, all at once, each waited for up to `timeout`.
  SwarmTrainingBlocks(ActorSystem& system, ActorRef<ClientDriverProtocol> driver, const ModelConfig& config,
                      std::chrono::milliseconds timeout = std::chrono::minutes(10));
  /// Passes go through `runner` (tests step a virtual clock in it).
  SwarmTrainingBlocks(PassRunner runner, const ModelConfig& config);
  /// Throws sepal::Error with the driver's one-line reason when a pass fails.
  void forward(std::span<PromptedBatch* const> batches, const BlockTuning& tuning, bool backward_follows) override;
  void backward(std::span<const PromptedBatch* const> inputs, std::span<std::vector<float>* const> grads,
                const BlockTuning& tuning, float* prompt_grads, float* adapter_grads) override;

  /// Host requests made and failed hosts replaced, over every pass so far.
  std::int64_t hops() const { return hops_; }
  std::int64_t failovers() const { return failovers_; }
  /// Tensor bytes between the client driver and the hosts (requests and replies), so far.
  std::int64_t tensor_bytes() const { return tensor_bytes_; }

 private:
  // Sends every pass at once and waits for all; the replies in order.
  std::vector<TrainingPassDone> run(std::vector<TrainingPass> passes);

  PassRunner runner_;
  ModelConfig config_;
  std::int64_t num_blocks_, hidden_size_;
  std::uint64_t next_pass_ = 0;
  std::deque<std::uint64_t> kept_;  ///< forwards awaiting their backward, in order
  std::int64_t hops_ = 0, failovers_ = 0, tensor_bytes_ = 0;
};

}  // namespace sepal

#include "actors/swarm_training.h"

#include "actors/adapter_payload.h"

#include <future>

#include "kernels/activation.h"
#include "kernels/error.h"

namespace sepal {
namespace {

TensorPayload prompts_payload(const DeepPrompts* prompts, std::int64_t blocks, std::int64_t hidden) {
  if (!prompts || prompts->count == 0) return {};
  return TensorPayload::copy_of(ElementType::kF32, {blocks, prompts->count, hidden}, prompts->values,
                                static_cast<std::size_t>(blocks * prompts->count * hidden));
}

}  // namespace

SwarmTrainingBlocks::SwarmTrainingBlocks(ActorSystem& system, ActorRef<ClientDriverProtocol> driver,
                                         const ModelConfig& config, std::chrono::milliseconds timeout)
    : SwarmTrainingBlocks(
          [&system, driver, timeout](std::vector<TrainingPass> passes) {
            std::vector<std::future<Result<TrainingPassDone>>> answers;
            for (TrainingPass& p : passes) {
              auto promise = std::make_shared<std::promise<Result<TrainingPassDone>>>();
              answers.push_back(promise->get_future());
              system.request(driver, p, timeout,
                             [promise](Result<TrainingPassDone> r) { promise->set_value(std::move(r)); });
            }
            std::vector<Result<TrainingPassDone>> out;
            for (auto& a : answers) out.push_back(a.get());  // every answer is awaited: none outlives the call
            return out;
          },
          config) {}

SwarmTrainingBlocks::SwarmTrainingBlocks(PassRunner runner, const ModelConfig& config)
    : runner_(std::move(runner)), config_(config), num_blocks_(config.num_layers), hidden_size_(config.hidden_size) {}

std::vector<TrainingPassDone> SwarmTrainingBlocks::run(std::vector<TrainingPass> passes) {
  std::vector<TrainingPassDone> out;
  std::optional<Status> first_error;
  for (Result<TrainingPassDone>& r : runner_(std::move(passes))) {
    if (!r.is_ok()) {
      if (!first_error) first_error = r.status();
      continue;
    }
    hops_ += r->hops;
    failovers_ += r->failovers;
    tensor_bytes_ += r->tensor_bytes;
    out.push_back(std::move(r).value());
  }
  if (first_error) fail("training pass through the swarm failed: ", first_error->message());
  return out;
}

void SwarmTrainingBlocks::forward(std::span<PromptedBatch* const> batches, const BlockTuning& tuning,
                                  bool backward_follows) {
  const DeepPrompts* prompts = tuning.prompts;
  const AdapterPayload adapter = tuning.adapters ? adapter_payload(*tuning.adapters, config_) : AdapterPayload{};
  const TensorPayload deep = prompts_payload(prompts, num_blocks_, hidden_size_);
  std::vector<TrainingPass> passes;
  for (PromptedBatch* b : batches) {
    const auto tokens = static_cast<std::int64_t>(b->targets.size());
    TrainingPass p{++next_pass_, false, backward_follows, b->lengths,
                   TensorPayload::copy_of(ElementType::kF32, {tokens, hidden_size_}, b->hidden.data(), b->hidden.size()),
                   deep, prompts ? prompts->offset : 0, adapter};
    passes.push_back(std::move(p));
  }
  const std::vector<TrainingPassDone> done = run(passes);
  for (std::size_t i = 0; i < batches.size(); ++i) {
    const TensorPayload& out = done[i].hidden;
    if (out.type != ElementType::kF32 || out.bytes != batches[i]->hidden.size() * sizeof(float)) {
      fail("the swarm answered a training forward with ", out.bytes, " bytes for ", batches[i]->hidden.size(),
           " values");
    }
    std::copy_n(out.as<float>(), batches[i]->hidden.size(), batches[i]->hidden.begin());
    if (backward_follows) kept_.push_back(passes[i].pass);
  }
}

void SwarmTrainingBlocks::backward(std::span<const PromptedBatch* const> inputs,
                                   std::span<std::vector<float>* const> grads, const BlockTuning& tuning,
                                   float* prompt_grads, float* adapter_grads) {
  const DeepPrompts* prompts = tuning.prompts;
  if (kept_.size() != inputs.size()) {
    fail("a backward of ", inputs.size(), " micro-batches follows ", kept_.size(), " kept forwards");
  }
  std::vector<TrainingPass> passes;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto tokens = static_cast<std::int64_t>(inputs[i]->targets.size());
    passes.push_back(TrainingPass{kept_[i], true, false, {},
                                  TensorPayload::copy_of(ElementType::kF32, {tokens, hidden_size_}, grads[i]->data(),
                                                         grads[i]->size()),
                                  {}, 0, {}});
  }
  kept_.clear();
  const std::vector<TrainingPassDone> done = run(std::move(passes));
  const std::int64_t size = prompts && prompts->count > 0 ? num_blocks_ * prompts->count * hidden_size_ : 0;
  if (size > 0) std::fill(prompt_grads, prompt_grads + size, 0.0f);
  if (tuning.adapters) {
    std::fill(adapter_grads, adapter_grads + num_blocks_ * tuning.adapters->shape.values_per_block(config_), 0.0f);
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {  // in micro-batch order, as local blocks sum them
    const TensorPayload& g = done[i].hidden;
    if (g.type != ElementType::kF32 || g.bytes != grads[i]->size() * sizeof(float)) {
      fail("the swarm answered a training backward with ", g.bytes, " bytes for ", grads[i]->size(), " values");
    }
    std::copy_n(g.as<float>(), grads[i]->size(), grads[i]->begin());
    if (size > 0) {
      const TensorPayload& p = done[i].prompt_grads;
      if (p.type != ElementType::kF32 || p.elements() != size) fail("the swarm answered deep-prompt gradients of the wrong size");
      add_in_place(prompt_grads, p.as<float>(), size);
    }
    if (tuning.adapters) {
      const TensorPayload& a = done[i].adapter_grads;
      const std::int64_t adapter_size = num_blocks_ * tuning.adapters->shape.values_per_block(config_);
      if (a.type != ElementType::kF32 || a.elements() != adapter_size) fail("the swarm answered adapter gradients of the wrong size");
      add_in_place(adapter_grads, a.as<float>(), adapter_size);
    }
  }
}

}  // namespace sepal

#pragma once
// The prompt-tuning loop: batches drawn from a shuffled order of the examples, the loss and
// gradient of each (model/prompt_tuning.h), clipping, AdamW and the warmup-cosine schedule. All of
// its state is a TuningState, which a checkpoint saves and restores exactly: a resumed run takes
// the same steps, with the same losses, as one that never stopped.
//
// Thread-safety: a trainer belongs to one thread.

#include <cstdint>
#include <string>
#include <vector>

#include "model/adamw.h"
#include "model/prompt_tuning.h"

namespace sepal {

/// What a run is asked to do; fixed for the run (a checkpoint keeps it).
struct TuningSettings {
  TuningMethod method = TuningMethod::kPtune;
  std::int64_t prompt_tokens = 0;  ///< ptune, deep-ptune
  AdapterShape adapter;            ///< peqa, lora
  std::int64_t steps = 0;        ///< optimizer steps of the whole run
  std::int64_t batch_size = 0;   ///< examples per step
  std::int64_t micro_batch = 0;  ///< examples per pass through the blocks
  double lr = 0;                 ///< peak learning rate
  std::int64_t warmup = 0;       ///< steps of linear warmup
  std::uint64_t seed = 0;
  double max_grad_norm = 1.0;    ///< clipping of the gradient's L2 norm (0: none)
  AdamWSettings adamw;
};
/// Throws sepal::Error naming the first invalid setting.
void validate(const TuningSettings& settings);

/// Everything that changes during a run.
struct TuningState {
  std::int64_t step = 0;              ///< optimizer steps done
  std::int64_t epoch = 0;             ///< passes over the data begun
  std::int64_t cursor = 0;            ///< next position in `order`
  std::vector<std::int64_t> order;    ///< this epoch's order of the examples
  std::string rng;                    ///< the shuffling generator's state (std::mt19937_64, as text)
  PromptParameters params;
  AdamW optimizer;
};

/// One optimizer step's numbers.
struct StepReport {
  std::int64_t step = 0;         ///< 1-based
  double loss = 0;               ///< mean over the batch's scored tokens, before the update
  double lr = 0;
  std::int64_t tokens = 0;       ///< positions run through the blocks
  std::int64_t scored = 0;       ///< tokens in the loss
  double grad_norm = 0;          ///< before clipping
  double seconds = 0;
};

class PromptTrainer {
 public:
  /// A fresh run: parameters initialised from `settings.seed`, the first epoch shuffled.
  PromptTrainer(TuningSettings settings, const ModelEnds& ends, TrainingBlocks& blocks, std::vector<Example> examples);
  /// A run continued from `state` (a checkpoint's). Throws sepal::Error when the state does not
  /// fit the settings or the examples.
  PromptTrainer(TuningSettings settings, const ModelEnds& ends, TrainingBlocks& blocks, std::vector<Example> examples,
                TuningState state);

  bool done() const { return state_.step >= settings_.steps; }
  /// Takes the next step.
  StepReport step();
  /// Mean loss per scored token over `examples` with the current prompt (micro-batches as set).
  std::pair<double, std::int64_t> evaluate(const std::vector<Example>& examples);

  const TuningSettings& settings() const { return settings_; }
  const TuningState& state() const { return state_; }

 private:
  void new_epoch();

  TuningSettings settings_;
  const ModelEnds& ends_;
  TrainingBlocks& blocks_;
  std::vector<Example> examples_;
  TuningState state_;
};

}  // namespace sepal

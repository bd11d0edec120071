#include "model/prompt_trainer.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <sstream>

#include "kernels/error.h"

namespace sepal {

void validate(const TuningSettings& s) {
  if (trains_adapters(s.method)) {
    if (s.prompt_tokens != 0) fail("--prompt-tokens is for ptune and deep-ptune, not ", tuning_method_name(s.method));
    if ((s.adapter.method == AdapterMethod::kPeqa) != (s.method == TuningMethod::kPeqa)) {
      fail("the adapter settings are not ", tuning_method_name(s.method), "'s");
    }
  } else if (s.prompt_tokens < 1) {
    fail("--prompt-tokens must be at least 1, not ", s.prompt_tokens);
  }
  if (s.steps < 1) fail("--steps must be at least 1, not ", s.steps);
  if (s.batch_size < 1) fail("--batch-size must be at least 1, not ", s.batch_size);
  if (s.micro_batch < 1 || s.micro_batch > s.batch_size) {
    fail("--micro-batch must be between 1 and --batch-size (", s.batch_size, "), not ", s.micro_batch);
  }
  if (!(s.lr > 0) || !std::isfinite(s.lr)) fail("--lr must be a positive number, not ", s.lr);
  if (s.warmup < 0 || s.warmup > s.steps) fail("--warmup must be between 0 and --steps (", s.steps, "), not ", s.warmup);
  if (!(s.max_grad_norm >= 0)) fail("the gradient clipping norm must be at least 0, not ", s.max_grad_norm);
  if (!(s.adamw.weight_decay >= 0)) fail("--weight-decay must be at least 0, not ", s.adamw.weight_decay);
}

PromptTrainer::PromptTrainer(TuningSettings settings, const ModelEnds& ends, TrainingBlocks& blocks,
                             std::vector<Example> examples)
    : settings_(settings), ends_(ends), blocks_(blocks), examples_(std::move(examples)) {
  validate(settings_);
  if (examples_.empty()) fail("no examples to train on");
  state_.params = trains_adapters(settings_.method)
                      ? initial_adapter_parameters(settings_.adapter, ends_.config(), settings_.seed)
                      : initial_prompt_parameters(settings_.method, settings_.prompt_tokens, ends_, settings_.seed);
  state_.optimizer = AdamW(state_.params.size(), settings_.adamw);
  std::mt19937_64 rng(settings_.seed ^ 0x5eba15eedull);
  std::ostringstream text;
  text << rng;
  state_.rng = text.str();
  new_epoch();
}

PromptTrainer::PromptTrainer(TuningSettings settings, const ModelEnds& ends, TrainingBlocks& blocks,
                             std::vector<Example> examples, TuningState state)
    : settings_(settings), ends_(ends), blocks_(blocks), examples_(std::move(examples)), state_(std::move(state)) {
  validate(settings_);
  const auto count = static_cast<std::int64_t>(examples_.size());
  if (static_cast<std::int64_t>(state_.order.size()) != count) {
    fail("the saved data order covers ", state_.order.size(), " examples; the data holds ", count);
  }
  std::vector<std::int64_t> sorted = state_.order;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < count; ++i) {
    if (sorted[static_cast<std::size_t>(i)] != i) fail("the saved data order is not a permutation of the examples");
  }
  if (state_.cursor < 0 || state_.cursor > count) fail("the saved data cursor ", state_.cursor, " is outside the data");
  if (state_.step < 0 || state_.step > settings_.steps) {
    fail("the saved step ", state_.step, " is outside the run's ", settings_.steps, " steps");
  }
  const PromptParameters& p = state_.params;
  const ModelConfig& c = ends_.config();
  if (p.method != settings_.method || p.tokens != settings_.prompt_tokens || p.hidden_size != c.hidden_size ||
      p.layers != c.num_layers || p.soft.size() != static_cast<std::size_t>(p.tokens * p.hidden_size) ||
      p.deep.size() != (p.method == TuningMethod::kDeepPtune ? static_cast<std::size_t>(p.layers * p.tokens * p.hidden_size) : 0) ||
      p.adapter.size() !=
          (trains_adapters(p.method) ? static_cast<std::size_t>(p.layers * settings_.adapter.values_per_block(c)) : 0)) {
    fail("the saved parameters do not fit ", tuning_method_name(settings_.method), " with ", settings_.prompt_tokens,
         " tokens on this model");
  }
  std::istringstream text(state_.rng);
  std::mt19937_64 rng;
  if (!(text >> rng)) fail("the saved random generator state is unreadable");
}

void PromptTrainer::new_epoch() {
  std::istringstream in(state_.rng);
  std::mt19937_64 rng;
  in >> rng;
  state_.order.resize(examples_.size());
  std::iota(state_.order.begin(), state_.order.end(), std::int64_t{0});
  // Fisher-Yates with the generator's raw output, so the order is the same with every library.
  for (std::size_t i = state_.order.size(); i > 1; --i) std::swap(state_.order[i - 1], state_.order[rng() % i]);
  std::ostringstream out;
  out << rng;
  state_.rng = out.str();
  state_.cursor = 0;
  ++state_.epoch;
}

StepReport PromptTrainer::step() {
  SEPAL_CHECK(!done(), "the run has taken all its steps");
  const auto start = std::chrono::steady_clock::now();
  std::vector<const Example*> batch;
  while (static_cast<std::int64_t>(batch.size()) < settings_.batch_size) {
    if (state_.cursor == static_cast<std::int64_t>(state_.order.size())) new_epoch();
    batch.push_back(&examples_[static_cast<std::size_t>(state_.order[static_cast<std::size_t>(state_.cursor++)])]);
  }
  BatchGradient g = batch_gradient(ends_, blocks_, state_.params, batch, settings_.micro_batch);
  StepReport report;
  report.step = state_.step + 1;
  report.loss = g.loss_sum / static_cast<double>(g.scored);
  report.scored = g.scored;
  for (const Example* e : batch) report.tokens += static_cast<std::int64_t>(e->ids.size()) + settings_.prompt_tokens;
  report.grad_norm = clip_gradient_norm(g.grad, settings_.max_grad_norm);
  report.lr = scheduled_learning_rate(settings_.lr, state_.step, settings_.warmup, settings_.steps);
  std::vector<float> flat = state_.params.flat();
  state_.optimizer.step(flat, g.grad, report.lr);
  state_.params.assign_flat(flat);
  ++state_.step;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

std::pair<double, std::int64_t> PromptTrainer::evaluate(const std::vector<Example>& examples) {
  std::vector<const Example*> all;
  for (const Example& e : examples) all.push_back(&e);
  const auto [sum, scored] = score_examples(ends_, blocks_, &state_.params, all, settings_.micro_batch);
  return {sum / static_cast<double>(std::max<std::int64_t>(1, scored)), scored};
}

}  // namespace sepal

#include "model/prompt_tuning.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/activation.h"
#include "kernels/error.h"

namespace sepal {

std::optional<TuningMethod> parse_tuning_method(std::string_view name) {
  if (name == "ptune") return TuningMethod::kPtune;
  if (name == "deep-ptune") return TuningMethod::kDeepPtune;
  if (name == "peqa") return TuningMethod::kPeqa;
  if (name == "lora") return TuningMethod::kLora;
  return std::nullopt;
}

std::string_view tuning_method_name(TuningMethod method) {
  switch (method) {
    case TuningMethod::kPtune: return "ptune";
    case TuningMethod::kDeepPtune: return "deep-ptune";
    case TuningMethod::kPeqa: return "peqa";
    case TuningMethod::kLora: return "lora";
  }
  return "?";
}

std::vector<float> PromptParameters::flat() const {
  std::vector<float> out(soft);
  out.insert(out.end(), deep.begin(), deep.end());
  out.insert(out.end(), adapter.begin(), adapter.end());
  return out;
}

void PromptParameters::assign_flat(const std::vector<float>& values) {
  SEPAL_CHECK(values.size() == size(), "tuned parameters: ", values.size(), " values for ", size());
  auto at = values.begin();
  for (std::vector<float>* part : {&soft, &deep, &adapter}) {
    std::copy_n(at, part->size(), part->begin());
    at += static_cast<std::ptrdiff_t>(part->size());
  }
}

std::optional<BlockAdapters> PromptParameters::block_adapters() const {
  if (!trains_adapters(method)) return std::nullopt;
  return BlockAdapters{adapter_shape, 0, layers, adapter.data()};
}

HeldTuning::HeldTuning(const PromptParameters* params)
    : prompts(params ? params->deep_prompts() : std::nullopt), adapters(params ? params->block_adapters() : std::nullopt) {}

PromptParameters initial_adapter_parameters(const AdapterShape& shape, const ModelConfig& c, std::uint64_t seed) {
  validate(shape, c);
  PromptParameters p;
  p.method = shape.method == AdapterMethod::kPeqa ? TuningMethod::kPeqa : TuningMethod::kLora;
  p.hidden_size = c.hidden_size;
  p.layers = c.num_layers;
  p.offset = c.bos_token_id >= 0 ? 1 : 0;
  p.adapter_shape = shape;
  const std::int64_t per_block = shape.values_per_block(c);
  p.adapter.assign(static_cast<std::size_t>(c.num_layers * per_block), 0.0f);
  if (shape.method == AdapterMethod::kLora) {
    std::mt19937_64 rng(seed);
    for (std::int64_t b = 0; b < c.num_layers; ++b) {
      for (const Projection t : shape.targets) {
        for (std::int64_t copy = 0; copy < projection_copies(c, t, b); ++copy) {  // each expert's own
          const auto cols = projection_shape(c, t, b, copy).second;
          std::uniform_real_distribution<float> uniform(-1.0f / std::sqrt(static_cast<float>(cols)),
                                                        1.0f / std::sqrt(static_cast<float>(cols)));
          float* a = p.adapter.data() + b * per_block + shape.offset_in_block(c, t, b, copy);
          for (std::int64_t i = 0; i < shape.rank * cols; ++i) a[i] = uniform(rng);
        }
      }
    }
  }
  return p;
}

std::optional<DeepPrompts> PromptParameters::deep_prompts() const {
  if (method != TuningMethod::kDeepPtune) return std::nullopt;
  return DeepPrompts{deep.data(), tokens, offset};
}

PromptParameters initial_prompt_parameters(TuningMethod method, std::int64_t tokens, const ModelEnds& ends,
                                           std::uint64_t seed) {
  const ModelConfig& c = ends.config();
  if (tokens < 1) fail("a prompt needs at least 1 token, not ", tokens);
  PromptParameters p;
  p.method = method;
  p.tokens = tokens;
  p.hidden_size = c.hidden_size;
  p.layers = c.num_layers;
  p.offset = c.bos_token_id >= 0 ? 1 : 0;
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(tokens));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(c.vocab_size));
  p.soft.resize(static_cast<std::size_t>(tokens * c.hidden_size));
  ends.embed(ids.data(), tokens, p.soft.data());
  if (method == TuningMethod::kDeepPtune) p.deep.assign(static_cast<std::size_t>(c.num_layers * tokens * c.hidden_size), 0.0f);
  return p;
}

PromptedBatch build_batch(const ModelEnds& ends, std::span<const Example* const> examples,
                          const PromptParameters* params) {
  const ModelConfig& c = ends.config();
  const std::int64_t h = c.hidden_size;
  const std::int64_t n_prompt = params ? params->tokens : 0, offset = params ? params->offset : 0;
  PromptedBatch b;
  for (const Example* e : examples) {
    const auto ids = static_cast<std::int64_t>(e->ids.size());
    const std::int64_t length = ids + n_prompt;
    if (length > c.max_position_embeddings) {
      fail("an example of ", ids, " tokens and a prompt of ", n_prompt, " pass max_position_embeddings (",
           c.max_position_embeddings, ")");
    }
    const std::size_t base = b.targets.size();
    b.lengths.push_back(length);
    b.hidden.resize(static_cast<std::size_t>((base + length) * h));
    b.targets.resize(base + static_cast<std::size_t>(length), -1);
    // Row layout: ids[0, offset), the prompt, ids[offset, ids).
    float* row = b.hidden.data() + base * h;
    ends.embed(e->ids.data(), offset, row);
    if (n_prompt > 0) std::copy(params->soft.begin(), params->soft.end(), row + offset * h);
    ends.embed(e->ids.data() + offset, ids - offset, row + (offset + n_prompt) * h);
    for (std::int64_t i = 1; i < ids; ++i) {
      if (!e->scored[static_cast<std::size_t>(i)]) continue;
      const std::int64_t row_of_i = i < offset ? i : i + n_prompt;
      // The row just before id i predicts it (the prompt's last vector when i follows it).
      b.targets[base + static_cast<std::size_t>(row_of_i - 1)] = e->ids[static_cast<std::size_t>(i)];
      ++b.scored;
    }
  }
  return b;
}

LocalTrainingBlocks::LocalTrainingBlocks(const BlockStack& blocks) : blocks_(blocks) {
  if (blocks.first() != 0 || blocks.last() != blocks.config().num_layers) {
    fail("local training needs every block of the model, not [", blocks.first(), ", ", blocks.last(), ")");
  }
}

void LocalTrainingBlocks::forward(std::span<PromptedBatch* const> batches, const BlockTuning& tuning, bool) {
  for (PromptedBatch* b : batches) {
    blocks_.forward_sequences(b->hidden.data(), b->lengths, 0, blocks_.last(), tuning.prompts, tuning.adapters);
  }
}

void LocalTrainingBlocks::backward(std::span<const PromptedBatch* const> inputs,
                                   std::span<std::vector<float>* const> grads, const BlockTuning& tuning,
                                   float* prompt_grads, float* adapter_grads) {
  const DeepPrompts* prompts = tuning.prompts;
  const std::int64_t size = prompts ? blocks_.last() * prompts->count * blocks_.config().hidden_size : 0;
  const std::int64_t adapter_size =
      tuning.adapters ? blocks_.last() * tuning.adapters->shape.values_per_block(blocks_.config()) : 0;
  std::vector<float> one(static_cast<std::size_t>(size)), one_adapter(static_cast<std::size_t>(adapter_size));
  if (prompts) std::fill(prompt_grads, prompt_grads + size, 0.0f);
  if (tuning.adapters) std::fill(adapter_grads, adapter_grads + adapter_size, 0.0f);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    blocks_.backward_sequences(inputs[i]->hidden.data(), inputs[i]->lengths, 0, blocks_.last(), prompts,
                               grads[i]->data(), one.data(), tuning.adapters, one_adapter.data());
    if (prompts) add_in_place(prompt_grads, one.data(), size);
    if (tuning.adapters) add_in_place(adapter_grads, one_adapter.data(), adapter_size);
  }
}

namespace {

// The examples cut into micro-batches of `micro_batch`, each built with the prompt.
std::vector<PromptedBatch> micro_batches(const ModelEnds& ends, std::span<const Example* const> examples,
                                         std::int64_t micro_batch, const PromptParameters* params) {
  if (micro_batch < 1) fail("a micro-batch needs at least 1 example, not ", micro_batch);
  std::vector<PromptedBatch> out;
  for (std::size_t i = 0; i < examples.size(); i += static_cast<std::size_t>(micro_batch)) {
    const std::size_t n = std::min(examples.size() - i, static_cast<std::size_t>(micro_batch));
    out.push_back(build_batch(ends, examples.subspan(i, n), params));
  }
  return out;
}

}  // namespace

BatchGradient batch_gradient(const ModelEnds& ends, TrainingBlocks& blocks, const PromptParameters& params,
                             std::span<const Example* const> examples, std::int64_t micro_batch) {
  const std::int64_t h = params.hidden_size;
  std::vector<PromptedBatch> inputs = micro_batches(ends, examples, micro_batch, &params);
  BatchGradient out;
  for (const auto& b : inputs) out.scored += b.scored;
  if (out.scored == 0) fail("a batch with no token to score");
  std::vector<PromptedBatch> outputs = inputs;
  std::vector<PromptedBatch*> out_ptrs;
  for (auto& b : outputs) out_ptrs.push_back(&b);
  const HeldTuning tuning(&params);
  blocks.forward(out_ptrs, tuning.view(), /*backward_follows=*/true);

  // The loss is the mean over the batch's scored tokens: each micro-batch's sum weighs 1/scored.
  const float weight = static_cast<float>(1.0 / static_cast<double>(out.scored));
  std::vector<std::vector<float>> grads(outputs.size());
  std::vector<std::vector<float>*> grad_ptrs;
  std::vector<const PromptedBatch*> in_ptrs;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const PromptedBatch& b = outputs[i];
    const auto t = static_cast<std::int64_t>(b.targets.size());
    grads[i].resize(static_cast<std::size_t>(t * h));
    out.loss_sum += ends.cross_entropy(b.hidden.data(), t, b.targets.data(), weight, grads[i].data());
    grad_ptrs.push_back(&grads[i]);
    in_ptrs.push_back(&inputs[i]);
  }
  out.grad.assign(params.size(), 0.0f);
  blocks.backward(in_ptrs, grad_ptrs, tuning.view(), out.grad.data() + params.soft.size(),
                  out.grad.data() + params.soft.size() + params.deep.size());
  // The soft prompt's gradient: its rows of every sequence's input gradient, summed in order.
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    std::int64_t start = 0;
    for (std::int64_t length : inputs[i].lengths) {
      add_in_place(out.grad.data(), grads[i].data() + (start + params.offset) * h, params.tokens * h);
      start += length;
    }
  }
  return out;
}

std::pair<double, std::int64_t> score_examples(const ModelEnds& ends, TrainingBlocks& blocks,
                                               const PromptParameters* params,
                                               std::span<const Example* const> examples, std::int64_t micro_batch) {
  std::vector<PromptedBatch> batches = micro_batches(ends, examples, micro_batch, params);
  std::vector<PromptedBatch*> ptrs;
  for (auto& b : batches) ptrs.push_back(&b);
  const HeldTuning tuning(params);
  blocks.forward(ptrs, tuning.view(), /*backward_follows=*/false);
  double sum = 0;
  std::int64_t scored = 0;
  for (const auto& b : batches) {
    sum += ends.cross_entropy(b.hidden.data(), static_cast<std::int64_t>(b.targets.size()), b.targets.data(), 0.0f,
                              nullptr);
    scored += b.scored;
  }
  return {sum, scored};
}

}  // namespace sepal

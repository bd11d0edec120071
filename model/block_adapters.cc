#include "model/block_adapters.h"

#include <algorithm>
#include <array>

#include "kernels/activation.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/parallel.h"
#include "model/arch/architectures.h"

namespace sepal {
namespace {

constexpr std::array<std::string_view, kProjections> kNames = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                              "gate_proj", "up_proj", "down_proj"};

WeightView f32_view(std::int64_t rows, std::int64_t cols, const float* data) {
  return WeightView{DType::kF32, rows, cols, data};
}

bool is_mlp(Projection p) { return p == Projection::kGate || p == Projection::kUp || p == Projection::kDown; }

// A block of each kind `config` has, the first of it: a sparse one and a dense one (-1 where it
// has none); the sizes of adapters depend on nothing else.
std::array<std::int64_t, 2> block_kinds(const ModelConfig& c) {
  if (!c.mixture_of_experts()) return {-1, 0};
  std::array<std::int64_t, 2> kinds = {-1, c.dense_layers.empty() ? -1 : *std::min_element(c.dense_layers.begin(), c.dense_layers.end())};
  for (std::int64_t l = 0; l < c.num_layers && kinds[0] < 0; ++l) {
    if (c.sparse_block(l)) kinds[0] = l;
  }
  return kinds;
}

}  // namespace

std::optional<Projection> parse_projection(std::string_view name) {
  for (int i = 0; i < kProjections; ++i) {
    if (kNames[static_cast<std::size_t>(i)] == name) return static_cast<Projection>(i);
  }
  return std::nullopt;
}

std::string_view projection_name(Projection p) { return kNames[static_cast<std::size_t>(p)]; }

bool experts_take_adapters(const ModelConfig& c) {
  const bool stacked = c.architecture == "GraniteMoeForCausalLM" || c.architecture == "GraniteMoeSharedForCausalLM";
  return c.mixture_of_experts() && !c.expert_biases && !stacked && c.family == ModelFamily::kLlama;
}

bool block_has_projection(const ModelConfig& config, Projection p) {
  if (is_mlp(p) && config.mixture_of_experts()) return experts_take_adapters(config);
  return !(config.family == ModelFamily::kBloom && p == Projection::kGate);
}

std::int64_t projection_copies(const ModelConfig& config, Projection p, std::int64_t layer) {
  if (!is_mlp(p) || !config.sparse_block(layer)) return 1;
  return config.num_experts + (config.shared_expert_intermediate_size > 0 ? 1 : 0);
}

std::pair<std::int64_t, std::int64_t> projection_shape(const ModelConfig& c, Projection p, std::int64_t layer,
                                                       std::int64_t copy) {
  if (is_mlp(p) && c.sparse_block(layer)) {  // an expert's, or the shared expert's after them
    SEPAL_CHECK(copy >= 0 && copy < projection_copies(c, p, layer), "adapter copy ", copy, " of ", projection_name(p));
    const std::int64_t inter = copy < c.num_experts ? c.moe_intermediate_size : c.shared_expert_intermediate_size;
    return p == Projection::kDown ? std::pair{c.hidden_size, inter} : std::pair{inter, c.hidden_size};
  }
  switch (p) {
    case Projection::kQ: return {c.q_size(), c.hidden_size};
    case Projection::kK: return {c.kv_size(), c.hidden_size};
    case Projection::kV: return {c.kv_size(), c.hidden_size};
    case Projection::kO: return {c.hidden_size, c.q_size()};
    case Projection::kGate: return {c.intermediate_size, c.hidden_size};
    case Projection::kUp: return {c.intermediate_size, c.hidden_size};
    case Projection::kDown: return {c.hidden_size, c.intermediate_size};
  }
  return {0, 0};
}

const WeightView& projection_weight(const BlockWeights& w, Projection p, std::int64_t copy) {
  if (is_mlp(p) && !w.experts.empty()) {  // an expert, or the shared one after them
    const auto experts = static_cast<std::int64_t>(w.experts.size());
    const bool shared = copy == experts && w.shared_expert.gate_proj.view.data;
    SEPAL_CHECK(copy >= 0 && (copy < experts || shared), "expert ", copy, " of ", experts);
    const BlockWeights::Expert& e = shared ? w.shared_expert : w.experts[static_cast<std::size_t>(copy)];
    return p == Projection::kGate ? e.gate_proj.view : p == Projection::kUp ? e.up_proj.view : e.down_proj.view;
  }
  switch (p) {
    case Projection::kQ: return w.q_proj.view;
    case Projection::kK: return w.k_proj.view;
    case Projection::kV: return w.v_proj.view;
    case Projection::kO: return w.o_proj.view;
    case Projection::kGate: return w.gate_proj.view;
    case Projection::kUp: return w.up_proj.view;
    case Projection::kDown: return w.down_proj.view;
  }
  return w.q_proj.view;
}

ProjectionModule projection_module(const ModelConfig& config, std::int64_t layer, Projection p, std::int64_t copy) {
  switch (config.family) {
    case ModelFamily::kLlama: return llama_projection_module(config, layer, p, copy);
    case ModelFamily::kBloom: return bloom_projection_module(config, layer, p);
  }
  fail("adapters are not supported for ", config.architecture);
}

std::vector<Projection> projections_named(const ModelConfig& config, std::string_view name) {
  std::vector<Projection> out;
  for (int i = 0; i < kProjections; ++i) {
    const auto p = static_cast<Projection>(i);
    if (block_has_projection(config, p) && (projection_name(p) == name || projection_module(config, 0, p).target == name)) {
      out.push_back(p);
    }
  }
  return out;
}

bool AdapterShape::targets_projection(Projection p) const {
  return std::find(targets.begin(), targets.end(), p) != targets.end();
}

std::int64_t AdapterShape::values_per_copy(const ModelConfig& config, Projection p, std::int64_t layer,
                                           std::int64_t copy) const {
  const auto [rows, cols] = projection_shape(config, p, layer, copy);
  return method == AdapterMethod::kPeqa ? rows : rank * cols + rows * rank;
}

std::int64_t AdapterShape::values_of(const ModelConfig& config, Projection p) const {
  std::int64_t most = 0;
  for (const std::int64_t layer : block_kinds(config)) {
    if (layer < 0) continue;
    std::int64_t total = 0;
    for (std::int64_t copy = 0; copy < projection_copies(config, p, layer); ++copy) total += values_per_copy(config, p, layer, copy);
    most = std::max(most, total);
  }
  return most;
}

std::int64_t AdapterShape::offset_in_block(const ModelConfig& config, Projection p, std::int64_t layer,
                                           std::int64_t copy) const {
  SEPAL_CHECK(copy >= 0 && copy < projection_copies(config, p, layer), "adapter copy ", copy, " of ", projection_name(p));
  std::int64_t offset = 0;
  for (const Projection t : targets) {
    // The experts' adapters are all one size, and the shared expert's follows them.
    if (t == p) return offset + copy * values_per_copy(config, t, layer, 0);
    offset += values_of(config, t);
  }
  fail("projection ", projection_name(p), " has no adapter");
}

std::int64_t AdapterShape::values_per_block(const ModelConfig& config) const {
  std::int64_t total = 0;
  for (const Projection t : targets) total += values_of(config, t);
  return total;
}

void validate(const AdapterShape& shape, const ModelConfig& config) {
  if (shape.targets.empty()) fail("an adapter needs at least one target projection");
  for (std::size_t i = 1; i < shape.targets.size(); ++i) {
    if (shape.targets[i] <= shape.targets[i - 1]) fail("adapter targets must be distinct, in q, k, v, o, gate, up, down order");
  }
  for (const Projection t : shape.targets) {
    if (!block_has_projection(config, t)) {
      fail(config.architecture, " blocks have no ", projection_name(t),
           config.mixture_of_experts()
               ? " to adapt (the experts of this mixture take no adapters: they have biases or are stacked; q, k, v and o "
                 "do)"
               : " (BLOOM's MLP is up_proj, GELU, down_proj)");
    }
  }
  if (shape.method == AdapterMethod::kLora) {
    if (shape.rank < 1 || shape.rank > 1024) fail("the LoRA rank must be between 1 and 1024, got ", shape.rank);
    if (!(shape.alpha > 0) || shape.alpha > 1e30) fail("the LoRA alpha must be a positive number up to 1e30, got ", shape.alpha);
    for (const Projection t : shape.targets) {
      for (const std::int64_t layer : block_kinds(config)) {
        for (std::int64_t copy = 0; layer >= 0 && copy < projection_copies(config, t, layer); ++copy) {
          const auto [rows, cols] = projection_shape(config, t, layer, copy);
          if (shape.rank > std::min(rows, cols)) {
            fail("a LoRA rank of ", shape.rank, " exceeds ", projection_name(t), "'s ", rows, " x ", cols);
          }
        }
      }
    }
  }
}

std::optional<ProjectionAdapter> BlockAdapters::of(const ModelConfig& config, std::int64_t block, Projection p,
                                                  std::int64_t copy) const {
  if (!values || block < first || block >= first + blocks || !shape.targets_projection(p)) return std::nullopt;
  ProjectionAdapter a;
  a.method = shape.method;
  a.rank = shape.rank;
  a.scaling = shape.method == AdapterMethod::kLora ? static_cast<float>(shape.alpha / static_cast<double>(shape.rank)) : 0.0f;
  a.values = values + (block - first) * shape.values_per_block(config) + shape.offset_in_block(config, p, block, copy);
  return a;
}

void apply_adapter(const ProjectionAdapter& a, const WeightView& w, const float* x, std::int64_t n, float* y) {
  if (n <= 0) return;
  if (a.method == AdapterMethod::kPeqa) {
    if (w.dtype != DType::kI8) fail("PEQA tunes the scales of int8 weights; load the model with --dtype int8");
    scale_by_one_plus(y, n, w.rows, a.values);
    return;
  }
  const float* lora_a = a.values;                 // [rank, cols]
  const float* lora_b = a.values + a.rank * w.cols;  // [rows, rank]
  std::vector<float> u(static_cast<std::size_t>(n * a.rank)), v(static_cast<std::size_t>(n * w.rows));
  matmul(x, n, f32_view(a.rank, w.cols, lora_a), u.data());
  matmul(u.data(), n, f32_view(w.rows, a.rank, lora_b), v.data());
  add_scaled_in_place(y, v.data(), a.scaling, n * w.rows);
}

void adapter_backward(const ProjectionAdapter& a, const WeightView& w, const float* x, std::int64_t n, float* dy,
                      float* dx, float* grads) {
  if (n <= 0) return;
  if (a.method == AdapterMethod::kPeqa) {
    // d m_r = Σ_t dy'[t, r] y[t, r] with y the base product (recomputed); dy = dy' (1 + m).
    std::vector<float> y(static_cast<std::size_t>(n * w.rows));
    matmul(x, n, w, y.data());
    add_column_dots(dy, y.data(), n, w.rows, grads);
    scale_by_one_plus(dy, n, w.rows, a.values);
    return;
  }
  // y' = y + c (x Aᵀ) Bᵀ: with u = x Aᵀ and g = c dy' B, dB += c dy'ᵀ u, dA += gᵀ x, dx += g A.
  const std::int64_t rank = a.rank;
  const float* lora_a = a.values;
  const float* lora_b = a.values + rank * w.cols;
  float* grad_a = grads;
  float* grad_b = grads + rank * w.cols;
  std::vector<float> u(static_cast<std::size_t>(n * rank)), g(u.size()), part(static_cast<std::size_t>(n * w.cols));
  matmul(x, n, f32_view(rank, w.cols, lora_a), u.data());
  scale_in_place(u.data(), a.scaling, n * rank);
  matmul_weight_grad(dy, n, u.data(), w.rows, rank, grad_b);
  matmul_input_grad(dy, n, f32_view(w.rows, rank, lora_b), g.data());
  scale_in_place(g.data(), a.scaling, n * rank);
  matmul_weight_grad(g.data(), n, x, rank, w.cols, grad_a);
  matmul_input_grad(g.data(), n, f32_view(rank, w.cols, lora_a), part.data());
  add_in_place(dx, part.data(), n * w.cols);
}

}  // namespace sepal

#include "model/arch/experts.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/activation.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/matmul.h"
#include "kernels/parallel.h"
#include "model/arch/block_parts.h"

namespace sepal {
namespace {

// NaN logits (from NaN hidden states) order as the lowest, so that the sort's order stays strict.
float orderable(float x) { return std::isnan(x) ? -INFINITY : x; }

// For each expert in ascending order, the rows that picked it (ascending) and their choice slots.
template <typename Body>
void for_each_expert(const ExpertRouting& routing, std::int64_t n, std::int64_t experts, std::vector<std::int32_t>& rows,
                     std::vector<std::int32_t>& slots, Body&& body) {
  const std::int64_t k = routing.k;
  std::vector<std::int64_t> count(static_cast<std::size_t>(experts) + 1, 0);
  for (std::int64_t i = 0; i < n * k; ++i) ++count[static_cast<std::size_t>(routing.expert[static_cast<std::size_t>(i)]) + 1];
  std::partial_sum(count.begin(), count.end(), count.begin());
  rows.resize(static_cast<std::size_t>(n * k));
  slots.resize(static_cast<std::size_t>(n * k));
  std::vector<std::int64_t> next(count.begin(), count.end() - 1);
  for (std::int64_t i = 0; i < n * k; ++i) {  // slots in row order: each expert's rows ascend
    const auto e = static_cast<std::size_t>(routing.expert[static_cast<std::size_t>(i)]);
    const auto at = static_cast<std::size_t>(next[e]++);
    rows[at] = static_cast<std::int32_t>(i / k);
    slots[at] = static_cast<std::int32_t>(i);
  }
  for (std::int64_t e = 0; e < experts; ++e) {
    const std::int64_t from = count[static_cast<std::size_t>(e)], m = count[static_cast<std::size_t>(e) + 1] - from;
    if (m > 0) body(e, m, rows.data() + from, slots.data() + from);
  }
}

// GPT-OSS's biases: rows[m, bias.size] += bias; none elsewhere.
void add_held_bias(const HeldVector& bias, float* rows, std::int64_t m) {
  if (bias.data) add_bias(rows, m, bias.size, bias.data);
}

// An expert's gate and up products [m, inter] (biased) through its activation, in place in gate.
void expert_activation(const ModelConfig& c, float* gate, const float* up, std::int64_t m) {
  gate_mul(c.mlp_activation, gate, up, m * c.moe_intermediate_size, c.swiglu_limit);
}

void gather_rows(const float* x, std::int64_t width, const std::int32_t* rows, std::int64_t m, float* out) {
  for (std::int64_t i = 0; i < m; ++i) std::copy_n(x + rows[i] * width, width, out + i * width);
}

// y[m, w.rows], expert e's product p of the call's rows rows[0, m) (ascending; their inputs
// x[m, w.cols]), adapted as each row's adapters say: runs of rows that share them at once.
void adapt_expert(const ModelConfig& c, const BlockWeights& w, std::span<const AdaptedRows> adapted, std::int64_t e,
                  Projection p, const std::int32_t* rows, std::int64_t m, const float* x, float* y) {
  if (adapted.empty()) return;
  auto adapters_of = [&](std::int32_t row) -> const BlockAdapters* {
    for (const AdaptedRows& a : adapted) {
      if (row >= a.row && row < a.row + a.n) return a.adapters;
    }
    return nullptr;
  };
  const WeightView& view = projection_weight(w, p, e);
  for (std::int64_t i = 0; i < m;) {
    const BlockAdapters* adapters = adapters_of(rows[i]);
    std::int64_t j = i + 1;
    while (j < m && adapters_of(rows[j]) == adapters) ++j;
    if (adapters) {
      if (const auto a = adapters->of(c, w.layer, p, e)) apply_adapter(*a, view, x + i * view.cols, j - i, y + i * view.rows);
    }
    i = j;
  }
}

// dx[m, w.cols] = d loss / d x of expert e's (adapted) product p over x[m, w.cols], given dy =
// d loss / d product (scratch: PEQA rescales it); the adapter's gradients added to `grads` (the
// block's). As training_parts.h's product_input_grad, for an expert.
void expert_product_input_grad(const ModelConfig& c, const BlockWeights& w, const BlockAdapters* adapters, float* grads,
                               std::int64_t e, Projection p, const float* x, std::int64_t m, float* dy, float* dx) {
  const WeightView& view = projection_weight(w, p, e);
  const auto a = adapters ? adapters->of(c, w.layer, p, e) : std::nullopt;
  if (!a) return matmul_input_grad(dy, m, view, dx);
  std::vector<float> own(static_cast<std::size_t>(m * view.cols), 0.0f);
  adapter_backward(*a, view, x, m, dy, own.data(), grads + adapters->shape.offset_in_block(c, p, w.layer, e));
  matmul_input_grad(dy, m, view, dx);
  for (std::size_t i = 0; i < own.size(); ++i) dx[i] += own[i];
}

}  // namespace

namespace {

// Rows through their routed experts, each expert once over its rows gathered (out is set).
void routed_rows(const ModelConfig& c, const BlockWeights& w, const float* x, std::int64_t n, bool alone, ExpertScratch& s,
                 float* out, std::span<const AdaptedRows> adapted);
void add_shared_expert(const ModelConfig& c, const BlockWeights& w, const float* x, std::int64_t n, bool alone, ExpertScratch& s,
                       float* out, std::span<const AdaptedRows> adapted);

// out[h] = Σ_j weight_j · s.out[j] over the row's k experts, in ascending order.
void sum_rows(const ExpertScratch& s, std::int64_t h, float* out) {
  std::fill(out, out + h, 0.0f);
  for (std::int64_t j = 0; j < s.routing.k; ++j) {
    const float weight = s.routing.weight[static_cast<std::size_t>(j)];
    for (std::int64_t d = 0; d < h; ++d) out[d] += weight * s.out[static_cast<std::size_t>(j * h + d)];
  }
}

// A single row (a decode step): with at least as many experts as threads, each thread runs whole
// experts (one pass of the thread pool, each product on one thread); with fewer, the experts'
// gate and up products share the input and run as one call, then their down products. The
// outputs are summed in ascending expert order (a product's bits do not depend on the threads).
void one_row(const ModelConfig& c, const BlockWeights& w, const float* x, ExpertScratch& s, float* out,
             std::span<const AdaptedRows> adapted) {
  const std::int64_t h = c.hidden_size, inter = c.moe_intermediate_size, k = s.routing.k;
  const std::int32_t row = 0;
  auto expert_of = [&](std::int64_t j) { return static_cast<std::int64_t>(s.routing.expert[static_cast<std::size_t>(j)]); };
  if (k >= compute_threads()) {
    parallel_for(k, [&](std::int64_t j) {
      const BlockWeights::Expert& ex = w.experts[static_cast<std::size_t>(expert_of(j))];
      const WeightView gate_up[] = {ex.gate_proj.view, ex.up_proj.view};
      float* const gate_up_out[] = {s.gate.data() + j * inter, s.up.data() + j * inter};
      block_products(x, 1, true, gate_up, gate_up_out);
      adapt_expert(c, w, adapted, expert_of(j), Projection::kGate, &row, 1, x, s.gate.data() + j * inter);
      adapt_expert(c, w, adapted, expert_of(j), Projection::kUp, &row, 1, x, s.up.data() + j * inter);
      add_held_bias(ex.gate_bias, s.gate.data() + j * inter, 1);
      add_held_bias(ex.up_bias, s.up.data() + j * inter, 1);
      expert_activation(c, s.gate.data() + j * inter, s.up.data() + j * inter, 1);
      float* const down_out[] = {s.out.data() + j * h};
      block_products(s.gate.data() + j * inter, 1, true, std::span(&ex.down_proj.view, 1), down_out);
      adapt_expert(c, w, adapted, expert_of(j), Projection::kDown, &row, 1, s.gate.data() + j * inter, s.out.data() + j * h);
      add_held_bias(ex.down_bias, s.out.data() + j * h, 1);
    });
    return sum_rows(s, h, out);
  }
  std::vector<WeightView> ws;
  std::vector<float*> ys;
  for (std::int64_t j = 0; j < k; ++j) {
    const BlockWeights::Expert& ex = w.experts[static_cast<std::size_t>(s.routing.expert[static_cast<std::size_t>(j)])];
    ws.push_back(ex.gate_proj.view);
    ys.push_back(s.gate.data() + j * inter);
    ws.push_back(ex.up_proj.view);
    ys.push_back(s.up.data() + j * inter);
  }
  block_products(x, 1, true, ws, ys);
  for (std::int64_t j = 0; j < k; ++j) {
    const BlockWeights::Expert& ex = w.experts[static_cast<std::size_t>(expert_of(j))];
    adapt_expert(c, w, adapted, expert_of(j), Projection::kGate, &row, 1, x, s.gate.data() + j * inter);
    adapt_expert(c, w, adapted, expert_of(j), Projection::kUp, &row, 1, x, s.up.data() + j * inter);
    add_held_bias(ex.gate_bias, s.gate.data() + j * inter, 1);
    add_held_bias(ex.up_bias, s.up.data() + j * inter, 1);
  }
  gate_mul(c.mlp_activation, s.gate.data(), s.up.data(), k * inter, c.swiglu_limit);
  for (std::int64_t j = 0; j < k; ++j) {
    const BlockWeights::Expert& ex = w.experts[static_cast<std::size_t>(expert_of(j))];
    float* const down_out[] = {s.out.data() + j * h};
    block_products(s.gate.data() + j * inter, 1, true, std::span(&ex.down_proj.view, 1), down_out);
    adapt_expert(c, w, adapted, expert_of(j), Projection::kDown, &row, 1, s.gate.data() + j * inter, s.out.data() + j * h);
    add_held_bias(ex.down_bias, s.out.data() + j * h, 1);
  }
  sum_rows(s, h, out);
}

}  // namespace

void route_experts(const ModelConfig& c, const float* logits, std::int64_t n, ExpertRouting& routing) {
  const std::int64_t experts = c.num_experts, k = c.experts_per_token;
  routing.k = k;
  routing.expert.resize(static_cast<std::size_t>(n * k));
  routing.weight.resize(static_cast<std::size_t>(n * k));
  routing.probs.resize(static_cast<std::size_t>(n * experts));
  std::vector<std::int32_t> order(static_cast<std::size_t>(experts));
  for (std::int64_t r = 0; r < n; ++r) {
    const float* l = logits + r * experts;
    float* p = routing.probs.data() + r * experts;
    const float top = orderable(*std::max_element(l, l + experts, [](float a, float b) { return orderable(a) < orderable(b); }));
    double z = 0;
    for (std::int64_t e = 0; e < experts; ++e) z += std::exp(static_cast<double>(l[e]) - top);
    for (std::int64_t e = 0; e < experts; ++e) p[e] = static_cast<float>(std::exp(static_cast<double>(l[e]) - top) / z);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](std::int32_t a, std::int32_t b) {
      const float la = orderable(l[a]), lb = orderable(l[b]);
      return la > lb || (la == lb && a < b);
    });
    std::sort(order.begin(), order.begin() + k);
    double picked = 0;
    for (std::int64_t j = 0; j < k; ++j) picked += p[order[static_cast<std::size_t>(j)]];
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int32_t e = order[static_cast<std::size_t>(j)];
      routing.expert[static_cast<std::size_t>(r * k + j)] = e;
      routing.weight[static_cast<std::size_t>(r * k + j)] = c.moe_renormalize ? static_cast<float>(p[e] / picked) : p[e];
    }
  }
}

ExpertScratch::ExpertScratch(const ModelConfig& c, std::int64_t n)
    : logits(c.mixture_of_experts() ? n * c.num_experts : 0), gathered(c.mixture_of_experts() ? n * c.hidden_size : 0),
      gate(c.mixture_of_experts() ? std::max(n, c.experts_per_token) * c.moe_intermediate_size : 0),
      up(gate.size()), out(c.mixture_of_experts() ? std::max(n, c.experts_per_token) * c.hidden_size : 0),
      shared_gate(n * c.shared_expert_intermediate_size), shared_up(shared_gate.size()),
      shared_out(c.shared_expert_intermediate_size > 0 ? n * c.hidden_size : 0),
      shared_logit(c.shared_expert_intermediate_size > 0 ? n : 0) {}

void experts_forward(const ModelConfig& c, const BlockWeights& w, const float* x, std::int64_t n, bool alone,
                     ExpertScratch& s, float* out, std::span<const AdaptedRows> adapted) {
  float* const logits_out[] = {s.logits.data()};
  block_products(x, n, alone, std::span(&w.router.view, 1), logits_out);
  add_held_bias(w.router_bias, s.logits.data(), n);
  route_experts(c, s.logits.data(), n, s.routing);
  if (n == 1) {
    one_row(c, w, x, s, out, adapted);
  } else {
    routed_rows(c, w, x, n, alone, s, out, adapted);
  }
  if (c.shared_expert_intermediate_size > 0) add_shared_expert(c, w, x, n, alone, s, out, adapted);
}

namespace {

void routed_rows(const ModelConfig& c, const BlockWeights& w, const float* x, std::int64_t n, bool alone, ExpertScratch& s,
                 float* out, std::span<const AdaptedRows> adapted) {
  const std::int64_t h = c.hidden_size;
  std::fill(out, out + n * h, 0.0f);
  for_each_expert(s.routing, n, c.num_experts, s.rows, s.slots,
                  [&](std::int64_t e, std::int64_t m, const std::int32_t* rows, const std::int32_t* slots) {
                    const BlockWeights::Expert& ex = w.experts[static_cast<std::size_t>(e)];
                    gather_rows(x, h, rows, m, s.gathered.data());
                    const WeightView gate_up[] = {ex.gate_proj.view, ex.up_proj.view};
                    float* const gate_up_out[] = {s.gate.data(), s.up.data()};
                    block_products(s.gathered.data(), m, alone, gate_up, gate_up_out);
                    adapt_expert(c, w, adapted, e, Projection::kGate, rows, m, s.gathered.data(), s.gate.data());
                    adapt_expert(c, w, adapted, e, Projection::kUp, rows, m, s.gathered.data(), s.up.data());
                    add_held_bias(ex.gate_bias, s.gate.data(), m);
                    add_held_bias(ex.up_bias, s.up.data(), m);
                    expert_activation(c, s.gate.data(), s.up.data(), m);
                    float* const down_out[] = {s.out.data()};
                    block_products(s.gate.data(), m, alone, std::span(&ex.down_proj.view, 1), down_out);
                    adapt_expert(c, w, adapted, e, Projection::kDown, rows, m, s.gate.data(), s.out.data());
                    add_held_bias(ex.down_bias, s.out.data(), m);
                    for (std::int64_t i = 0; i < m; ++i) {
                      const float weight = s.routing.weight[static_cast<std::size_t>(slots[i])];
                      float* row = out + rows[i] * h;
                      const float* y = s.out.data() + i * h;
                      for (std::int64_t d = 0; d < h; ++d) row[d] += weight * y[d];
                    }
                  });
}

// The shared expert's gate for row r: Qwen2-MoE's sigmoid(x[r] · shared_expert_gate) (its logit
// computed beside the gate and up products), or 1 (Granite-MoE-Shared).
float shared_gate_value(const ModelConfig& c, const float* logits, std::int64_t r) {
  return c.shared_expert_gated ? 1.0f / (1.0f + std::exp(-logits[r])) : 1.0f;
}

// out[r] += gate(r) · shared(x[r]) for the n rows.
void add_shared_expert(const ModelConfig& c, const BlockWeights& w, const float* x, std::int64_t n, bool alone, ExpertScratch& s,
                       float* out, std::span<const AdaptedRows> adapted) {
  const std::int64_t h = c.hidden_size, inter = c.shared_expert_intermediate_size, shared = c.num_experts;
  const WeightView ws[] = {w.shared_expert.gate_proj.view, w.shared_expert.up_proj.view, w.shared_expert_gate.view};
  float* const ys[] = {s.shared_gate.data(), s.shared_up.data(), s.shared_logit.data()};
  block_products(x, n, alone, std::span(ws, c.shared_expert_gated ? 3 : 2), std::span(ys, c.shared_expert_gated ? 3 : 2));
  std::vector<std::int32_t> rows(adapted.empty() ? 0 : static_cast<std::size_t>(n));  // every row, for its adapters
  std::iota(rows.begin(), rows.end(), 0);
  adapt_expert(c, w, adapted, shared, Projection::kGate, rows.data(), n, x, s.shared_gate.data());
  adapt_expert(c, w, adapted, shared, Projection::kUp, rows.data(), n, x, s.shared_up.data());
  gate_mul(c.mlp_activation, s.shared_gate.data(), s.shared_up.data(), n * inter);
  float* const down_out[] = {s.shared_out.data()};
  block_products(s.shared_gate.data(), n, alone, std::span(&w.shared_expert.down_proj.view, 1), down_out);
  adapt_expert(c, w, adapted, shared, Projection::kDown, rows.data(), n, s.shared_gate.data(), s.shared_out.data());
  for (std::int64_t r = 0; r < n; ++r) {
    const float g = shared_gate_value(c, s.shared_logit.data(), r);
    for (std::int64_t d = 0; d < h; ++d) out[r * h + d] += g * s.shared_out[static_cast<std::size_t>(r * h + d)];
  }
}

}  // namespace

void experts_training_forward(const ModelConfig& c, const BlockWeights& w, const float* x, std::int64_t t,
                              ExpertActivations& a, float* out, const BlockAdapters* adapters) {
  const AdaptedRows whole{0, t, adapters};
  const std::span<const AdaptedRows> adapted = adapters ? std::span(&whole, 1) : std::span<const AdaptedRows>();
  const std::int64_t h = c.hidden_size, inter = c.moe_intermediate_size, k = c.experts_per_token;
  std::vector<float> logits(static_cast<std::size_t>(t * c.num_experts));
  matmul(x, t, w.router.view, logits.data());
  add_held_bias(w.router_bias, logits.data(), t);
  route_experts(c, logits.data(), t, a.routing);
  a.gate.resize(static_cast<std::size_t>(t * k * inter));
  a.up.resize(a.gate.size());
  a.out.resize(static_cast<std::size_t>(t * k * h));
  AlignedFloats gathered(static_cast<std::size_t>(t * h)), gate(static_cast<std::size_t>(t * inter)),
      up(gate.size()), y(gathered.size());
  std::vector<std::int32_t> rows, slots;
  std::fill(out, out + t * h, 0.0f);
  for_each_expert(a.routing, t, c.num_experts, rows, slots,
                  [&](std::int64_t e, std::int64_t m, const std::int32_t* rs, const std::int32_t* ss) {
                    const BlockWeights::Expert& ex = w.experts[static_cast<std::size_t>(e)];
                    gather_rows(x, h, rs, m, gathered.data());
                    const WeightView gate_up[] = {ex.gate_proj.view, ex.up_proj.view};
                    float* const gate_up_out[] = {gate.data(), up.data()};
                    matmul_many(gathered.data(), m, gate_up, gate_up_out);
                    adapt_expert(c, w, adapted, e, Projection::kGate, rs, m, gathered.data(), gate.data());
                    adapt_expert(c, w, adapted, e, Projection::kUp, rs, m, gathered.data(), up.data());
                    add_held_bias(ex.gate_bias, gate.data(), m);
                    add_held_bias(ex.up_bias, up.data(), m);
                    for (std::int64_t i = 0; i < m; ++i) {
                      std::copy_n(gate.data() + i * inter, inter, a.gate.data() + ss[i] * inter);
                      std::copy_n(up.data() + i * inter, inter, a.up.data() + ss[i] * inter);
                    }
                    expert_activation(c, gate.data(), up.data(), m);
                    matmul(gate.data(), m, ex.down_proj.view, y.data());
                    adapt_expert(c, w, adapted, e, Projection::kDown, rs, m, gate.data(), y.data());
                    add_held_bias(ex.down_bias, y.data(), m);
                    for (std::int64_t i = 0; i < m; ++i) {
                      std::copy_n(y.data() + i * h, h, a.out.data() + ss[i] * h);
                      const float weight = a.routing.weight[static_cast<std::size_t>(ss[i])];
                      float* row = out + rs[i] * h;
                      for (std::int64_t d = 0; d < h; ++d) row[d] += weight * y[static_cast<std::size_t>(i * h + d)];
                    }
                  });
  if (const std::int64_t si = c.shared_expert_intermediate_size; si > 0) {  // the shared expert
    a.shared_gate.resize(static_cast<std::size_t>(t * si));
    a.shared_up.resize(a.shared_gate.size());
    a.shared_out.resize(static_cast<std::size_t>(t * h));
    a.shared_logit.resize(static_cast<std::size_t>(t));
    const WeightView ws[] = {w.shared_expert.gate_proj.view, w.shared_expert.up_proj.view, w.shared_expert_gate.view};
    float* const ys[] = {a.shared_gate.data(), a.shared_up.data(), a.shared_logit.data()};
    matmul_many(x, t, std::span(ws, c.shared_expert_gated ? 3 : 2), std::span(ys, c.shared_expert_gated ? 3 : 2));
    std::vector<std::int32_t> rows(adapters ? static_cast<std::size_t>(t) : 0);
    std::iota(rows.begin(), rows.end(), 0);
    adapt_expert(c, w, adapted, c.num_experts, Projection::kGate, rows.data(), t, x, a.shared_gate.data());
    adapt_expert(c, w, adapted, c.num_experts, Projection::kUp, rows.data(), t, x, a.shared_up.data());
    std::vector<float> act = a.shared_gate;
    gate_mul(c.mlp_activation, act.data(), a.shared_up.data(), t * si);
    matmul(act.data(), t, w.shared_expert.down_proj.view, a.shared_out.data());
    adapt_expert(c, w, adapted, c.num_experts, Projection::kDown, rows.data(), t, act.data(), a.shared_out.data());
    for (std::int64_t r = 0; r < t; ++r) {
      const float g = shared_gate_value(c, a.shared_logit.data(), r);
      for (std::int64_t d = 0; d < h; ++d) out[r * h + d] += g * a.shared_out[static_cast<std::size_t>(r * h + d)];
    }
  }
}

void experts_input_grad(const ModelConfig& c, const BlockWeights& w, std::int64_t t, const ExpertActivations& a,
                        const float* x, const float* dout, float* dx, const BlockAdapters* adapters, float* adapter_grads) {
  if (adapters && !adapter_grads) fail("a backward pass with adapters needs somewhere to put their gradients");
  const std::int64_t h = c.hidden_size, inter = c.moe_intermediate_size, k = a.routing.k, experts = c.num_experts;
  // The router: out_r = Σ_j weight_rj · y_rj, so d loss / d weight_rj = dout_r · y_rj; through the
  // softmax (over the picked experts where renormalised, else over all) to the logits.
  std::vector<float> d_logits(static_cast<std::size_t>(t * experts), 0.0f);
  for (std::int64_t r = 0; r < t; ++r) {
    std::vector<double> dw(static_cast<std::size_t>(k));
    double weighted = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      const float* y = a.out.data() + (r * k + j) * h;
      double d = 0;
      for (std::int64_t i = 0; i < h; ++i) d += static_cast<double>(dout[r * h + i]) * y[i];
      dw[static_cast<std::size_t>(j)] = d;
      weighted += a.routing.weight[static_cast<std::size_t>(r * k + j)] * d;
    }
    float* dl = d_logits.data() + r * experts;
    const float* p = a.routing.probs.data() + r * experts;
    if (c.moe_renormalize) {  // weight_j = softmax over the picked logits
      for (std::int64_t j = 0; j < k; ++j) {
        const auto e = a.routing.expert[static_cast<std::size_t>(r * k + j)];
        dl[e] = static_cast<float>(a.routing.weight[static_cast<std::size_t>(r * k + j)] * (dw[static_cast<std::size_t>(j)] - weighted));
      }
    } else {  // weight_j = p_j, the softmax over every expert
      for (std::int64_t e = 0; e < experts; ++e) dl[e] = static_cast<float>(-p[e] * weighted);
      for (std::int64_t j = 0; j < k; ++j) {
        const auto e = a.routing.expert[static_cast<std::size_t>(r * k + j)];
        dl[e] += static_cast<float>(p[e] * dw[static_cast<std::size_t>(j)]);
      }
    }
  }
  matmul_input_grad(d_logits.data(), t, w.router.view, dx);
  // Each expert over its rows: dy = weight · dout, back through down, the gate and gate, up.
  AlignedFloats dy(static_cast<std::size_t>(t * h)), d_act(static_cast<std::size_t>(t * inter)), gate(d_act.size()),
      up(d_act.size()), d_gate(d_act.size()), d_up(d_act.size()), dx_e(dy.size()), part(dy.size()),
      gathered(adapters ? dy.size() : 0), act(adapters ? d_act.size() : 0);
  std::vector<std::int32_t> rows, slots;
  for_each_expert(a.routing, t, experts, rows, slots,
                  [&](std::int64_t e, std::int64_t m, const std::int32_t* rs, const std::int32_t* ss) {
                    for (std::int64_t i = 0; i < m; ++i) {
                      const float weight = a.routing.weight[static_cast<std::size_t>(ss[i])];
                      for (std::int64_t d = 0; d < h; ++d) dy[static_cast<std::size_t>(i * h + d)] = weight * dout[rs[i] * h + d];
                      std::copy_n(a.gate.data() + ss[i] * inter, inter, gate.data() + i * inter);
                      std::copy_n(a.up.data() + ss[i] * inter, inter, up.data() + i * inter);
                    }
                    if (adapters) {  // the adapters' inputs: the rows, and the activation down took
                      gather_rows(x, h, rs, m, gathered.data());
                      std::copy_n(gate.data(), m * inter, act.data());
                      expert_activation(c, act.data(), up.data(), m);
                    }
                    expert_product_input_grad(c, w, adapters, adapter_grads, e, Projection::kDown, act.data(), m, dy.data(),
                                              d_act.data());
                    gate_mul_input_grad(c.mlp_activation, gate.data(), up.data(), d_act.data(), d_gate.data(), d_up.data(),
                                        m * inter, c.swiglu_limit);
                    expert_product_input_grad(c, w, adapters, adapter_grads, e, Projection::kGate, gathered.data(), m,
                                              d_gate.data(), dx_e.data());
                    expert_product_input_grad(c, w, adapters, adapter_grads, e, Projection::kUp, gathered.data(), m,
                                              d_up.data(), part.data());
                    for (std::int64_t i = 0; i < m; ++i) {
                      float* row = dx + rs[i] * h;
                      for (std::int64_t d = 0; d < h; ++d) {
                        row[d] += dx_e[static_cast<std::size_t>(i * h + d)] + part[static_cast<std::size_t>(i * h + d)];
                      }
                    }
                  });
  if (const std::int64_t si = c.shared_expert_intermediate_size; si > 0) {
    // out += g · y_s with g = sigmoid(logit): d y_s = g · dout, d logit = (dout · y_s) g (1 - g);
    // ungated (g = 1): d y_s = dout.
    std::vector<float> dy_s(static_cast<std::size_t>(t * h)), d_logit(static_cast<std::size_t>(t)),
        d_act_s(static_cast<std::size_t>(t * si)), d_gate_s(d_act_s.size()), d_up_s(d_act_s.size()), part_s(dy_s.size());
    for (std::int64_t r = 0; r < t; ++r) {
      const float g = shared_gate_value(c, a.shared_logit.data(), r);
      double dot = 0;
      for (std::int64_t d = 0; d < h; ++d) {
        dot += static_cast<double>(dout[r * h + d]) * a.shared_out[static_cast<std::size_t>(r * h + d)];
        dy_s[static_cast<std::size_t>(r * h + d)] = g * dout[r * h + d];
      }
      d_logit[static_cast<std::size_t>(r)] = static_cast<float>(dot * g * (1.0f - g));
    }
    std::vector<float> act_s;  // what the down product took, for its adapter
    if (adapters) {
      act_s = a.shared_gate;
      gate_mul(c.mlp_activation, act_s.data(), a.shared_up.data(), t * si);
    }
    const std::int64_t shared = c.num_experts;  // its adapters' copy
    expert_product_input_grad(c, w, adapters, adapter_grads, shared, Projection::kDown, act_s.data(), t, dy_s.data(),
                              d_act_s.data());
    gate_mul_input_grad(c.mlp_activation, a.shared_gate.data(), a.shared_up.data(), d_act_s.data(), d_gate_s.data(), d_up_s.data(),
                        t * si);
    expert_product_input_grad(c, w, adapters, adapter_grads, shared, Projection::kGate, x, t, d_gate_s.data(), part_s.data());
    add_in_place(dx, part_s.data(), t * h);
    expert_product_input_grad(c, w, adapters, adapter_grads, shared, Projection::kUp, x, t, d_up_s.data(), part_s.data());
    add_in_place(dx, part_s.data(), t * h);
    if (c.shared_expert_gated) {
      matmul_input_grad(d_logit.data(), t, w.shared_expert_gate.view, part_s.data());
      add_in_place(dx, part_s.data(), t * h);
    }
  }
}

}  // namespace sepal

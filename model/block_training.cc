// Training passes of BlockStack (model/block_stack.h): the forward over packed whole sequences,
// and its backward with respect to the input (and to deep prompts), weights frozen.
#include <algorithm>
#include <numeric>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "model/block_stack.h"

namespace sepal {
namespace {

// One block's activations over the batch, as its backward needs them, and the scratch of the
// forward and backward; allocated once per pass and reused by every block (fresh memory costs a
// page fault per page). Keys and values are per sequence in the attention kernels' layout
// [kv_heads, length, head_dim], one sequence after another.
struct Activations {
  std::vector<float> input, normed1, q, keys, values, attn, mid, normed2, gate, up, act;
  std::vector<float> k_rows, v_rows;  // forward scratch: keys and values as the projections give them
  // backward scratch
  std::vector<float> d_act, d_gate, d_up, d_norm, part, d_attn, dq, dk_heads, dv_heads, dk, dv;
  Activations(const ModelConfig& c, std::int64_t t)
      : input(t * c.hidden_size), normed1(t * c.hidden_size), q(t * c.q_size()), keys(t * c.kv_size()),
        values(t * c.kv_size()), attn(t * c.q_size()), mid(t * c.hidden_size), normed2(t * c.hidden_size),
        gate(t * c.intermediate_size), up(t * c.intermediate_size), act(t * c.intermediate_size),
        k_rows(t * c.kv_size()), v_rows(t * c.kv_size()) {}
  // Sizes the backward's scratch (not needed by a forward-only pass).
  void for_backward(const ModelConfig& c, std::int64_t t) {
    const auto inter = static_cast<std::size_t>(t * c.intermediate_size), h = static_cast<std::size_t>(t * c.hidden_size);
    const auto q = static_cast<std::size_t>(t * c.q_size()), kv = static_cast<std::size_t>(t * c.kv_size());
    d_act.resize(inter), d_gate.resize(inter), d_up.resize(inter), d_norm.resize(h), part.resize(h);
    d_attn.resize(q), dq.resize(q), dk_heads.resize(kv), dv_heads.resize(kv), dk.resize(kv), dv.resize(kv);
  }
};

// The batch's layout: where each sequence starts and every token's position in its sequence.
struct Packing {
  std::vector<std::int64_t> starts, positions;
  std::int64_t tokens = 0;
  explicit Packing(std::span<const std::int64_t> lengths) {
    for (std::int64_t n : lengths) {
      starts.push_back(tokens);
      for (std::int64_t p = 0; p < n; ++p) positions.push_back(p);
      tokens += n;
    }
  }
};

// rows [n, heads, head_dim] -> heads-major [heads, n, head_dim], and back.
void rows_to_heads(const float* rows, std::int64_t n, std::int64_t heads, std::int64_t hd, float* out) {
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      std::copy_n(rows + (t * heads + h) * hd, hd, out + (h * n + t) * hd);
}
void heads_to_rows(const float* heads_major, std::int64_t n, std::int64_t heads, std::int64_t hd, float* rows) {
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      std::copy_n(heads_major + (h * n + t) * hd, hd, rows + (t * heads + h) * hd);
}

void add_prompt(const ModelConfig& c, const DeepPrompts* prompts, std::int64_t block, const Packing& pack,
                float* hidden) {
  if (!prompts || prompts->count == 0) return;
  const std::int64_t h = c.hidden_size;
  const float* values = prompts->values + block * prompts->count * h;
  for (std::int64_t start : pack.starts) {
    add_in_place(hidden + (start + prompts->offset) * h, values, prompts->count * h);
  }
}

// The forward of one block over the batch, in place on `hidden`, keeping what the backward needs.
void block_forward(const ModelConfig& c, const BlockWeights& w, const double* inv_freq, const Packing& pack,
                   float* hidden, Activations& a) {
  const std::int64_t t = pack.tokens, h = c.hidden_size, kv = c.kv_size();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionDims dims{c.num_heads, c.num_kv_heads, c.head_dim};
  std::copy_n(hidden, t * h, a.input.data());
  rmsnorm(hidden, t, h, w.input_norm.data, eps, a.normed1.data());
  std::vector<float>& k = a.k_rows;
  std::vector<float>& v = a.v_rows;
  const WeightView qkv[] = {w.q_proj.view, w.k_proj.view, w.v_proj.view};
  float* const qkv_out[] = {a.q.data(), k.data(), v.data()};
  matmul_many(a.normed1.data(), t, qkv, qkv_out);
  rope_rotate_half(a.q.data(), t, c.num_heads, c.head_dim, pack.positions.data(), inv_freq);
  rope_rotate_half(k.data(), t, c.num_kv_heads, c.head_dim, pack.positions.data(), inv_freq);
  for (std::size_t s = 0; s < pack.starts.size(); ++s) {
    const std::int64_t start = pack.starts[s];
    const std::int64_t n = (s + 1 < pack.starts.size() ? pack.starts[s + 1] : t) - start;
    rows_to_heads(k.data() + start * kv, n, c.num_kv_heads, c.head_dim, a.keys.data() + start * kv);
    rows_to_heads(v.data() + start * kv, n, c.num_kv_heads, c.head_dim, a.values.data() + start * kv);
    attention_causal(a.q.data() + start * c.q_size(), n, 0, a.keys.data() + start * kv,
                     a.values.data() + start * kv, n, dims, a.attn.data() + start * c.q_size());
  }
  matmul(a.attn.data(), t, w.o_proj.view, hidden);
  add_in_place(hidden, a.input.data(), t * h);
  std::copy_n(hidden, t * h, a.mid.data());

  rmsnorm(hidden, t, h, w.post_attention_norm.data, eps, a.normed2.data());
  const WeightView gate_up[] = {w.gate_proj.view, w.up_proj.view};
  float* const gate_up_out[] = {a.gate.data(), a.up.data()};
  matmul_many(a.normed2.data(), t, gate_up, gate_up_out);
  a.act = a.gate;
  silu_mul(a.act.data(), a.up.data(), t * c.intermediate_size);
  matmul(a.act.data(), t, w.down_proj.view, hidden);
  add_in_place(hidden, a.mid.data(), t * h);
}

// The backward of one block: grad holds d loss / d output and becomes d loss / d input.
void block_backward(const ModelConfig& c, const BlockWeights& w, const double* inv_freq, const Packing& pack,
                    Activations& a, float* grad) {
  const std::int64_t t = pack.tokens, h = c.hidden_size, kv = c.kv_size(), qs = c.q_size();
  const std::int64_t inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionDims dims{c.num_heads, c.num_kv_heads, c.head_dim};
  std::vector<float>&d_act = a.d_act, &d_gate = a.d_gate, &d_up = a.d_up, &d_norm = a.d_norm, &part = a.part;

  // MLP: out = mid + down(silu(gate(n2)) · up(n2)), n2 = rmsnorm(mid).
  matmul_input_grad(grad, t, w.down_proj.view, d_act.data());
  silu_mul_input_grad(a.gate.data(), a.up.data(), d_act.data(), d_gate.data(), d_up.data(), t * inter);
  matmul_input_grad(d_gate.data(), t, w.gate_proj.view, d_norm.data());
  matmul_input_grad(d_up.data(), t, w.up_proj.view, part.data());
  add_in_place(d_norm.data(), part.data(), t * h);
  rmsnorm_input_grad(a.mid.data(), t, h, w.post_attention_norm.data, eps, d_norm.data(), d_norm.data());
  add_in_place(grad, d_norm.data(), t * h);  // now d loss / d mid

  // Attention: mid = input + o(attention(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rmsnorm(input).
  std::vector<float>&d_attn = a.d_attn, &dq = a.dq, &dk_heads = a.dk_heads, &dv_heads = a.dv_heads, &dk = a.dk,
                    &dv = a.dv;
  matmul_input_grad(grad, t, w.o_proj.view, d_attn.data());
  for (std::size_t s = 0; s < pack.starts.size(); ++s) {
    const std::int64_t start = pack.starts[s];
    const std::int64_t n = (s + 1 < pack.starts.size() ? pack.starts[s + 1] : t) - start;
    attention_causal_input_grad(a.q.data() + start * qs, a.keys.data() + start * kv, a.values.data() + start * kv,
                                n, dims, d_attn.data() + start * qs, dq.data() + start * qs,
                                dk_heads.data() + start * kv, dv_heads.data() + start * kv);
    heads_to_rows(dk_heads.data() + start * kv, n, c.num_kv_heads, c.head_dim, dk.data() + start * kv);
    heads_to_rows(dv_heads.data() + start * kv, n, c.num_kv_heads, c.head_dim, dv.data() + start * kv);
  }
  rope_rotate_half_input_grad(dq.data(), t, c.num_heads, c.head_dim, pack.positions.data(), inv_freq);
  rope_rotate_half_input_grad(dk.data(), t, c.num_kv_heads, c.head_dim, pack.positions.data(), inv_freq);
  matmul_input_grad(dq.data(), t, w.q_proj.view, d_norm.data());
  matmul_input_grad(dk.data(), t, w.k_proj.view, part.data());
  add_in_place(d_norm.data(), part.data(), t * h);
  matmul_input_grad(dv.data(), t, w.v_proj.view, part.data());
  add_in_place(d_norm.data(), part.data(), t * h);
  rmsnorm_input_grad(a.input.data(), t, h, w.input_norm.data, eps, d_norm.data(), d_norm.data());
  add_in_place(grad, d_norm.data(), t * h);
}

}  // namespace

void BlockStack::check_training_pass(std::span<const std::int64_t> lengths, std::int64_t first, std::int64_t blocks,
                                     const DeepPrompts* prompts) const {
  if (config_.family != ModelFamily::kLlama || config_.attention_bias || config_.sliding_window > 0) {
    fail("training passes through ", config_.architecture, " blocks are not supported yet");
  }
  if (blocks <= 0 || first < first_ || first + blocks > last_) {
    fail("blocks [", first, ", ", first + blocks, ") are not a part of the served blocks [", first_, ", ", last_, ")");
  }
  if (lengths.empty()) fail("a training pass needs at least one sequence");
  for (std::int64_t n : lengths) {
    if (n <= 0 || n > config_.max_position_embeddings) {
      fail("a sequence of ", n, " tokens; lengths must be between 1 and max_position_embeddings (",
           config_.max_position_embeddings, ")");
    }
    if (prompts && prompts->count > 0 && prompts->offset + prompts->count > n) {
      fail("deep prompts at positions [", prompts->offset, ", ", prompts->offset + prompts->count,
           ") do not fit in a sequence of ", n, " tokens");
    }
  }
  if (prompts && (prompts->count < 0 || prompts->offset < 0 || (prompts->count > 0 && !prompts->values))) {
    fail("deep prompts need values, a count >= 0 and an offset >= 0");
  }
}

void BlockStack::forward_sequences(float* hidden, std::span<const std::int64_t> lengths, std::int64_t first,
                                   std::int64_t blocks, const DeepPrompts* prompts) const {
  check_training_pass(lengths, first, blocks, prompts);
  const Packing pack(lengths);
  Activations a(config_, pack.tokens);
  for (std::int64_t i = 0; i < blocks; ++i) {
    add_prompt(config_, prompts, i, pack, hidden);
    block_forward(config_, blocks_[static_cast<std::size_t>(first - first_ + i)], inv_freq_.data(), pack, hidden, a);
  }
}

void BlockStack::backward_sequences(const float* input, std::span<const std::int64_t> lengths, std::int64_t first,
                                    std::int64_t blocks, const DeepPrompts* prompts, float* grad,
                                    float* prompt_grads) const {
  check_training_pass(lengths, first, blocks, prompts);
  const Packing pack(lengths);
  const std::int64_t h = config_.hidden_size, t = pack.tokens;
  // Each block's input (before its deep prompt), from one forward.
  std::vector<float> inputs(static_cast<std::size_t>(blocks * t * h));
  std::vector<float> hidden(input, input + t * h);
  Activations a(config_, t);
  a.for_backward(config_, t);
  for (std::int64_t i = 0; i < blocks; ++i) {
    std::copy(hidden.begin(), hidden.end(), inputs.begin() + i * t * h);
    if (i + 1 == blocks) break;
    add_prompt(config_, prompts, i, pack, hidden.data());
    block_forward(config_, blocks_[static_cast<std::size_t>(first - first_ + i)], inv_freq_.data(), pack,
                  hidden.data(), a);
  }
  const bool with_prompts = prompts && prompts->count > 0;
  for (std::int64_t i = blocks - 1; i >= 0; --i) {
    std::copy_n(inputs.begin() + i * t * h, t * h, hidden.begin());
    add_prompt(config_, prompts, i, pack, hidden.data());
    const BlockWeights& w = blocks_[static_cast<std::size_t>(first - first_ + i)];
    block_forward(config_, w, inv_freq_.data(), pack, hidden.data(), a);
    block_backward(config_, w, inv_freq_.data(), pack, a, grad);
    if (!with_prompts) continue;
    // The prompt was added to the block's input: its gradient is the input's, summed over sequences.
    float* out = prompt_grads + i * prompts->count * h;
    std::fill(out, out + prompts->count * h, 0.0f);
    for (std::int64_t start : pack.starts) add_in_place(out, grad + (start + prompts->offset) * h, prompts->count * h);
  }
}

std::int64_t BlockStack::training_working_bytes(std::int64_t tokens, std::int64_t blocks) const {
  const ModelConfig& c = config_;
  const std::int64_t activations = 4 * c.hidden_size + 2 * c.q_size() + 2 * c.kv_size() + 3 * c.intermediate_size;
  const std::int64_t backward = 3 * c.intermediate_size + 2 * c.hidden_size + 3 * c.q_size() + 6 * c.kv_size();
  const std::int64_t pass_io = (blocks + 3) * c.hidden_size;  // each block's input, the input, grad, hidden
  const std::int64_t int8_copies = 5 * std::max(c.hidden_size, c.intermediate_size) / 4;
  return tokens * (activations + backward + pass_io + int8_copies + 2 * c.kv_size()) *
         static_cast<std::int64_t>(sizeof(float));
}

}  // namespace sepal

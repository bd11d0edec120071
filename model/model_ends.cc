#include "model/model_ends.h"

#include <algorithm>
#include <cmath>

#include "kernels/aligned_vector.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/matmul.h"
#include "kernels/parallel.h"
#include "kernels/rmsnorm.h"
#include "kernels/softmax.h"

namespace sepal {
namespace {

// The head's products made logits: divided by Granite's logits_scaling, and Gemma 2's
// soft-capping, cap · tanh(x / cap); in place.
void finish_logits(const ModelConfig& c, float* logits, std::int64_t count) {
  if (c.logit_divisor != 1.0f) {
    for (std::int64_t i = 0; i < count; ++i) logits[i] /= c.logit_divisor;
  }
  if (c.final_logit_softcap > 0.0f) softcap(logits, count, c.final_logit_softcap);
}

}  // namespace

ModelEnds ModelEnds::load(const Checkpoint& checkpoint, const ModelConfig& config,
                          const WeightLoading& loading) {
  if (loading.dtype == DType::kF16) fail("weights can be held as f32, bf16 or int8, not f16");
  ModelEnds ends;
  ends.config_ = config;
  ends.embedding_ = load_embedding_weights(checkpoint, config, loading);
  ends.head_ = load_head_weights(checkpoint, config, loading, &ends.embedding_);
  // Up to 64 rows a batch, each row as alone, the head's weights read once for all.
  ends.head_batcher_ = std::make_shared<RowBatcher>(config.hidden_size, config.vocab_size, 64);
  return ends;
}

void ModelEnds::logits_of_row(const float* hidden, float* out, RowBatcher::Membership* member) const {
  if (!head_batcher_) return logits(hidden, 1, out);  // not loaded through load()
  head_batcher_->row(hidden, out, [this](const float* rows, std::int64_t n, float* logits) {
    logits_each_alone(rows, n, logits);
  }, member);
}

void ModelEnds::embed(const std::int32_t* tokens, std::int64_t n, float* out) const {
  for (std::int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= config_.vocab_size) {
      fail("token id ", tokens[t], " is outside the vocabulary of ", config_.vocab_size);
    }
    embedding_row(embedding_, tokens[t], out + t * config_.hidden_size);
  }
  if (config_.embedding_scale != 1.0f) {  // Gemma: √hidden_size
    for (std::int64_t i = 0; i < n * config_.hidden_size; ++i) out[i] *= config_.embedding_scale;
  }
  if (config_.family == ModelFamily::kBloom) {
    layernorm(out, n, config_.hidden_size, embedding_.norm.data, embedding_.norm_bias.data,
              static_cast<float>(config_.rms_norm_eps), out);
  }
}

void ModelEnds::final_norm(const float* hidden, std::int64_t n, float* out) const {
  const float eps = static_cast<float>(config_.rms_norm_eps);
  if (config_.family == ModelFamily::kBloom || config_.layer_norms) {  // Cohere's has no bias (null)
    layernorm(hidden, n, config_.hidden_size, head_.final_norm.data, head_.final_norm_bias.data, eps, out);
  } else {
    rmsnorm(hidden, n, config_.hidden_size, head_.final_norm.data, eps, out);
  }
}

void ModelEnds::logits(const float* hidden, std::int64_t n, float* out) const {
  AlignedFloats normed(static_cast<std::size_t>(n * config_.hidden_size));  // the head reads it in 64-byte loads
  final_norm(hidden, n, normed.data());
  matmul(normed.data(), n, head_.lm_head.view, out);
  finish_logits(config_, out, n * config_.vocab_size);
}

void ModelEnds::logits_each_alone(const float* hidden, std::int64_t n, float* out) const {
  AlignedFloats normed(static_cast<std::size_t>(n * config_.hidden_size));  // the head reads it in 64-byte loads
  final_norm(hidden, n, normed.data());
  float* const outs[] = {out};
  matmul_many_alone(normed.data(), n, std::span(&head_.lm_head.view, 1), outs);
  finish_logits(config_, out, n * config_.vocab_size);
}

double ModelEnds::cross_entropy(const float* hidden, std::int64_t n, const std::int32_t* targets, float weight,
                                float* grad) const {
  const std::int64_t h = config_.hidden_size, vocab = config_.vocab_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);
  constexpr std::int64_t kChunk = 64;
  std::vector<std::int64_t> rows;  // the rows with a target, in order
  for (std::int64_t t = 0; t < n; ++t) {
    if (targets[t] < 0) continue;
    if (targets[t] >= vocab) fail("target token id ", targets[t], " is outside the vocabulary of ", vocab);
    rows.push_back(t);
  }
  if (grad) std::fill(grad, grad + n * h, 0.0f);
  std::vector<float> x, normed, logits, d_normed, d_x, capped;
  std::vector<double> losses;
  const float cap = config_.final_logit_softcap;
  double total = 0;
  for (std::size_t c0 = 0; c0 < rows.size(); c0 += kChunk) {
    const std::int64_t m = std::min<std::int64_t>(kChunk, static_cast<std::int64_t>(rows.size() - c0));
    x.resize(static_cast<std::size_t>(m * h));
    normed.resize(x.size());
    logits.resize(static_cast<std::size_t>(m * vocab));
    for (std::int64_t i = 0; i < m; ++i) std::copy_n(hidden + rows[c0 + i] * h, h, x.begin() + i * h);
    final_norm(x.data(), m, normed.data());
    matmul(normed.data(), m, head_.lm_head.view, logits.data());
    if (config_.logit_divisor != 1.0f) {  // Granite
      for (float& l : logits) l /= config_.logit_divisor;
    }
    if (cap > 0.0f) {  // Gemma 2: capped keeps tanh(logit / cap) for the gradient
      capped.resize(logits.size());
      softcap(logits.data(), static_cast<std::int64_t>(logits.size()), cap, capped.data());
    }
    // The rows in parallel; their losses added in order, so the total is the same for every
    // thread count.
    losses.resize(static_cast<std::size_t>(m));
    parallel_for(m, [&](std::int64_t i) {
      float* row = logits.data() + i * vocab;
      const std::int32_t target = targets[rows[c0 + i]];
      const double lse = log_sum_exp(row, vocab);
      losses[static_cast<std::size_t>(i)] = lse - row[target];
      if (!grad) return;
      // d/d logits of -log softmax[target]: softmax - one_hot(target), scaled by weight.
      exp_shifted(row, vocab, lse, weight);
      row[target] -= weight;
      if (cap > 0.0f) {  // through cap · tanh(logit / cap)
        const float* t = capped.data() + i * vocab;
        for (std::int64_t v = 0; v < vocab; ++v) row[v] *= 1.0f - t[v] * t[v];
      }
      if (config_.logit_divisor != 1.0f) {
        for (std::int64_t v = 0; v < vocab; ++v) row[v] /= config_.logit_divisor;
      }
    });
    for (const double loss : losses) total += loss;
    if (!grad) continue;
    d_normed.resize(x.size());
    d_x.resize(x.size());
    matmul_input_grad(logits.data(), m, head_.lm_head.view, d_normed.data());
    if (config_.family == ModelFamily::kBloom || config_.layer_norms) {
      layernorm_input_grad(x.data(), m, h, head_.final_norm.data, eps, d_normed.data(), d_x.data());
    } else {
      rmsnorm_input_grad(x.data(), m, h, head_.final_norm.data, eps, d_normed.data(), d_x.data());
    }
    for (std::int64_t i = 0; i < m; ++i) std::copy_n(d_x.begin() + i * h, h, grad + rows[c0 + i] * h);
  }
  return total;
}

std::int64_t ModelEnds::weight_bytes() const {
  std::int64_t total = embedding_.table.view.bytes() + (head_.final_norm.size + head_.final_norm_bias.size) * 4 +
                       (embedding_.norm.size + embedding_.norm_bias.size) * 4;
  if (head_.lm_head.view.data != embedding_.table.view.data) total += head_.lm_head.view.bytes();
  return total;
}

}  // namespace sepal

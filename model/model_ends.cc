#include "model/model_ends.h"

#include "kernels/error.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"

namespace sepal {

ModelEnds ModelEnds::load(const Checkpoint& checkpoint, const ModelConfig& config,
                          const WeightLoading& loading) {
  if (loading.dtype == DType::kF16) fail("weights can be held as f32, bf16 or int8, not f16");
  ModelEnds ends;
  ends.config_ = config;
  ends.embedding_ = load_embedding_weights(checkpoint, config, loading);
  ends.head_ = load_head_weights(checkpoint, config, loading, &ends.embedding_);
  return ends;
}

void ModelEnds::embed(const std::int32_t* tokens, std::int64_t n, float* out) const {
  for (std::int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= config_.vocab_size) {
      fail("token id ", tokens[t], " is outside the vocabulary of ", config_.vocab_size);
    }
    embedding_row(embedding_, tokens[t], out + t * config_.hidden_size);
  }
}

void ModelEnds::logits(const float* hidden, std::int64_t n, float* out) const {
  std::vector<float> normed(static_cast<std::size_t>(n * config_.hidden_size));
  rmsnorm(hidden, n, config_.hidden_size, head_.final_norm.data,
          static_cast<float>(config_.rms_norm_eps), normed.data());
  matmul(normed.data(), n, head_.lm_head.view, out);
}

std::int64_t ModelEnds::weight_bytes() const {
  std::int64_t total = embedding_.table.view.bytes() + head_.final_norm.size * 4;
  if (head_.lm_head.view.data != embedding_.table.view.data) total += head_.lm_head.view.bytes();
  return total;
}

}  // namespace sepal

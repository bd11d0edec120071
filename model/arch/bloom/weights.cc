// BLOOM's weights, under the names of Hugging Face's BloomForCausalLM (with or without
// "transformer."); the fused query_key_value is split per head at load time.
#include "kernels/error.h"
#include "model/arch/architectures.h"
#include "model/weight_holding.h"

namespace sepal {
namespace {

// A BLOOM tensor: published checkpoints name them without the "transformer." prefix, the
// converted ones with it.
const TensorRef& bloom_tensor(const Checkpoint& checkpoint, const std::string& name) {
  if (const auto* t = checkpoint.find("transformer." + name)) return *t;
  if (const auto* t = checkpoint.find(name)) return *t;
  return checkpoint.get("transformer." + name);
}

// Rows [first, first + count) of every `stride` rows of a [rows, cols] tensor (or a vector), as f32.
TensorRef gather_rows(const TensorRef& t, std::int64_t heads, std::int64_t stride, std::int64_t first, std::int64_t count) {
  const std::int64_t cols = t.shape.size() > 1 ? t.shape[1] : 1;
  auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(heads * count * cols));
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t r = 0; r < count; ++r) {
      for (std::int64_t c = 0; c < cols; ++c) {
        (*values)[static_cast<std::size_t>((h * count + r) * cols + c)] = element_as_f32(t, (h * stride + first + r) * cols + c);
      }
    }
  }
  TensorRef out;
  out.name = t.name;
  out.dtype = DType::kF32;
  out.shape = t.shape.size() > 1 ? std::vector<std::int64_t>{heads * count, cols} : std::vector<std::int64_t>{heads * count};
  out.data = reinterpret_cast<const std::byte*>(values->data());
  out.bytes = values->size() * sizeof(float);
  out.storage = values;
  return out;
}

}  // namespace

BlockWeights load_bloom_block_weights(const Checkpoint& checkpoint, const ModelConfig& config, std::int64_t layer,
                                      const WeightLoading& loading) {
  const std::string p = "h." + std::to_string(layer) + ".";
  const std::int64_t h = config.hidden_size, ffn = config.intermediate_size, hd = config.head_dim;
  const std::int64_t heads = config.num_heads;
  auto tensor = [&](const std::string& name, std::initializer_list<std::int64_t> shape) -> const TensorRef& {
    const TensorRef& t = bloom_tensor(checkpoint, p + name);
    expect_shape(t, shape);
    return t;
  };
  auto matrix = [&](const std::string& name, std::int64_t rows, std::int64_t cols) {
    return hold_matrix(checkpoint, tensor(name, {rows, cols}), loading);
  };
  auto vector = [&](const std::string& name, std::int64_t size) { return hold_vector(tensor(name, {size}), loading); };
  BlockWeights b;
  b.layer = layer;
  b.input_norm = vector("input_layernorm.weight", h);
  b.input_norm_bias = vector("input_layernorm.bias", h);
  b.post_attention_norm = vector("post_attention_layernorm.weight", h);
  b.post_attention_norm_bias = vector("post_attention_layernorm.bias", h);
  // query_key_value's rows are [heads, 3, head_dim]: each head's query, key and value rows.
  const TensorRef& qkv = tensor("self_attention.query_key_value.weight", {3 * h, h});
  const TensorRef& qkv_bias = tensor("self_attention.query_key_value.bias", {3 * h});
  if (qkv.dtype == DType::kI8) fail("int8 BLOOM checkpoints are not supported (load f32 or bf16 with --dtype int8)");
  WeightLoading split = loading;
  split.in_place = false;
  b.q_proj = hold_matrix(checkpoint, gather_rows(qkv, heads, 3 * hd, 0, hd), split);
  b.k_proj = hold_matrix(checkpoint, gather_rows(qkv, heads, 3 * hd, hd, hd), split);
  b.v_proj = hold_matrix(checkpoint, gather_rows(qkv, heads, 3 * hd, 2 * hd, hd), split);
  b.q_bias = hold_vector(gather_rows(qkv_bias, heads, 3 * hd, 0, hd), split);
  b.k_bias = hold_vector(gather_rows(qkv_bias, heads, 3 * hd, hd, hd), split);
  b.v_bias = hold_vector(gather_rows(qkv_bias, heads, 3 * hd, 2 * hd, hd), split);
  b.o_proj = matrix("self_attention.dense.weight", h, h);
  b.o_bias = vector("self_attention.dense.bias", h);
  b.up_proj = matrix("mlp.dense_h_to_4h.weight", ffn, h);
  b.up_bias = vector("mlp.dense_h_to_4h.bias", ffn);
  b.down_proj = matrix("mlp.dense_4h_to_h.weight", h, ffn);
  b.down_bias = vector("mlp.dense_4h_to_h.bias", h);
  return b;
}

EmbeddingWeights load_bloom_embedding(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading) {
  const TensorRef& t = bloom_tensor(checkpoint, "word_embeddings.weight");
  expect_shape(t, {config.vocab_size, config.hidden_size});
  EmbeddingWeights e{hold_matrix(checkpoint, t, loading), {}, {}};
  for (auto [name, out] : {std::pair{"word_embeddings_layernorm.weight", &e.norm}, std::pair{"word_embeddings_layernorm.bias", &e.norm_bias}}) {
    const TensorRef& v = bloom_tensor(checkpoint, name);
    expect_shape(v, {config.hidden_size});
    *out = hold_vector(v, loading);
  }
  return e;
}

HeadWeights load_bloom_head(const Checkpoint& checkpoint, const ModelConfig& config, const WeightLoading& loading,
                            const EmbeddingWeights* embedding) {
  HeadWeights head;
  const TensorRef& norm = bloom_tensor(checkpoint, "ln_f.weight");
  const TensorRef& bias = bloom_tensor(checkpoint, "ln_f.bias");
  expect_shape(norm, {config.hidden_size});
  expect_shape(bias, {config.hidden_size});
  head.final_norm = hold_vector(norm, loading);
  head.final_norm_bias = hold_vector(bias, loading);
  if (embedding) {
    head.lm_head = embedding->table;
  } else {
    const TensorRef& t = bloom_tensor(checkpoint, "word_embeddings.weight");
    expect_shape(t, {config.vocab_size, config.hidden_size});
    head.lm_head = hold_matrix(checkpoint, t, loading);
  }
  return head;
}

}  // namespace sepal

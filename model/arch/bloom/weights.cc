// BLOOM's weights, under the names of Hugging Face's BloomForCausalLM (with or without
// "transformer."); the fused query_key_value is split per head at load time.
#include <cstring>

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

// A fused tensor's rows (or a vector's elements) that are one projection's, in its own dtype.
TensorRef gather_rows(const TensorRef& t, const ProjectionModule& m, std::int64_t count) {
  const std::int64_t cols = t.shape.size() > 1 ? t.shape[1] : 1;
  const auto row_bytes = static_cast<std::size_t>(cols) * dtype_size(t.dtype);
  auto bytes = std::make_shared<std::vector<std::byte>>(static_cast<std::size_t>(count) * row_bytes);
  for (std::int64_t r = 0; r < count; ++r) {
    std::memcpy(bytes->data() + static_cast<std::size_t>(r) * row_bytes,
                t.data + static_cast<std::size_t>(m.module_row(r)) * row_bytes, row_bytes);
  }
  TensorRef out;
  out.name = t.name;
  out.dtype = t.dtype;
  out.shape = t.shape.size() > 1 ? std::vector<std::int64_t>{count, cols} : std::vector<std::int64_t>{count};
  out.data = bytes->data();
  out.bytes = bytes->size();
  out.storage = bytes;
  return out;
}

}  // namespace

ProjectionModule bloom_projection_module(const ModelConfig& config, std::int64_t layer, Projection p) {
  const std::string prefix = "transformer.h." + std::to_string(layer) + ".";
  const std::int64_t h = config.hidden_size, hd = config.head_dim;
  switch (p) {
    case Projection::kQ:
    case Projection::kK:
    case Projection::kV: {
      const std::int64_t part = p == Projection::kQ ? 0 : p == Projection::kK ? 1 : 2;
      return {prefix + "self_attention.query_key_value", "query_key_value", 3 * h, hd, 3 * hd, part * hd};
    }
    case Projection::kO: return {prefix + "self_attention.dense", "dense", h, h, h, 0};
    case Projection::kUp: return {prefix + "mlp.dense_h_to_4h", "dense_h_to_4h", config.intermediate_size,
                                  config.intermediate_size, config.intermediate_size, 0};
    case Projection::kDown: return {prefix + "mlp.dense_4h_to_h", "dense_4h_to_h", h, h, h, 0};
    case Projection::kGate: break;
  }
  fail(config.architecture, " blocks have no ", projection_name(p));
}

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
  // An int8 checkpoint (sepal quantize) holds the fused rows' scales too, in the same order.
  const TensorRef* qkv_scales = qkv.dtype == DType::kI8 ? &tensor("self_attention.query_key_value.SCB", {3 * h}) : nullptr;
  WeightLoading split = loading;
  split.in_place = false;
  for (const auto& [part, weight, bias] : {std::tuple{Projection::kQ, &b.q_proj, &b.q_bias},
                                           std::tuple{Projection::kK, &b.k_proj, &b.k_bias},
                                           std::tuple{Projection::kV, &b.v_proj, &b.v_bias}}) {
    const ProjectionModule m = bloom_projection_module(config, layer, part);
    const TensorRef rows = gather_rows(qkv, m, heads * hd);
    *weight = qkv_scales ? hold_int8_rows(rows, gather_rows(*qkv_scales, m, heads * hd), split)
                         : hold_matrix(checkpoint, rows, split);
    *bias = hold_vector(gather_rows(qkv_bias, m, heads * hd), split);
  }
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

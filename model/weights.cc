#include "model/weights.h"

#include "model/arch/architectures.h"
#include "model/weight_holding.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/parallel.h"
#include "kernels/quantize.h"
#include "model/huge_buffer.h"

namespace sepal {
namespace {

// f(begin, end) for chunks of 64 Ki elements that cover [0, n), spread over the kernels' threads.
template <typename F>
void for_each_chunk(std::int64_t n, F&& f) {
  constexpr std::int64_t kChunk = 1 << 16;
  parallel_for((n + kChunk - 1) / kChunk, [&](std::int64_t c) { f(c * kChunk, std::min(n, (c + 1) * kChunk)); });
}

// Weights used in place need their natural alignment; a misaligned tensor is copied instead.
bool usable_in_place(const TensorRef& t, DType dtype) {
  return t.dtype == dtype &&
         reinterpret_cast<std::uintptr_t>(t.data) % dtype_size(dtype) == 0;
}

// Drops this process's mapping of the whole pages inside a tensor's bytes once they were copied;
// the page cache keeps them, so nothing is lost but resident memory.
void release_source_pages(const TensorRef& t) {
  if (!t.mapped) return;  // converted values in memory: dropping their pages would zero them
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<std::uintptr_t>(t.data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<std::uintptr_t>(t.data) + t.bytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// LLM.int8() weights: each row quantized by its absmax; the scales follow the int8 values in the
// same buffer.
HeldMatrix hold_int8_matrix(const TensorRef& t, const WeightLoading& loading) {
  HeldMatrix m;
  m.view.dtype = DType::kI8;
  m.view.rows = t.shape.at(0);
  m.view.cols = t.shape.size() > 1 ? t.shape[1] : 1;
  m.view.outlier_threshold = loading.outlier_threshold;
  const std::int64_t rows = m.view.rows, cols = m.view.cols;
  const std::int64_t scales_offset = (rows * cols + 63) / 64 * 64;
  auto buffer = allocate_huge_buffer(static_cast<std::size_t>(scales_offset + rows * 4));
  auto* q = static_cast<std::int8_t*>(buffer.get());
  auto* scales = reinterpret_cast<float*>(q + scales_offset);
  std::atomic<std::int64_t> bad_row{rows};  // the first row that holds NaN or infinity
  parallel_for(rows, [&](std::int64_t r) {
    thread_local std::vector<float> row;
    row.resize(static_cast<std::size_t>(cols));
    elements_as_f32(t, r * cols, cols, row.data());
    try {
      scales[r] = quantize_row_i8(row.data(), cols, q + r * cols);
    } catch (const Error&) {
      for (std::int64_t seen = bad_row.load(); r < seen && !bad_row.compare_exchange_weak(seen, r);) {
      }
    }
  });
  if (bad_row.load() < rows) fail("tensor '", t.name, "' row ", bad_row.load(), " holds NaN or infinity");
  release_source_pages(t);
  m.view.data = q;
  m.view.scales = scales;
  m.storage = std::move(buffer);
  return m;
}

// An int8 tensor of the checkpoint with its row scales `scales` (bitsandbytes' SCB: each row's
// absmax, so a value is q * SCB / 127): validated, then held as int8 or dequantized.
HeldMatrix hold_stored_int8_matrix(const TensorRef& t, const TensorRef* scales_tensor, const std::string& scales_name,
                                   const WeightLoading& loading) {
  const std::int64_t rows = t.shape.at(0), cols = t.shape.size() > 1 ? t.shape[1] : 1;
  if (!scales_tensor) fail("tensor '", t.name, "' is int8 but its row scales '", scales_name, "' are missing");
  std::vector<float> scales(static_cast<std::size_t>(scales_tensor->elements()));
  for (std::size_t i = 0; i < scales.size(); ++i) scales[i] = element_as_f32(*scales_tensor, static_cast<std::int64_t>(i));
  const std::string bad = check_quantized_scales("tensor '" + scales_name + "'", rows, scales.data(),
                                                 static_cast<std::int64_t>(scales.size()));
  if (!bad.empty()) fail(bad);
  for (auto& s : scales) s /= 127.0f;
  const auto* q = reinterpret_cast<const std::int8_t*>(t.data);
  HeldMatrix m;
  m.view.rows = rows;
  m.view.cols = cols;
  if (loading.dtype == DType::kI8) {
    const std::int64_t scales_offset = (rows * cols + 63) / 64 * 64;
    auto buffer = allocate_huge_buffer(static_cast<std::size_t>(scales_offset + rows * 4));
    auto* data = static_cast<std::int8_t*>(buffer.get());
    std::memcpy(data, q, static_cast<std::size_t>(rows * cols));
    auto* held_scales = reinterpret_cast<float*>(data + scales_offset);
    std::memcpy(held_scales, scales.data(), scales.size() * 4);
    m.view.dtype = DType::kI8;
    m.view.outlier_threshold = loading.outlier_threshold;
    m.view.data = data;
    m.view.scales = held_scales;
    m.storage = std::move(buffer);
    return m;
  }
  m.view.dtype = loading.dtype;
  auto buffer = allocate_huge_buffer(static_cast<std::size_t>(rows * cols) * dtype_size(loading.dtype));
  parallel_for(rows, [&](std::int64_t r) {
    for (std::int64_t k = 0; k < cols; ++k) {
      const float v = static_cast<float>(q[r * cols + k]) * scales[static_cast<std::size_t>(r)];
      if (loading.dtype == DType::kF32) static_cast<float*>(buffer.get())[r * cols + k] = v;
      else static_cast<std::uint16_t*>(buffer.get())[r * cols + k] = f32_to_bf16(v);
    }
  });
  m.view.data = buffer.get();
  m.storage = std::move(buffer);
  return m;
}

// The row scales of an int8 tensor "x.weight" are "x.SCB", as bitsandbytes names them.
std::string scales_name_for(const std::string& name) {
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return name.substr(0, name.size() - suffix.size()) + ".SCB";
  }
  return name + ".SCB";
}

}  // namespace

void elements_as_f32(const TensorRef& t, std::int64_t first, std::int64_t count, float* out) {
  const std::byte* p = t.data + first * static_cast<std::int64_t>(dtype_size(t.dtype));
  switch (t.dtype) {
    case DType::kF32:
      std::memcpy(out, p, static_cast<std::size_t>(count) * 4);
      return;
    case DType::kF16:
      return f16_to_f32(p, count, out);
    case DType::kBF16:  // vectorized by the compiler
      for (std::int64_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + i * 2, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case DType::kI8: break;
  }
  fail("tensor '", t.name, "' is int8 where floating-point values are expected");
}

float element_as_f32(const TensorRef& t, std::int64_t i) {
  float v;
  elements_as_f32(t, i, 1, &v);
  return v;
}

void expect_shape(const TensorRef& t, std::initializer_list<std::int64_t> shape) {
  if (t.shape != std::vector<std::int64_t>(shape)) {
    std::string expected = "[";
    std::size_t i = 0;
    for (auto d : shape) expected += (i++ ? ", " : "") + std::to_string(d);
    expected += "]";
    fail("tensor '", t.name, "' has shape ", t.shape_string(), " but the model's configuration implies ", expected);
  }
}

TensorRef row_range(const TensorRef& t, std::int64_t first, std::int64_t count) {
  SEPAL_CHECK(!t.shape.empty() && first >= 0 && count >= 0 && first + count <= t.shape[0], "rows out of the tensor");
  const std::int64_t cols = t.shape.size() > 1 ? t.shape[1] : 1;
  const auto row_bytes = static_cast<std::size_t>(cols) * dtype_size(t.dtype);
  TensorRef part = t;
  part.shape[0] = count;
  part.data = t.data + static_cast<std::size_t>(first) * row_bytes;
  part.bytes = static_cast<std::size_t>(count) * row_bytes;
  return part;
}

HeldMatrix hold_int8_rows(const TensorRef& t, const TensorRef& scales, const WeightLoading& loading) {
  if (t.dtype != DType::kI8) fail("tensor '", t.name, "' is not int8");
  return hold_stored_int8_matrix(t, &scales, scales.name, loading);
}

namespace {
HeldMatrix hold_matrix_of(const Checkpoint& checkpoint, const TensorRef& t, const WeightLoading& loading);
}  // namespace

HeldMatrix hold_matrix(const Checkpoint& checkpoint, const TensorRef& t, const WeightLoading& loading) {
  HeldMatrix m = hold_matrix_of(checkpoint, t, loading);
  checkpoint.release(t);  // converted values copied (not held in place): dropped
  return m;
}

namespace {
HeldMatrix hold_matrix_of(const Checkpoint& checkpoint, const TensorRef& t, const WeightLoading& loading) {
  if (t.dtype == DType::kI8) {
    const std::string scales = scales_name_for(t.name);
    return hold_stored_int8_matrix(t, checkpoint.find(scales), scales, loading);
  }
  const DType dtype = loading.dtype;
  if (dtype == DType::kI8) return hold_int8_matrix(t, loading);
  SEPAL_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, "weights are held as f32, bf16 or int8");
  HeldMatrix m;
  m.view.dtype = dtype;
  m.view.rows = t.shape.at(0);
  m.view.cols = t.shape.size() > 1 ? t.shape[1] : 1;
  if (loading.in_place && usable_in_place(t, dtype)) {
    m.view.data = t.data;
    m.storage = t.storage;
    return m;
  }
  const std::int64_t n = t.elements();
  auto buffer = allocate_huge_buffer(static_cast<std::size_t>(n) * dtype_size(dtype));
  if (dtype == DType::kF32) {
    auto* out = static_cast<float*>(buffer.get());
    for_each_chunk(n, [&](std::int64_t begin, std::int64_t end) { elements_as_f32(t, begin, end - begin, out + begin); });
  } else {
    auto* out = static_cast<std::uint16_t*>(buffer.get());
    if (t.dtype == DType::kBF16) {
      std::memcpy(out, t.data, static_cast<std::size_t>(n) * 2);
    } else {
      for_each_chunk(n, [&](std::int64_t begin, std::int64_t end) {
        thread_local std::vector<float> values;
        values.resize(static_cast<std::size_t>(end - begin));
        elements_as_f32(t, begin, end - begin, values.data());
        for (std::int64_t i = begin; i < end; ++i) out[i] = f32_to_bf16(values[static_cast<std::size_t>(i - begin)]);
      });
    }
  }
  release_source_pages(t);
  m.view.data = buffer.get();
  m.storage = std::move(buffer);
  return m;
}
}  // namespace

HeldVector hold_vector(const TensorRef& t, const WeightLoading& loading) {
  HeldVector v;
  v.size = t.elements();
  if (loading.in_place && usable_in_place(t, DType::kF32)) {
    v.data = reinterpret_cast<const float*>(t.data);
    v.storage = t.storage;
    return v;
  }
  auto buffer = allocate_huge_buffer(static_cast<std::size_t>(v.size) * 4);
  auto* out = static_cast<float*>(buffer.get());
  for (std::int64_t i = 0; i < v.size; ++i) out[i] = element_as_f32(t, i);
  v.data = out;
  v.storage = std::move(buffer);
  return v;
}

HeldVector hold_norm_weights(const TensorRef& t, const WeightLoading& loading, const ModelConfig& config) {
  if (!config.norm_weight_plus_one) return hold_vector(t, loading);
  HeldVector v;
  v.size = t.elements();
  auto buffer = allocate_huge_buffer(static_cast<std::size_t>(v.size) * 4);
  auto* out = static_cast<float*>(buffer.get());
  // In f32, as Hugging Face's Gemma computes 1 + weight.float().
  for (std::int64_t i = 0; i < v.size; ++i) out[i] = 1.0f + element_as_f32(t, i);
  v.data = out;
  v.storage = std::move(buffer);
  return v;
}

std::int64_t BlockWeights::bytes() const {
  std::int64_t total = (input_norm.size + post_attention_norm.size) * 4;
  for (const HeldVector* v : {&input_norm_bias, &post_attention_norm_bias, &q_bias, &k_bias, &v_bias, &o_bias, &up_bias, &down_bias, &q_norm, &k_norm, &attention_out_norm, &mlp_out_norm, &sinks, &router_bias}) {
    total += v->size * 4;
  }
  for (const HeldMatrix* m : {&q_proj, &k_proj, &v_proj, &o_proj, &gate_proj, &up_proj, &down_proj, &router}) {
    total += m->view.bytes();
  }
  const auto expert_bytes = [](const Expert& e) {
    return e.gate_proj.view.bytes() + e.up_proj.view.bytes() + e.down_proj.view.bytes() +
           (e.gate_bias.size + e.up_bias.size + e.down_bias.size) * 4;
  };
  for (const Expert& e : experts) total += expert_bytes(e);
  total += expert_bytes(shared_expert) + shared_expert_gate.view.bytes();
  return total;
}

BlockWeights load_block_weights(const Checkpoint& checkpoint, const ModelConfig& config,
                                std::int64_t layer, const WeightLoading& loading) {
  if (layer < 0 || layer >= config.num_layers) {
    fail("block ", layer, " does not exist: the model has ", config.num_layers, " blocks");
  }
  if (config.family == ModelFamily::kBloom) return load_bloom_block_weights(checkpoint, config, layer, loading);
  return load_llama_block_weights(checkpoint, config, layer, loading);
}

EmbeddingWeights load_embedding_weights(const Checkpoint& checkpoint, const ModelConfig& config,
                                        const WeightLoading& loading) {
  if (config.family == ModelFamily::kBloom) return load_bloom_embedding(checkpoint, config, loading);
  return load_llama_embedding(checkpoint, config, loading);
}

HeadWeights load_head_weights(const Checkpoint& checkpoint, const ModelConfig& config,
                              const WeightLoading& loading, const EmbeddingWeights* embedding) {
  if (config.family == ModelFamily::kBloom) return load_bloom_head(checkpoint, config, loading, embedding);
  return load_llama_head(checkpoint, config, loading, embedding);
}

void embedding_row(const EmbeddingWeights& embedding, std::int32_t token, float* out) {
  const WeightView& v = embedding.table.view;
  SEPAL_CHECK(token >= 0 && token < v.rows, "token id ", token, " outside the vocabulary");
  if (v.dtype == DType::kF32) {
    std::memcpy(out, static_cast<const float*>(v.data) + token * v.cols, v.cols * sizeof(float));
  } else if (v.dtype == DType::kI8) {
    dequantize_row_i8(static_cast<const std::int8_t*>(v.data) + token * v.cols, v.cols, v.scales[token], out);
  } else {
    const auto* row = static_cast<const std::uint16_t*>(v.data) + token * v.cols;
    for (std::int64_t i = 0; i < v.cols; ++i) out[i] = bf16_to_f32(row[i]);
  }
}

std::string describe_numerics(const WeightLoading& loading, std::string_view kernels) {
  std::string out(dtype_name(loading.dtype));
  out += " weights";
  if (loading.dtype == DType::kI8) {
    char threshold[32];
    std::snprintf(threshold, sizeof threshold, "%g", static_cast<double>(loading.outlier_threshold));
    out += std::string(" (outlier threshold ") + threshold + ")";
  }
  out += ", ";
  out += dtype_name(loading.kv_dtype);
  out += " caches, ";
  out += kernels;
  return out;
}

}  // namespace sepal

#pragma once
// What the tests of blocks on a device share: the device under test ($SEPAL_TEST_DEVICE: cpu by
// default, cuda where ctest runs a test's _cuda copy), the synthetic models of every kind of
// block a device runs, and how a device's values are held to the CPU's.

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/device.h"
#include "kernels/dtype.h"
#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/synthetic_checkpoint.h"
#include "tests/test_util.h"

namespace sepal {

inline Device device_under_test() {
  const char* text = std::getenv("SEPAL_TEST_DEVICE");
  return parse_device(text && *text ? text : "cpu");
}

struct DeviceShape {
  const char* name;
  SyntheticSpec spec;
};

inline std::vector<DeviceShape> device_shapes() {
  SyntheticSpec llama;
  llama.hidden_size = 128, llama.intermediate_size = 352, llama.num_layers = 3, llama.num_heads = 4, llama.num_kv_heads = 2;
  llama.vocab_size = 512, llama.max_position_embeddings = 1024, llama.seed = 7;
  llama.outlier_dims = 2;  // int8's outlier columns take part
  SyntheticSpec qwen = llama;
  qwen.architecture = "Qwen2ForCausalLM", qwen.seed = 8;
  SyntheticSpec qwen3 = llama;
  qwen3.architecture = "Qwen3ForCausalLM", qwen3.head_dim = 64, qwen3.seed = 11;  // q 256 wide from 128
  SyntheticSpec mistral = llama;
  mistral.architecture = "MistralForCausalLM", mistral.sliding_window = 6, mistral.seed = 9;
  SyntheticSpec bloom = llama;
  bloom.architecture = "BloomForCausalLM", bloom.num_kv_heads = 4, bloom.intermediate_size = 512, bloom.seed = 10;
  SyntheticSpec gemma = llama;
  gemma.architecture = "GemmaForCausalLM", gemma.head_dim = 64, gemma.num_kv_heads = 1, gemma.seed = 12;
  SyntheticSpec gemma2 = llama;  // a window on blocks 0 and 2, tight caps, a scale of its own
  gemma2.architecture = "Gemma2ForCausalLM", gemma2.head_dim = 64, gemma2.sliding_window = 6, gemma2.seed = 13;
  gemma2.attention_softcap = 1.0, gemma2.query_pre_attn_scalar = 40;
  SyntheticSpec gemma3 = llama;  // blocks 0 and 1 slide with their own RoPE base, block 2 does not
  gemma3.architecture = "Gemma3ForCausalLM", gemma3.head_dim = 64, gemma3.sliding_window = 6, gemma3.seed = 14;
  gemma3.sliding_window_pattern = 3, gemma3.linear_rope_factor = 2;
  // Phi-4-mini's kind: fused projections, rotary embeddings on 24 of each head's 32 dimensions,
  // LongRoPE's long factors in sessions past 32 positions.
  SyntheticSpec phi4 = llama;
  phi4.architecture = "Phi3ForCausalLM", phi4.partial_rotary_factor = 0.75, phi4.seed = 15, phi4.long_rope_original = 32;
  // OLMo 2: norms of the outputs only, q and k normalised whole; OLMo 3's window on its blocks.
  SyntheticSpec olmo2 = llama;
  olmo2.architecture = "Olmo2ForCausalLM", olmo2.seed = 16;
  SyntheticSpec olmo3 = llama;
  olmo3.architecture = "Olmo3ForCausalLM", olmo3.sliding_window = 6, olmo3.seed = 17;
  // GLM-4: half of each head rotating in adjacent pairs, q, k, v biases, gate and up fused, output norms.
  SyntheticSpec glm4 = llama;
  glm4.architecture = "Glm4ForCausalLM", glm4.seed = 18;
  // Granite: its blocks' outputs join the stream times residual_multiplier, its scores times
  // attention_multiplier.
  SyntheticSpec granite = llama;
  granite.architecture = "GraniteForCausalLM", granite.seed = 19;
  // Cohere: LayerNorms without biases, each head's own q and k norm, the attention and the MLP on
  // one norm, RoPE over adjacent pairs; Cohere 2 without q and k norms, a window on most blocks.
  SyntheticSpec cohere = llama;
  cohere.architecture = "CohereForCausalLM", cohere.head_dim = 32, cohere.seed = 20;
  SyntheticSpec cohere2 = llama;
  cohere2.architecture = "Cohere2ForCausalLM", cohere2.sliding_window = 6, cohere2.seed = 21;
  return {{"llama", llama}, {"granite", granite}, {"cohere", cohere}, {"cohere2", cohere2}, {"qwen2", qwen}, {"qwen3", qwen3}, {"mistral", mistral}, {"gemma", gemma}, {"gemma2", gemma2},
          {"gemma3", gemma3}, {"phi4-mini", phi4}, {"olmo2", olmo2}, {"olmo3", olmo3}, {"glm4", glm4}, {"bloom", bloom}};
}

/// A shape's synthetic model, its blocks loaded twice at `dtype`: on the CPU, and placed on
/// `backend`.
struct DevicePair {
  test::TempDir dir;
  ModelConfig config;
  Checkpoint checkpoint;
  const BlockStack cpu;
  BlockStack device;
  DevicePair(const DeviceShape& shape, DType dtype, std::shared_ptr<Backend> backend)
      : config((write_synthetic_checkpoint(shape.spec, dir.path()), read_model_config(dir.path()))),
        checkpoint(Checkpoint::open(dir.path())),
        cpu(BlockStack::load(checkpoint, config, 0, config.num_layers, dtype)),
        device(BlockStack::load(checkpoint, config, 0, config.num_layers, dtype)) {
    device.place_on(std::move(backend));
  }
};

/// Every projection blocks of `config` have: the targets an adapter may take.
inline std::vector<Projection> block_projections(const ModelConfig& config) {
  std::vector<Projection> targets;
  for (int p = 0; p < kProjections; ++p) {
    if (block_has_projection(config, static_cast<Projection>(p))) targets.push_back(static_cast<Projection>(p));
  }
  return targets;
}

/// Values a device gave against the CPU's: the same bits on the CPU backend; on a GPU within a
/// normalized error of 1e-4 (f32) or 3e-2 (bf16 and int8 weights).
inline void expect_device_values(const std::vector<float>& got, const std::vector<float>& want, DType dtype,
                                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  if (device_under_test().is_cpu()) {
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << what << ": not the CPU's bits";
    return;
  }
  const std::vector<double> reference(want.begin(), want.end());
  EXPECT_LT(test::normalized_error(got, reference), dtype == DType::kF32 ? 1e-4 : 3e-2) << what;
}

}  // namespace sepal

// Training passes of blocks placed on a device (model/device_blocks.h: forward_sequences and
// backward_sequences) against the same passes on the CPU, for every kind of block a device runs
// (tests/model/device_shapes.h) at f32, bf16 and int8: packed sequences of different lengths
// (one past Phi-4-mini's original context, so LongRoPE's long table takes part), deep prompts,
// a part of the stack, LoRA and PEQA adapters. The backend is $SEPAL_TEST_DEVICE: on the CPU (default) every value must
// be the CPU pass's bits; on a GPU (device_training_test_cuda, labelled gpu) within a tolerance.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "kernels/error.h"
#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "tests/model/device_shapes.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

class DeviceTraining : public ::testing::TestWithParam<DType> {};

TEST_P(DeviceTraining, PassesGiveTheCpuPassesResults) {
  const DType dtype = GetParam();
  std::shared_ptr<Backend> backend = open_backend(device_under_test());
  const std::vector<std::int64_t> lengths = {5, 40, 3};
  std::int64_t tokens = 0;
  for (const std::int64_t n : lengths) tokens += n;
  for (const DeviceShape& shape : device_shapes()) {
    DevicePair pair(shape, dtype, backend);
    const ModelConfig& config = pair.config;
    const BlockStack& cpu = pair.cpu;
    BlockStack& device = pair.device;
    const std::int64_t h = config.hidden_size;
    // The whole stack with deep prompts at positions 1 and 2, then its last blocks without.
    const auto values = test::random_floats(static_cast<std::size_t>(config.num_layers * 2 * h), 3, 0.5f);
    const DeepPrompts prompts{values.data(), 2, 1};
    for (const auto& [first, with_prompts] : {std::pair<std::int64_t, bool>{0, true}, {1, false}}) {
      const std::int64_t blocks = config.num_layers - first;
      const DeepPrompts* p = with_prompts ? &prompts : nullptr;
      const std::string what = std::string(shape.name) + " " + std::string(dtype_name(dtype)) + " from block " +
                               std::to_string(first);
      const auto input = test::random_floats(static_cast<std::size_t>(tokens * h), 1 + first);
      auto want = input, got = input;
      cpu.forward_sequences(want.data(), lengths, first, blocks, p);
      device.forward_sequences(got.data(), lengths, first, blocks, p);
      expect_device_values(got, want, dtype, what + ": forward");

      const auto output_grad = test::random_floats(input.size(), 7 + first);
      auto want_grad = output_grad, got_grad = output_grad;
      std::vector<float> want_prompt(with_prompts ? values.size() : 0), got_prompt(want_prompt.size(), -1.0f);
      cpu.backward_sequences(input.data(), lengths, first, blocks, p, want_grad.data(), want_prompt.data());
      device.backward_sequences(input.data(), lengths, first, blocks, p, got_grad.data(), got_prompt.data());
      expect_device_values(got_grad, want_grad, dtype, what + ": input gradient");
      if (with_prompts) expect_device_values(got_prompt, want_prompt, dtype, what + ": deep prompts' gradient");
    }
  }
}

// Training passes with adapters: LoRA of rank 3 on every projection the block has, and at int8
// PEQA's scales, over a part of the stack: the outputs, the input's gradient and every adapter
// value's gradient as the CPU pass gives them.
TEST_P(DeviceTraining, PassesWithAdaptersGiveTheCpuPassesResults) {
  const DType dtype = GetParam();
  std::shared_ptr<Backend> backend = open_backend(device_under_test());
  const std::vector<std::int64_t> lengths = {6, 11};
  const std::int64_t tokens = 17;
  for (const DeviceShape& shape : device_shapes()) {
    DevicePair pair(shape, dtype, backend);
    const ModelConfig& config = pair.config;
    const BlockStack& cpu = pair.cpu;
    BlockStack& device = pair.device;
    const std::int64_t first = 1, blocks = config.num_layers - 1, h = config.hidden_size;
    const std::vector<Projection> targets = block_projections(config);
    std::vector<AdapterShape> kinds = {AdapterShape{AdapterMethod::kLora, 3, 6.0, targets}};
    if (dtype == DType::kI8) kinds.push_back(AdapterShape{AdapterMethod::kPeqa, 0, 0.0, targets});
    for (const AdapterShape& kind : kinds) {
      const std::int64_t per_block = kind.values_per_block(config);
      const auto values = test::random_floats(static_cast<std::size_t>(blocks * per_block), 70, 0.05f);
      const BlockAdapters adapters{kind, first, blocks, values.data()};
      const std::string what = std::string(shape.name) + " " + std::string(dtype_name(dtype)) + " " +
                               (kind.method == AdapterMethod::kLora ? "LoRA" : "PEQA");
      const auto input = test::random_floats(static_cast<std::size_t>(tokens * h), 71);
      auto want = input, got = input;
      cpu.forward_sequences(want.data(), lengths, first, blocks, nullptr, &adapters);
      device.forward_sequences(got.data(), lengths, first, blocks, nullptr, &adapters);
      expect_device_values(got, want, dtype, what + ": forward");
      const auto output_grad = test::random_floats(input.size(), 72);
      auto want_grad = output_grad, got_grad = output_grad;
      std::vector<float> want_adapter(values.size()), got_adapter(values.size(), -1.0f);
      cpu.backward_sequences(input.data(), lengths, first, blocks, nullptr, want_grad.data(), nullptr, &adapters,
                             want_adapter.data());
      device.backward_sequences(input.data(), lengths, first, blocks, nullptr, got_grad.data(), nullptr, &adapters,
                                got_adapter.data());
      expect_device_values(got_grad, want_grad, dtype, what + ": input gradient");
      expect_device_values(got_adapter, want_adapter, dtype, what + ": adapters' gradient");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DeviceTraining, ::testing::Values(DType::kF32, DType::kBF16, DType::kI8),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace sepal

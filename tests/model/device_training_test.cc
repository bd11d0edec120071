// Training passes of blocks placed on a device (model/device_blocks.h: forward_sequences and
// backward_sequences) against the same passes on the CPU, for every kind of block a device runs
// (tests/model/device_shapes.h) at f32, bf16 and int8: packed sequences of different lengths
// (one past Phi-4-mini's original context, so LongRoPE's long table takes part), deep prompts,
// a part of the stack. The backend is $SEPAL_TEST_DEVICE: on the CPU (default) every value must
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
    test::TempDir dir;
    write_synthetic_checkpoint(shape.spec, dir.path());
    const ModelConfig config = read_model_config(dir.path());
    const Checkpoint checkpoint = Checkpoint::open(dir.path());
    const BlockStack cpu = BlockStack::load(checkpoint, config, 0, config.num_layers, dtype);
    BlockStack device = BlockStack::load(checkpoint, config, 0, config.num_layers, dtype);
    device.place_on(backend);
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

INSTANTIATE_TEST_SUITE_P(Dtypes, DeviceTraining, ::testing::Values(DType::kF32, DType::kBF16, DType::kI8),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// Adapters (LoRA, PEQA) on blocks on a device are refused in one line.
TEST(DeviceTraining, AdaptersAreRefusedInOneLine) {
  test::TempDir dir;
  SyntheticSpec spec;
  spec.hidden_size = 64, spec.intermediate_size = 128, spec.num_layers = 2, spec.num_heads = 2, spec.num_kv_heads = 2;
  write_synthetic_checkpoint(spec, dir.path());
  const ModelConfig config = read_model_config(dir.path());
  BlockStack device = BlockStack::load(Checkpoint::open(dir.path()), config, 0, 2, DType::kF32);
  device.place_on(open_backend(device_under_test()));
  AdapterShape shape;
  shape.method = AdapterMethod::kLora;
  shape.rank = 2;
  shape.alpha = 4;
  shape.targets = {Projection::kQ};
  const std::vector<float> adapter_values(static_cast<std::size_t>(2 * shape.values_per_block(config)), 0.0f);
  const BlockAdapters adapters{shape, 0, 2, adapter_values.data()};
  std::vector<float> rows(static_cast<std::size_t>(4 * config.hidden_size), 0.5f);
  const std::vector<std::int64_t> lengths = {4};
  try {
    device.forward_sequences(rows.data(), lengths, 0, 2, nullptr, &adapters);
    ADD_FAILURE() << "adapters ran on the device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("adapters run on the CPU only; these blocks are on " +
                                         device_name(device_under_test())),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace sepal

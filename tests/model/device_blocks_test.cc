// Blocks placed on a device (BlockStack::place_on, model/device_blocks.h) against the same blocks
// on the CPU: Llama with grouped heads, Qwen2's biases, Qwen3's q and k norms (heads wider than
// hidden / heads), Mistral's sliding window, Gemma's GeGLU, Gemma 2's output norms, capped
// scores and window on every other block, Gemma 3's RoPE base per block, GLM-4's RoPE over
// adjacent pairs, and BLOOM's ALiBi, at f32, bf16 and int8, over a
// prompt, decode steps, a step of several rows and a prompt longer than one device call. The
// backend is $SEPAL_TEST_DEVICE: on the CPU (default) every row must be BlockStack's bits; on a
// GPU (ctest's device_blocks_test_cuda, labelled gpu) within a tolerance per dtype.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "kernels/error.h"
#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "model/device_blocks.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/synthetic_checkpoint.h"
#include "tests/model/device_shapes.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

class DeviceBlocks : public ::testing::TestWithParam<DType> {};

TEST_P(DeviceBlocks, GiveTheCpuBlocksResultsStepByStep) {
  const DType dtype = GetParam();
  std::shared_ptr<Backend> backend = open_backend(device_under_test());
  for (const DeviceShape& shape : device_shapes()) {
    DevicePair pair(shape, dtype, backend);
    const ModelConfig& config = pair.config;
    const BlockStack& cpu = pair.cpu;
    BlockStack& device = pair.device;
    EXPECT_EQ(device.device(), device_under_test());
    EXPECT_EQ(device.backend(), backend.get());
    EXPECT_EQ(device.weight_bytes(), cpu.weight_bytes());
    KvCache cache = cpu.new_cache(700);
    KvCache session = device.new_cache(700);
    EXPECT_TRUE(session.on_device());
    // A device's cache is allocated whole, its blocks with a window holding only what steps of up
    // to kDeviceStepRows reach (their positions move down within them; the steps below pass it).
    const std::vector<std::int64_t> windows = cpu.windows(0, config.num_layers);
    EXPECT_EQ(session.bytes(), KvCache::most_bytes(windows, cache.kv_heads(), cache.head_dim(), DType::kF32, 700,
                                                   KvCache::kDeviceStepRows));
    const bool windowed = std::any_of(windows.begin(), windows.end(), [](std::int64_t w) { return w > 0; });
    EXPECT_EQ(session.bytes() < 700 * KvCache::bytes_per_position(cache.blocks(), cache.kv_heads(), cache.head_dim(), DType::kF32),
              windowed);
    const std::int64_t h = config.hidden_size;
    // A prompt, decode steps, a step of 3 rows, and a prompt of more rows than one device call
    // (512), which the CPU runs in the same pieces.
    const std::vector<std::vector<std::int64_t>> steps = {{9}, {1}, {1}, {1}, {3}, {1}, {512, 88}};
    int seed = 0;
    for (const auto& pieces : steps) {
      std::int64_t n = 0;
      for (const std::int64_t p : pieces) n += p;
      auto want = test::random_floats(static_cast<std::size_t>(n * h), ++seed);
      auto got = want;
      std::int64_t done = 0;
      for (const std::int64_t p : pieces) {
        cpu.forward(want.data() + done * h, p, cache);
        done += p;
      }
      device.forward(got.data(), n, session);
      expect_device_values(got, want, dtype,
                  std::string(shape.name) + " " + std::string(dtype_name(dtype)) + ": " + std::to_string(n) +
                      " rows at " + std::to_string(session.length() - n));
      ASSERT_EQ(session.length(), cache.length());
    }
    if (windowed) {  // the windows' positions moved down within their arrays
      std::int64_t moved = 0;
      for (std::int64_t b = 0; b < session.blocks(); ++b) moved = std::max(moved, session.held_from(b));
      EXPECT_GT(moved, 0) << shape.name;
    }
    // Past the capacity: refused, the session unchanged.
    std::vector<float> rows(static_cast<std::size_t>(100 * h));
    try {
      device.forward(rows.data(), 100, session);
      ADD_FAILURE() << "positions past the capacity were taken";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("pass the session's length of 700"), std::string::npos) << e.what();
    }
    EXPECT_EQ(session.length(), cache.length());
    // What runs on the CPU only says so in one line.
    const std::string on = "run on the CPU only; these blocks are on " + device_name(device_under_test());
    auto expect_cpu_only = [&](const std::function<void()>& call, const char* what) {
      try {
        call();
        ADD_FAILURE() << what << " ran on the device";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(on), std::string::npos) << what << ": " << e.what();
      }
    };
    expect_cpu_only([&] { (void)device.block_weights(0); }, "reading weights");
  }
}

// Token trees (speculative decoding) on a device: after a prompt (its windows' rows moved down on
// the windowed models), a tree of 7 nodes in two steps, the kept path, and a decode step after it,
// with LoRA adapters on the q and down projections, as the CPU's.
TEST_P(DeviceBlocks, TokenTreesGiveTheCpuBlocksResults) {
  const DType dtype = GetParam();
  std::shared_ptr<Backend> backend = open_backend(device_under_test());
  for (const DeviceShape& shape : device_shapes()) {
    DevicePair pair(shape, dtype, backend);
    const ModelConfig& config = pair.config;
    const BlockStack& cpu = pair.cpu;
    BlockStack& device = pair.device;
    const std::int64_t h = config.hidden_size, blocks = config.num_layers;
    const AdapterShape lora{AdapterMethod::kLora, 2, 4.0, {Projection::kQ, Projection::kDown}};
    const auto values = test::random_floats(static_cast<std::size_t>(blocks * lora.values_per_block(config)), 80, 0.05f);
    const BlockAdapters adapters{lora, 0, blocks, values.data()};
    KvCache cache = cpu.new_cache(700);
    KvCache session = device.new_cache(700);
    const std::string what = std::string(shape.name) + " " + std::string(dtype_name(dtype));
    // 600 positions: a device's window of 6 then holds 523 slots, and its rows move down. The CPU
    // takes them in the device's pieces.
    auto prompt = test::random_floats(static_cast<std::size_t>(600 * h), 81);
    auto on_device = prompt;
    cpu.forward(prompt.data(), 512, cache, 0, nullptr, &adapters);
    cpu.forward(prompt.data() + 512 * h, 88, cache, 0, nullptr, &adapters);
    device.forward(on_device.data(), 600, session, 0, nullptr, &adapters);
    expect_device_values(on_device, prompt, dtype, what + ": prompt");
    const std::vector<std::int32_t> parents = {-1, 0, 0, 1, 1, 2, 4};
    const std::int64_t split = 3;  // nodes [0, 3), then [3, 7)
    for (const auto& [from, to] : {std::pair<std::int64_t, std::int64_t>{0, split}, {split, 7}}) {
      const std::span<const std::int32_t> known(parents.data(), static_cast<std::size_t>(to));
      auto want = test::random_floats(static_cast<std::size_t>((to - from) * h), 82 + from);
      auto got = want;
      cpu.forward_tree(want.data(), to - from, known, cache, 0, &adapters);
      device.forward_tree(got.data(), to - from, known, session, 0, &adapters);
      expect_device_values(got, want, dtype, what + ": tree nodes from " + std::to_string(from));
    }
    const std::vector<std::int32_t> path = {0, 1, 4, 6};
    cache.keep_path(path);
    session.keep_path(path);
    ASSERT_EQ(session.length(), cache.length());
    auto want = test::random_floats(static_cast<std::size_t>(2 * h), 90);
    auto got = want;
    cpu.forward(want.data(), 2, cache, 0, nullptr, &adapters);
    device.forward(got.data(), 2, session, 0, nullptr, &adapters);
    expect_device_values(got, want, dtype, what + ": decoding after the kept path");
  }
}

// Steps of several sessions in one forward_batch on the device end as each session's forward()
// alone: sessions at different lengths (of 30 and 40 positions: with LongRoPE's factors, short
// and long), steps of 1 to 4 rows, a part of the stack's range.
TEST_P(DeviceBlocks, BatchedStepsGiveEachSessionItsOwnStates) {
  const DType dtype = GetParam();
  std::shared_ptr<Backend> backend = open_backend(device_under_test());
  for (const DeviceShape& shape : device_shapes()) {
    test::TempDir dir;
    write_synthetic_checkpoint(shape.spec, dir.path());
    const ModelConfig config = read_model_config(dir.path());
    BlockStack device = BlockStack::load(Checkpoint::open(dir.path()), config, 0, config.num_layers, dtype);
    device.place_on(backend);
    const std::int64_t first = 1, blocks = config.num_layers - 1, h = config.hidden_size;
    constexpr int kSessions = 5;
    const std::int64_t prompt_lengths[kSessions] = {3, 1, 9, 6, 2};
    std::vector<KvCache> alone, batched;
    for (int i = 0; i < kSessions; ++i) {
      const std::int64_t positions = i % 2 ? 30 : 40;
      alone.push_back(device.new_cache(positions, first, first + blocks));
      batched.push_back(device.new_cache(positions, first, first + blocks));
      auto rows = test::random_floats(static_cast<std::size_t>(prompt_lengths[i] * h), 10 + i);
      auto copy = rows;
      device.forward(rows.data(), prompt_lengths[i], alone[i], first);
      device.forward(copy.data(), prompt_lengths[i], batched[i], first);
    }
    for (int round = 0; round < 5; ++round) {
      std::vector<std::vector<float>> want, got;
      std::vector<BatchedStep> steps;
      for (int i = 0; i < kSessions; ++i) {
        const std::int64_t n = 1 + (round + i) % kStreamingMaxTokens;
        want.push_back(test::random_floats(static_cast<std::size_t>(n * h), 100 * round + i));
        got.push_back(want.back());
        device.forward(want.back().data(), n, alone[i], first);
      }
      for (int i = 0; i < kSessions; ++i) {
        steps.push_back(BatchedStep{got[i].data(), static_cast<std::int64_t>(got[i].size()) / h, &batched[i]});
      }
      device.forward_batch(steps, first, blocks);
      for (int i = 0; i < kSessions; ++i) {
        expect_device_values(got[i], want[i], dtype,
                    std::string(shape.name) + " " + std::string(dtype_name(dtype)) + ": session " + std::to_string(i) +
                        ", round " + std::to_string(round));
        ASSERT_EQ(batched[i].length(), alone[i].length());
      }
    }
  }
}

// A session's deep prompts and adapters on the device: LoRA of rank 4 on every projection the
// block has, and at int8 PEQA's scales too, over a prompt, steps past the deep prompts and a part
// of the stack's range; then three sessions batched (LoRA, deep prompts and PEQA, none) against
// each alone.
TEST_P(DeviceBlocks, DeepPromptsAndAdaptersGiveTheCpuBlocksResults) {
  const DType dtype = GetParam();
  std::shared_ptr<Backend> backend = open_backend(device_under_test());
  for (const DeviceShape& shape : device_shapes()) {
    DevicePair pair(shape, dtype, backend);
    const ModelConfig& config = pair.config;
    const BlockStack& cpu = pair.cpu;
    BlockStack& device = pair.device;
    const std::int64_t first = 1, blocks = config.num_layers - 1, h = config.hidden_size;
    const std::vector<Projection> targets = block_projections(config);
    std::vector<AdapterShape> kinds = {AdapterShape{AdapterMethod::kLora, 4, 8.0, targets}};
    if (dtype == DType::kI8) kinds.push_back(AdapterShape{AdapterMethod::kPeqa, 0, 0.0, targets});
    std::vector<std::vector<float>> values;
    std::vector<BlockAdapters> adapters;
    for (const AdapterShape& kind : kinds) {
      values.push_back(test::random_floats(static_cast<std::size_t>(blocks * kind.values_per_block(config)),
                                           40 + values.size(), 0.05f));
    }
    for (std::size_t k = 0; k < kinds.size(); ++k) adapters.push_back(BlockAdapters{kinds[k], first, blocks, values[k].data()});
    const auto prompt_values = test::random_floats(static_cast<std::size_t>(blocks * 3 * h), 50, 0.5f);
    const DeepPrompts prompts{prompt_values.data(), 3, 1};
    for (const BlockAdapters& a : adapters) {
      const std::string what = std::string(shape.name) + " " + std::string(dtype_name(dtype)) + " " +
                               (a.shape.method == AdapterMethod::kLora ? "LoRA" : "PEQA");
      KvCache cache = cpu.new_cache(40, first, first + blocks);
      KvCache session = device.new_cache(40, first, first + blocks);
      for (const std::int64_t n : {2, 9, 1, 3}) {  // the deep prompts cover positions 1 to 3
        auto want = test::random_floats(static_cast<std::size_t>(n * h), 60 + n);
        auto got = want;
        cpu.forward(want.data(), n, cache, first, &prompts, &a);
        device.forward(got.data(), n, session, first, &prompts, &a);
        expect_device_values(got, want, dtype, what + ": " + std::to_string(n) + " rows at " + std::to_string(cache.length() - n));
      }
    }
    // Batched: each session's steps as it gets them alone.
    struct Session {
      const DeepPrompts* prompts;
      const BlockAdapters* adapters;
      KvCache alone, batched;
    };
    std::vector<Session> sessions;
    sessions.push_back({nullptr, &adapters[0], device.new_cache(30, first, first + blocks), device.new_cache(30, first, first + blocks)});
    sessions.push_back({&prompts, adapters.size() > 1 ? &adapters[1] : nullptr, device.new_cache(30, first, first + blocks),
                        device.new_cache(30, first, first + blocks)});
    sessions.push_back({nullptr, nullptr, device.new_cache(30, first, first + blocks), device.new_cache(30, first, first + blocks)});
    for (int round = 0; round < 4; ++round) {
      std::vector<std::vector<float>> want, got;
      std::vector<BatchedStep> steps;
      for (std::size_t i = 0; i < sessions.size(); ++i) {
        const std::int64_t n = 1 + (round + static_cast<std::int64_t>(i)) % 2;
        want.push_back(test::random_floats(static_cast<std::size_t>(n * h), 100 * round + i));
        got.push_back(want.back());
        device.forward(want.back().data(), n, sessions[i].alone, first, sessions[i].prompts, sessions[i].adapters);
      }
      for (std::size_t i = 0; i < sessions.size(); ++i) {
        steps.push_back(BatchedStep{got[i].data(), static_cast<std::int64_t>(got[i].size()) / h, &sessions[i].batched,
                                    sessions[i].prompts, sessions[i].adapters});
      }
      device.forward_batch(steps, first, blocks);
      for (std::size_t i = 0; i < sessions.size(); ++i) {
        expect_device_values(got[i], want[i], dtype,
                             std::string(shape.name) + " " + std::string(dtype_name(dtype)) + ": batched session " +
                                 std::to_string(i) + ", round " + std::to_string(round));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DeviceBlocks, ::testing::Values(DType::kF32, DType::kBF16, DType::kI8),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(DeviceBlocks, ASessionLongerThanTheModelAllowsIsRefused) {
  test::TempDir dir;
  SyntheticSpec spec;
  spec.hidden_size = 64, spec.intermediate_size = 128, spec.num_layers = 1, spec.num_heads = 2, spec.num_kv_heads = 2;
  spec.max_position_embeddings = 64;
  write_synthetic_checkpoint(spec, dir.path());
  const ModelConfig config = read_model_config(dir.path());
  BlockStack device = BlockStack::load(Checkpoint::open(dir.path()), config, 0, 1, DType::kF32);
  device.place_on(open_backend(device_under_test()));
  EXPECT_THROW(device.new_cache(65), Error);
  EXPECT_THROW(device.new_cache(0), Error);
  EXPECT_EQ(device.new_cache(64).capacity(0), 64);
}

// A mixture of experts has no device kernels: refused in one line, the blocks still on the CPU.
TEST(DeviceBlocks, MixturesOfExpertsStayOnTheCpu) {
  for (const auto& [architecture, message] : {std::pair{"MixtralForCausalLM", "a mixture of experts (MixtralForCausalLM) runs on the CPU only"},
                                              std::pair{"GraniteMoeForCausalLM", "a mixture of experts (GraniteMoeForCausalLM) runs on the CPU only"}}) {
    test::TempDir dir;
    SyntheticSpec spec;
    spec.architecture = architecture;
    spec.hidden_size = 64, spec.intermediate_size = 96, spec.num_layers = 1, spec.num_heads = 2, spec.num_kv_heads = 2;
    spec.num_experts = 4;
    write_synthetic_checkpoint(spec, dir.path());
    const ModelConfig config = read_model_config(dir.path());
    BlockStack blocks = BlockStack::load(Checkpoint::open(dir.path()), config, 0, 1, DType::kF32);
    try {
      blocks.place_on(open_backend(device_under_test()));
      ADD_FAILURE() << architecture << " was placed on a device";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
    EXPECT_TRUE(blocks.device().is_cpu());
    std::vector<float> row(static_cast<std::size_t>(config.hidden_size), 0.5f);
    KvCache cache = blocks.new_cache(4);
    blocks.forward(row.data(), 1, cache);
    EXPECT_EQ(cache.length(), 1);
  }
}

TEST(DeviceBlocks, Bf16CachesStayOnTheCpuAndOtherCacheTypesAreRefused) {
  test::TempDir dir;
  SyntheticSpec spec;
  spec.hidden_size = 64, spec.intermediate_size = 128, spec.num_layers = 1, spec.num_heads = 2, spec.num_kv_heads = 2;
  write_synthetic_checkpoint(spec, dir.path());
  const ModelConfig config = read_model_config(dir.path());
  const Checkpoint checkpoint = Checkpoint::open(dir.path());
  WeightLoading loading(DType::kF32);
  loading.kv_dtype = DType::kBF16;
  BlockStack blocks = BlockStack::load(checkpoint, config, 0, 1, loading);
  EXPECT_EQ(blocks.new_cache(8).dtype(), DType::kBF16);
  EXPECT_EQ(blocks.new_cache(8).bytes(), 8 * 2 * 2 * config.head_dim * 2);
  try {
    blocks.place_on(open_backend(device_under_test()));
    ADD_FAILURE() << "bf16 caches were placed on a device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("key/value caches on a device are f32; bf16 caches are CPU only"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(blocks.device().is_cpu());  // still runs where it was
  std::vector<float> row(static_cast<std::size_t>(config.hidden_size), 0.5f);
  KvCache cache = blocks.new_cache(4);
  blocks.forward(row.data(), 1, cache);
  EXPECT_EQ(cache.length(), 1);
  for (const DType other : {DType::kF16, DType::kI8}) {
    loading.kv_dtype = other;
    EXPECT_THROW(BlockStack::load(checkpoint, config, 0, 1, loading), Error) << dtype_name(other);
    EXPECT_THROW(KvCache(1, 2, 32, 4, other), Error) << dtype_name(other);
  }
}

}  // namespace
}  // namespace sepal

#include "model/gpt_oss_experts.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "kernels/error.h"
#include "model/weight_holding.h"

namespace sepal {

TensorRef gpt_oss_expert(const Checkpoint& checkpoint, const ModelConfig& config, const std::string& moe, std::int64_t e,
                         const std::string& projection, bool bias) {
  const std::int64_t h = config.hidden_size, inter = config.moe_intermediate_size, experts = config.num_experts;
  const bool down = projection == "down_proj";
  SEPAL_CHECK(down || projection == "gate_proj" || projection == "up_proj", "a GPT-OSS expert's projection");
  SEPAL_CHECK(e >= 0 && e < experts, "expert ", e, " of ", experts);
  const TensorRef& stack = checkpoint.get(moe + (down ? "experts.down_proj" : "experts.gate_up_proj") + (bias ? "_bias" : ""));
  const std::int64_t parity = projection == "up_proj" ? 1 : 0;
  const std::int64_t rows = down ? h : inter, cols = bias ? 1 : down ? inter : h;
  if (bias) expect_shape(stack, {experts, down ? h : 2 * inter});
  else if (down) expect_shape(stack, {experts, inter, h});
  else expect_shape(stack, {experts, h, 2 * inter});
  auto values = std::make_shared<std::vector<float>>(static_cast<std::size_t>(rows * cols));
  // The stacks hold a matrix transposed, gate's and up's rows interleaved: element (r, c) at
  // [e, c, step r + parity], so column c is stack row [e, c]. Columns go 16 at a time: their
  // stack rows converted whole, then each matrix row's 16 written together. (One element at a
  // time in the matrix's order, each read on another page, took 15 of the 18 s in which a
  // 4-block model's bf16 stacks loaded; a column at a time, each write on another page, as long.)
  constexpr std::int64_t kBlock = 16;
  const std::int64_t width = down ? h : 2 * inter, step = down ? 1 : 2, offset = down ? 0 : parity;
  std::vector<float> block(static_cast<std::size_t>(kBlock * width));
  for (std::int64_t c0 = 0; c0 < cols; c0 += kBlock) {
    const std::int64_t n = std::min(kBlock, cols - c0);
    elements_as_f32(stack, (e * cols + c0) * width, n * width, block.data());
    for (std::int64_t r = 0; r < rows; ++r) {
      float* out = values->data() + r * cols + c0;
      const float* in = block.data() + r * step + offset;
      for (std::int64_t k = 0; k < n; ++k) out[k] = in[k * width];
    }
  }
  TensorRef t;
  t.name = moe + "experts." + std::to_string(e) + "." + projection + (bias ? ".bias" : ".weight");
  t.dtype = DType::kF32;
  t.shape = bias ? std::vector<std::int64_t>{rows} : std::vector<std::int64_t>{rows, cols};
  t.data = reinterpret_cast<const std::byte*>(values->data());
  t.bytes = values->size() * 4;
  t.storage = values;
  return t;
}

Checkpoint split_gpt_oss_experts(const Checkpoint& checkpoint, const ModelConfig& config, const std::filesystem::path& source) {
  std::map<std::string, TensorRef> tensors;
  std::map<std::string, Checkpoint::Conversion> conversions;
  const std::string stacks[] = {"experts.gate_up_proj", "experts.gate_up_proj_bias", "experts.down_proj", "experts.down_proj_bias"};
  for (const auto& [name, listed] : checkpoint.tensors()) {
    bool stacked = false;
    for (const std::string& s : stacks) stacked |= name.ends_with(".mlp." + s);
    if (!stacked) {
      tensors.emplace(name, checkpoint.get(name));
      continue;
    }
    if (!name.ends_with("experts.gate_up_proj")) continue;  // a block's split once, from its gate_up stack
    const std::string moe = name.substr(0, name.size() - std::string("experts.gate_up_proj").size());
    for (std::int64_t e = 0; e < config.num_experts; ++e) {
      for (const char* projection : {"gate_proj", "up_proj", "down_proj"}) {
        for (const bool bias : {false, true}) {
          TensorRef t;
          t.name = moe + "experts." + std::to_string(e) + "." + projection + (bias ? ".bias" : ".weight");
          t.dtype = DType::kF32;
          const std::int64_t rows = std::string(projection) == "down_proj" ? config.hidden_size : config.moe_intermediate_size;
          const std::int64_t cols = std::string(projection) == "down_proj" ? config.moe_intermediate_size : config.hidden_size;
          t.shape = bias ? std::vector<std::int64_t>{rows} : std::vector<std::int64_t>{rows, cols};
          t.bytes = static_cast<std::size_t>(bias ? rows : rows * cols) * 4;
          conversions[t.name] = [&checkpoint, &config, moe, e, projection = std::string(projection), bias](TensorRef& out) {
            out = gpt_oss_expert(checkpoint, config, moe, e, projection, bias);
          };
          tensors.emplace(t.name, std::move(t));
        }
      }
    }
  }
  return Checkpoint::from_tensors(source, std::move(tensors), std::move(conversions));
}

}  // namespace sepal

#include "model/gpt_oss_experts.h"

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
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      // The stacks hold a matrix transposed: element (r, c) at [e, c, r]; gate's and up's rows interleaved.
      const std::int64_t at = bias ? (down ? e * h + r : e * 2 * inter + 2 * r + parity)
                              : down ? (e * inter + c) * h + r
                                     : (e * h + c) * 2 * inter + 2 * r + parity;
      (*values)[static_cast<std::size_t>(r * cols + c)] = element_as_f32(stack, at);
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

#pragma once
// A float64 forward of Llama blocks and of the LM head's loss, written from the model's definition
// and independent of the kernels: the reference that the training passes' gradients are checked
// against by finite differences.

#include <cstdint>
#include <filesystem>
#include <vector>

#include "kernels/dtype.h"
#include "model/block_adapters.h"
#include "model/prompt_tuning.h"

namespace sepal::test {

/// Adapters for the reference: their shape and values (for blocks [first, first + blocks) of the
/// pass, in model/block_adapters.h's layout), in double.
struct ReferenceAdapters {
  AdapterShape shape;
  std::vector<double> values;
};

/// Blocks [first, first + blocks) of the model in `dir` (weights held as `dtype`: f32, bf16, or
/// int8 taken as its dequantized values, q · scale, with no activation quantization) over packed
/// sequences x[T, hidden], with deep prompts [blocks, prompt_count, hidden] added at positions
/// [offset, offset + prompt_count) of every sequence before each block, and each projection
/// adapted as `adapters` says (may be null): PEQA y (1 + m), LoRA y + alpha / r · (x Aᵀ) Bᵀ.
std::vector<double> reference_forward(const std::filesystem::path& dir, DType dtype, std::vector<double> x,
                                      const std::vector<std::int64_t>& lengths, std::int64_t first,
                                      std::int64_t blocks, const std::vector<double>& prompts,
                                      std::int64_t prompt_count, std::int64_t offset,
                                      const ReferenceAdapters* adapters = nullptr);

/// Σ over rows with targets[t] >= 0 of -log softmax(head(norm(x[t])))[targets[t]].
double reference_cross_entropy(const std::filesystem::path& dir, const std::vector<double>& x,
                               const std::vector<std::int32_t>& targets);

/// The mean loss over a micro-batch's scored tokens (model/prompt_tuning.h), the soft prompt's
/// rows of every sequence's input replaced by `soft` and the deep prompts by `deep` (all blocks).
double reference_batch_loss(const std::filesystem::path& dir, const PromptedBatch& batch, const PromptParameters& p,
                            const std::vector<double>& soft, const std::vector<double>& deep);

/// Checks `grad` (d mean loss / d parameters, in PromptParameters::flat() order) against central
/// differences of reference_batch_loss along two random directions (seeded), within `tolerance`
/// relative to the directional derivative (gtest expectations).
void expect_prompt_gradient(const std::filesystem::path& dir, const PromptedBatch& batch, const PromptParameters& p,
                            const std::vector<float>& grad, std::uint64_t seed, double tolerance = 1e-4);

}  // namespace sepal::test

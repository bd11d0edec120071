#pragma once
// LLM.int8() checkpoints: every matrix as int8 rows ("x.weight", I8) with each row's absmax
// beside it ("x.SCB", F32, as bitsandbytes stores them); vectors and norms (Cohere's [heads, head_dim]
// q and k norms too) unchanged. The loader
// (weights.h) reads them with any --dtype, validating the scales; with int8 it holds exactly the
// weights that quantizing the float checkpoint while loading gives.

#include <cstdint>
#include <functional>
#include <vector>

#include "model/block_adapters.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace sepal {

/// The tensors of `checkpoint` with its matrices quantized. `progress` gets the fraction done.
/// Throws sepal::Error on a matrix holding NaN or infinity.
std::vector<TensorToWrite> quantize_checkpoint_tensors(const Checkpoint& checkpoint,
                                                       const std::function<void(double)>& progress = {});

/// Folds tuned PEQA scales into an int8 checkpoint's tensors (as quantize_checkpoint_tensors
/// gives them): each targeted projection's row absmax ("x.SCB") becomes absmax · (1 + m), the
/// int8 values unchanged, so the tuned model has the base int8 model's size. Throws sepal::Error
/// when a tensor is missing or a tuned scale is negative or not finite.
void fold_peqa_scales(const ModelConfig& config, const BlockAdapters& adapters, std::vector<TensorToWrite>& tensors);

}  // namespace sepal

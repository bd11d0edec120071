#pragma once
// LLM.int8() checkpoints: every matrix as int8 rows ("x.weight", I8) with each row's absmax
// beside it ("x.SCB", F32, as bitsandbytes stores them); vectors (norms) unchanged. The loader
// (weights.h) reads them with any --dtype, validating the scales; with int8 it holds exactly the
// weights that quantizing the float checkpoint while loading gives.

#include <cstdint>
#include <functional>
#include <vector>

#include "model/safetensors.h"

namespace sepal {

/// The tensors of `checkpoint` with its matrices quantized. `progress` gets the fraction done.
/// Throws sepal::Error on a matrix holding NaN or infinity.
std::vector<TensorToWrite> quantize_checkpoint_tensors(const Checkpoint& checkpoint,
                                                       const std::function<void(double)>& progress = {});

}  // namespace sepal

#pragma once
// How a loader (model/weights.cc, model/arch/*_weights.cc) turns a checkpoint's tensors into
// held weights: checked shapes, values as f32, matrices and vectors held as WeightLoading says.
//
// Thread-safety: pure functions of their arguments.

#include <cstdint>
#include <initializer_list>

#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace sepal {

/// Element i of a floating-point tensor as f32; throws sepal::Error for an int8 one.
float element_as_f32(const TensorRef& t, std::int64_t i);
/// Elements [first, first + count) of a floating-point tensor as f32 into out (a row of a
/// matrix at the cost of a copy); throws sepal::Error for an int8 one.
void elements_as_f32(const TensorRef& t, std::int64_t first, std::int64_t count, float* out);
/// Throws sepal::Error naming the tensor when its shape is not `shape`.
void expect_shape(const TensorRef& t, std::initializer_list<std::int64_t> shape);
/// A weight matrix held as `loading` asks (converted, int8-quantized, or in place).
HeldMatrix hold_matrix(const Checkpoint& checkpoint, const TensorRef& t, const WeightLoading& loading);
/// An int8 matrix whose row scales (bitsandbytes' SCB, each row's absmax) are `scales` rather than
/// the checkpoint's tensor named after it: rows taken out of a fused int8 tensor.
HeldMatrix hold_int8_rows(const TensorRef& t, const TensorRef& scales, const WeightLoading& loading);
/// Rows [first, first + count) of a matrix (elements, of a vector) as a tensor of their own that
/// shares `t`'s bytes: one projection's part of a fused tensor whose parts follow each other.
TensorRef row_range(const TensorRef& t, std::int64_t first, std::int64_t count);
/// A vector of f32 weights (norm scales, biases).
HeldVector hold_vector(const TensorRef& t, const WeightLoading& loading);
/// An RMSNorm's weights as it scales by them: hold_vector's, with one added to each where the
/// config's norm_weight_plus_one says the file holds them less one (Gemma's folders).
HeldVector hold_norm_weights(const TensorRef& t, const WeightLoading& loading, const ModelConfig& config);

}  // namespace sepal

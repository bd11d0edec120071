#pragma once
// The training passes' input gradients on a GPU (kernels/cuda/training_ops.cu), for the CUDA
// backend (kernels/backend.h): each the CPU function of kernels/gradients.h on device pointers,
// matching it within a tolerance (tests/kernels/backend_ops_test.cc). Every result is one sum in a
// fixed order, without atomics, so a pass gives the same bits each time it runs.
//
// Thread-safety: a TrainingScratch belongs to one backend, used by the caller holding its turn().

#include <cublas_v2.h>

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/matmul.h"

namespace sepal::cuda {

/// Working memory grown as needed: a weight matrix widened to f32, attention's row statistics.
struct TrainingScratch {
  Buffer<float> weights;
  Buffer<float> attention_rows;
};

/// store_kv's inverse (kernels/backend.h: load_kv).
void load_kv(const float* cache, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
             std::int64_t capacity, float* rows);
/// dx[n, w.cols] = dy[n, w.rows] · w in cuBLAS's f32 product; bf16 weights widened and int8 ones
/// dequantized (data[r, c] · scales[r]) into f32 first.
void matmul_input_grad(cublasHandle_t blas, TrainingScratch& scratch, const float* dy, std::int64_t n,
                       const WeightView& w, float* dx);
/// dw[rows, cols] += dyᵀ x in cuBLAS's f32 product (adapters' factors).
void matmul_weight_grad(cublasHandle_t blas, const float* dy, std::int64_t n, const float* x, std::int64_t rows,
                        std::int64_t cols, float* dw);
/// sums[i] += Σ_t a[t, i] b[t, i], one thread per column summing in double (PEQA's scales).
void add_column_dots(const float* a, const float* b, std::int64_t n, std::int64_t dim, float* sums);
void scale_in_place(float* x, float scale, std::int64_t count);
void rmsnorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                        const float* dy, float* dx);
/// Rows of `dim`, row r with weights (r % heads) · dim on (one set for heads = 1).
void layernorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, std::int64_t heads, const float* weight,
                          float eps, const float* dy, float* dx);
void gelu_tanh_input_grad(const float* x, const float* dout, float* dx, std::int64_t count);
/// silu_mul_input_grad, or (`gelu`) gelu_tanh_mul_input_grad.
void gate_mul_input_grad(bool gelu, const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                         std::int64_t count);
/// Two passes: one warp per (query row, head) for dq, keeping each row's softmax maximum, sum
/// and Σ p·dp; then one warp per (key row, key/value head) for dkeys and dvalues, summing over
/// the query rows that see it. Heads of at most 256 values; no sinks.
void attention_causal_input_grad(TrainingScratch& scratch, const float* q, const float* keys, const float* values,
                                 std::int64_t n, const AttentionDims& dims, const float* dout, float* dq, float* dkeys,
                                 float* dvalues, const float* alibi, std::int64_t window);

}  // namespace sepal::cuda

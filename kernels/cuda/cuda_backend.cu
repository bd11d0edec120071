// The CUDA backend (kernels/backend.h): weights, caches and activations in one GPU's memory;
// products in cuBLAS (f32, bf16 prompts), cuBLASLt (int8) and a warp-per-row kernel for decode's
// few rows; norms, rotations, activations and attention in kernels of our own; the training
// passes' input gradients in training_ops.cu. Each op matches
// the CPU kernel it stands for within a tolerance (tests/kernels/backend_ops_test.cc).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/int8_product.h"
#include "kernels/cuda/reductions.cuh"
#include "kernels/cuda/training_ops.h"

namespace sepal {
namespace cuda {
namespace {

// ---- products with few rows: one warp per weight row, reading it once for every row of x ----

constexpr int kGemvMaxRows = 8;
constexpr int kGemvWarps = 8;

__device__ void load8(const float* p, float* out) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}
__device__ void load8(const __nv_bfloat16* p, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const auto* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    out[2 * i] = f.x, out[2 * i + 1] = f.y;
  }
}
__device__ float to_float(float v) { return v; }
__device__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Eight columns a lane at a time (`vectors`: rows and x 16-byte aligned, cols a multiple of 8),
// one at a time after that.
template <typename W>
__global__ void gemv_kernel(const float* x, int n, const W* w, std::int64_t rows, std::int64_t cols, bool vectors,
                            float* y) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kGemvWarps + warp;
  if (row >= rows) return;
  const W* wr = w + row * cols;
  float acc[kGemvMaxRows] = {};
  const std::int64_t wide = vectors ? cols : 0;
  for (std::int64_t c = lane * 8; c < wide; c += 32 * 8) {
    float wv[8];
    load8(wr + c, wv);
#pragma unroll
    for (int t = 0; t < kGemvMaxRows; ++t) {
      if (t < n) {
        const float* xr = x + t * cols + c;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[t] += wv[j] * xr[j];
      }
    }
  }
  for (std::int64_t c = wide + lane; c < cols; c += 32) {
    const float wv = to_float(wr[c]);
#pragma unroll
    for (int t = 0; t < kGemvMaxRows; ++t) {
      if (t < n) acc[t] += wv * x[t * cols + c];
    }
  }
#pragma unroll
  for (int t = 0; t < kGemvMaxRows; ++t) {
    if (t < n) {
      const float sum = warp_sum(acc[t]);
      if (lane == 0) y[t * rows + row] = sum;
    }
  }
}

__global__ void to_bf16_kernel(const float* x, std::int64_t count, __nv_bfloat16* out) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) out[i] = __float2bfloat16_rn(x[i]);
}

// ---- norms and element-wise ops ----

__global__ void rmsnorm_kernel(const float* x, std::int64_t dim, const float* weight, float eps, float* y) {
  const float* in = x + blockIdx.x * dim;
  float* out = y + blockIdx.x * dim;
  float sum = 0.0f;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += in[i] * in[i];
  const float scale = 1.0f / sqrtf(block_sum(sum) / static_cast<float>(dim) + eps);
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[i] = in[i] * scale * weight[i];
}

// In double, as the CPU's; block b normalises row b with weights (b % heads) · dim on (one set
// for heads = 1); bias may be null.
__global__ void layernorm_kernel(const float* x, std::int64_t dim, std::int64_t heads, const float* weight,
                                 const float* bias, float eps, float* y) {
  const float* in = x + blockIdx.x * dim;
  float* out = y + blockIdx.x * dim;
  weight += (blockIdx.x % heads) * dim;
  double sum = 0.0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += in[i];
  const double mean = block_sum(sum) / static_cast<double>(dim);
  double squares = 0.0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) squares += (in[i] - mean) * (in[i] - mean);
  const double inv = 1.0 / sqrt(block_sum(squares) / static_cast<double>(dim) + eps);
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[i] = static_cast<float>((in[i] - mean) * inv) * weight[i] + (bias ? bias[i] : 0.0f);
  }
}

__global__ void add_bias_kernel(float* rows, std::int64_t count, std::int64_t dim, const float* bias) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) rows[i] += bias[i % dim];
}

__global__ void add_kernel(float* y, const float* x, std::int64_t count) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) y[i] += x[i];
}

__global__ void add_scaled_kernel(float* y, const float* x, float scale, std::int64_t count) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) y[i] += scale * x[i];
}

__global__ void scale_by_one_plus_kernel(float* rows, std::int64_t count, std::int64_t dim, const float* offsets) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) rows[i] *= 1.0f + offsets[i % dim];
}

__global__ void silu_mul_kernel(float* gate, const float* up, std::int64_t count) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) {
    const float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void gelu_tanh_mul_kernel(float* gate, const float* up, std::int64_t count) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) {
    const float g = gate[i];
    const float u = 0.7978845608028654f * (g + 0.044715f * g * g * g);
    gate[i] = g / (1.0f + expf(-2.0f * u)) * up[i];
  }
}

__global__ void gelu_tanh_kernel(float* x, std::int64_t count) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) {
    const float v = x[i];
    x[i] = v * 0.5f * (1.0f + tanhf(0.79788456f * v * (1.0f + 0.044715f * v * v)));
  }
}

// Pairs (j, j + half) of each head's first rotary_dim dimensions, or (`adjacent`) (2j, 2j + 1),
// rotated by position · inv_freq[j] (`inverse`: by its opposite, the rotation's input gradient),
// the angle in double, and multiplied by the magnitude; the rest pass unchanged.
__global__ void rope_kernel(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                            const std::int64_t* positions, const double* inv_freq, double magnitude, bool adjacent,
                            bool inverse) {
  const std::int64_t half = rotary_dim / 2;
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * heads * half) return;
  const std::int64_t j = i % half, row = i / half;  // row = t * heads + h
  const std::int64_t t = row / heads;
  const double angle = static_cast<double>(positions[t]) * inv_freq[j];
  const float c = static_cast<float>(cos(angle) * magnitude);
  const float s = static_cast<float>(sin(angle) * magnitude) * (inverse ? -1.0f : 1.0f);
  float* v = x + row * head_dim;
  float& first = adjacent ? v[2 * j] : v[j];
  float& second = adjacent ? v[2 * j + 1] : v[j + half];
  const float a = first, b = second;
  first = a * c - b * s;
  second = b * c + a * s;
}

__global__ void store_kv_kernel(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads,
                                std::int64_t head_dim, std::int64_t capacity, float* cache) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * kv_heads * head_dim) return;
  const std::int64_t d = i % head_dim, h = (i / head_dim) % kv_heads, t = i / (head_dim * kv_heads);
  cache[(h * capacity + start + t) * head_dim + d] = rows[i];
}

// ---- attention: one block per (query row, head); each warp runs an online softmax over every
// kAttentionWarps-th key, and the block merges the warps' partial sums ----

constexpr int kAttentionWarps = 4;
constexpr int kMaxHeadDim = 256;
constexpr int kPerLane = kMaxHeadDim / 32;

// One key of a warp's online softmax (each lane holding dimensions lane + 32 i of the query qr
// and the sum acc): the key row kr's scaled, capped (Gemma 2) and biased (ALiBi's `bias`) score
// joins the running maximum m and total l, and value row vr the sum.
__device__ void online_softmax_step(const float* qr, const float* kr, const float* vr, int lane, int head_dim,
                                    float scale, float softcap, float bias, float& m, float& l, float* acc) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < head_dim) s += qr[i] * kr[d];
  }
  s = warp_sum(s) * scale;
  if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
  s += bias;
  const float m_new = fmaxf(m, s);
  const float keep = expf(m - m_new), e = expf(s - m_new);
  l = l * keep + e;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    acc[i] = acc[i] * keep + (d < head_dim ? e * vr[d] : 0.0f);
  }
  m = m_new;
}

// Position p is at slot p - held_from of the arrays.
__global__ void attention_kernel(const float* q, std::int64_t start, std::int64_t held_from, const float* keys,
                                 const float* values, std::int64_t capacity, int heads, int group, int head_dim,
                                 float scale, float softcap, const float* alibi, std::int64_t window, float* out) {
  const std::int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t position = start + t;
  const std::int64_t lowest = window > 0 ? max(position - window + 1, std::int64_t{0}) : 0;
  const float slope = alibi ? alibi[h] : 0.0f;
  const float* qv = q + (t * heads + h) * head_dim;
  const float* k = keys + static_cast<std::int64_t>(h / group) * capacity * head_dim;
  const float* v = values + static_cast<std::int64_t>(h / group) * capacity * head_dim;
  float qr[kPerLane], acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    qr[i] = d < head_dim ? qv[d] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (std::int64_t p = lowest + warp; p <= position; p += kAttentionWarps) {
    online_softmax_step(qr, k + (p - held_from) * head_dim, v + (p - held_from) * head_dim, lane, head_dim, scale,
                        softcap, slope * static_cast<float>(p), m, l, acc);
  }
  __shared__ float warp_max[kAttentionWarps], warp_total[kAttentionWarps], warp_acc[kAttentionWarps][kMaxHeadDim];
  if (lane == 0) warp_max[warp] = m, warp_total[warp] = l;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < head_dim) warp_acc[warp][d] = acc[i];
  }
  __syncthreads();
  float top = -INFINITY;
  for (int w = 0; w < kAttentionWarps; ++w) top = fmaxf(top, warp_max[w]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int w = 0; w < kAttentionWarps; ++w) {
      if (warp_max[w] == -INFINITY) continue;  // a warp that had no key
      const float f = expf(warp_max[w] - top);
      num += warp_acc[w][d] * f;
      den += warp_total[w] * f;
    }
    out[(t * heads + h) * head_dim + d] = num / den;
  }
}

// A token tree's attention: one warp per (node first + t, head h), an online softmax over the
// cache's positions [lowest, start) and then the node's ancestors and itself (node j at slot
// start + j, position start + its depth), as attention_tree on the CPU orders them.
__global__ void attention_tree_kernel(const float* q, std::int64_t first, std::int64_t start, const std::int32_t* parents,
                                      const float* keys, const float* values, std::int64_t capacity, int heads,
                                      int group, int head_dim, float scale, float softcap, const float* alibi,
                                      std::int64_t window, std::int64_t held_from, float* out) {
  const std::int64_t t = blockIdx.x;
  const int h = blockIdx.y, lane = threadIdx.x;
  const std::int64_t node = first + t;
  std::int64_t depth = 0;
  for (std::int64_t j = parents[node]; j >= 0; j = parents[j]) ++depth;
  const std::int64_t position = start + depth;
  const std::int64_t lowest = window > 0 ? max(position - window + 1, std::int64_t{0}) : 0;
  const float slope = alibi ? alibi[h] : 0.0f;
  const float* k = keys + static_cast<std::int64_t>(h / group) * capacity * head_dim;
  const float* v = values + static_cast<std::int64_t>(h / group) * capacity * head_dim;
  float qr[kPerLane], acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    qr[i] = d < head_dim ? q[(t * heads + h) * head_dim + d] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  // Key at position p in slot `slot`.
  const auto attend = [&](std::int64_t p, std::int64_t slot) {
    online_softmax_step(qr, k + slot * head_dim, v + slot * head_dim, lane, head_dim, scale, softcap,
                        slope * static_cast<float>(p), m, l, acc);
  };
  for (std::int64_t p = lowest; p < start; ++p) attend(p, p - held_from);
  std::int64_t d = depth;
  for (std::int64_t j = node; j >= 0; j = parents[j], --d) {
    if (start + d >= lowest) attend(start + d, start + j - held_from);
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int dim = lane + 32 * i;
    if (dim < head_dim) out[(t * heads + h) * head_dim + dim] = acc[i] / l;
  }
}

// KvCache::keep_path's moves in `count` arrays, one block per array, each thread its columns: a
// column's moves run in order, so a row read is never one written before it.
__global__ void keep_rows_kernel(float* arrays, std::int64_t capacity, std::int64_t head_dim, std::int64_t base,
                                 const std::int32_t* path, std::int64_t kept) {
  float* array = arrays + blockIdx.x * capacity * head_dim;
  for (std::int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    for (std::int64_t i = 0; i < kept; ++i) array[(base + i) * head_dim + d] = array[(base + path[i]) * head_dim + d];
  }
}

void launched() { SEPAL_CUDA_CHECK(cudaGetLastError()); }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int index) : index_(index) {
    int count = 0;  // left unwritten without a driver
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      fail("--device cuda:", index, ": no usable CUDA GPU here (",
           e != cudaSuccess ? cudaGetErrorString(e) : "the driver sees none", ")");
    }
    if (index >= count) fail("--device cuda:", index, ": this machine has ", count, " CUDA GPU(s), numbered from 0");
    // No context yet: a process that only checks for the GPU (a client whose hosts use it) takes
    // none of its memory. The cuBLAS handles come with the first product.
  }
  ~CudaBackend() override {
    if (lt_) cublasLtDestroy(lt_);
    if (blas_) cublasDestroy(blas_);
  }

  BackendInfo info() const override {
    cudaDeviceProp properties{};
    SEPAL_CUDA_CHECK(cudaGetDeviceProperties(&properties, index_));
    std::size_t free = 0, total = 0;
    enter();
    SEPAL_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return {Device{DeviceKind::kCuda, index_}, properties.name, static_cast<std::int64_t>(total),
            static_cast<std::int64_t>(free)};
  }
  bool holds(DType dtype) const override { return dtype != DType::kF16; }

  DeviceMatrix upload_matrix(const WeightView& host) override {
    if (host.dtype == DType::kI8 && (host.rows % 4 != 0 || host.cols % 4 != 0)) {
      fail("int8 weights of ", host.rows, "x", host.cols, " on a GPU: cuBLASLt's int8 product needs both sides divisible by 4");
    }
    return Backend::upload_matrix(host);
  }

  std::shared_ptr<void> allocate(std::int64_t bytes) override {
    SEPAL_CHECK(bytes >= 0);
    enter();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, static_cast<std::size_t>(bytes == 0 ? 1 : bytes));
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it
      std::size_t free = 0, total = 0;
      cudaMemGetInfo(&free, &total);
      fail("out of memory on cuda:", index_, ": ", bytes >> 20, " MiB asked, ", free >> 20, " MiB free of ", total >> 20,
           " (", cudaGetErrorString(e), ")");
    }
    const int index = index_;
    return std::shared_ptr<void>(p, [index](void* q) {
      cudaSetDevice(index);
      cudaFree(q);
    });
  }
  void copy_in(void* dst, const void* src, std::int64_t bytes) override {
    enter();
    SEPAL_CUDA_CHECK(cudaMemcpy(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyHostToDevice));
  }
  void copy_out(void* dst, const void* src, std::int64_t bytes) override {
    enter();
    SEPAL_CUDA_CHECK(cudaMemcpy(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyDeviceToHost));
  }

  void matmul(const float* x, std::int64_t n, const DeviceMatrix& m, float* y) override {
    const WeightView& w = m.view;
    if (n <= 0) return;
    enter();
    if (w.dtype == DType::kI8) {
      if (n > kStreamingMaxTokens) return int8_product(lt(), int8_, x, n, w, y);
      // Decode's few rows each take their own outlier columns, as on the CPU (kernels/matmul.h).
      for (std::int64_t r = 0; r < n; ++r) int8_product(lt(), int8_, x + r * w.cols, 1, w, y + r * w.rows);
      return;
    }
    SEPAL_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16, "the CUDA backend multiplies f32, bf16 and int8");
    if (n <= kGemvMaxRows) {
      const auto blocks = static_cast<unsigned>((w.rows + kGemvWarps - 1) / kGemvWarps);
      // Adapters' factors (LoRA) sit at any float offset of their values.
      const bool vectors = w.cols % 8 == 0 && reinterpret_cast<std::uintptr_t>(w.data) % 16 == 0 &&
                           reinterpret_cast<std::uintptr_t>(x) % 16 == 0;
      if (w.dtype == DType::kF32) {
        gemv_kernel<<<blocks, 32 * kGemvWarps>>>(x, static_cast<int>(n), static_cast<const float*>(w.data), w.rows, w.cols,
                                                  vectors, y);
      } else {
        gemv_kernel<<<blocks, 32 * kGemvWarps>>>(x, static_cast<int>(n), static_cast<const __nv_bfloat16*>(w.data), w.rows,
                                                  w.cols, vectors, y);
      }
      return launched();
    }
    // Row-major y[n, rows] = x[n, cols] · wᵀ is column-major yᵀ[rows, n] = op_T(W[cols, rows]) · xᵀ[cols, n].
    const float one = 1.0f, zero = 0.0f;
    const int rows = static_cast<int>(w.rows), cols = static_cast<int>(w.cols), tokens = static_cast<int>(n);
    if (w.dtype == DType::kF32) {
      SEPAL_CUDA_CHECK(cublasSgemm(blas(), CUBLAS_OP_T, CUBLAS_OP_N, rows, tokens, cols, &one,
                                   static_cast<const float*>(w.data), cols, x, cols, &zero, y, rows));
      return;
    }
    x_bf16_.resize(static_cast<std::size_t>(n * w.cols));
    to_bf16_kernel<<<grid(n * w.cols), kThreads>>>(x, n * w.cols, x_bf16_.p);
    launched();
    SEPAL_CUDA_CHECK(cublasGemmEx(blas(), CUBLAS_OP_T, CUBLAS_OP_N, rows, tokens, cols, &one, w.data, CUDA_R_16BF, cols,
                                  x_bf16_.p, CUDA_R_16BF, cols, &zero, y, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
  }

  void rmsnorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps, float* y) override {
    if (n <= 0) return;
    enter();
    rmsnorm_kernel<<<static_cast<unsigned>(n), kThreads>>>(x, dim, weight, eps, y);
    launched();
  }
  void layernorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, const float* bias, float eps,
                 float* y) override {
    if (n <= 0) return;
    enter();
    layernorm_kernel<<<static_cast<unsigned>(n), kThreads>>>(x, dim, 1, weight, bias, eps, y);
    launched();
  }
  void layernorm_heads(const float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, const float* weights,
                       float eps, float* y) override {
    if (n * heads <= 0) return;
    enter();
    layernorm_kernel<<<static_cast<unsigned>(n * heads), kThreads>>>(x, head_dim, heads, weights, nullptr, eps, y);
    launched();
  }
  void layernorm_heads_input_grad(const float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                  const float* weights, float eps, const float* dy, float* dx) override {
    enter();
    cuda::layernorm_input_grad(x, n * heads, head_dim, heads, weights, eps, dy, dx);
  }
  void add_bias(float* rows, std::int64_t n, std::int64_t dim, const float* bias) override {
    if (n * dim <= 0) return;
    enter();
    add_bias_kernel<<<grid(n * dim), kThreads>>>(rows, n * dim, dim, bias);
    launched();
  }
  void add_in_place(float* y, const float* x, std::int64_t count) override {
    if (count <= 0) return;
    enter();
    add_kernel<<<grid(count), kThreads>>>(y, x, count);
    launched();
  }
  void add_scaled_in_place(float* y, const float* x, float scale, std::int64_t count) override {
    if (count <= 0) return;
    enter();
    add_scaled_kernel<<<grid(count), kThreads>>>(y, x, scale, count);
    launched();
  }
  void scale_by_one_plus(float* rows, std::int64_t n, std::int64_t dim, const float* offsets) override {
    if (n * dim <= 0) return;
    enter();
    scale_by_one_plus_kernel<<<grid(n * dim), kThreads>>>(rows, n * dim, dim, offsets);
    launched();
  }
  void silu_mul(float* gate, const float* up, std::int64_t count) override {
    if (count <= 0) return;
    enter();
    silu_mul_kernel<<<grid(count), kThreads>>>(gate, up, count);
    launched();
  }
  void gelu_tanh_mul(float* gate, const float* up, std::int64_t count) override {
    if (count <= 0) return;
    enter();
    gelu_tanh_mul_kernel<<<grid(count), kThreads>>>(gate, up, count);
    launched();
  }
  void gelu_tanh(float* x, std::int64_t count) override {
    if (count <= 0) return;
    enter();
    gelu_tanh_kernel<<<grid(count), kThreads>>>(x, count);
    launched();
  }
  void rope_rotate_half(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                        const std::int64_t* positions, const double* inv_freq, double magnitude) override {
    rope(x, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude, false, false);
  }
  void rope_rotate_adjacent(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                            const std::int64_t* positions, const double* inv_freq, double magnitude) override {
    rope(x, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude, true, false);
  }
  void rope(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
            const std::int64_t* positions, const double* inv_freq, double magnitude, bool adjacent, bool inverse) {
    SEPAL_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, "RoPE rotates an even number of a head's ",
                head_dim, " dimensions, not ", rotary_dim);
    if (n * heads * (rotary_dim / 2) <= 0) return;
    enter();
    rope_kernel<<<grid(n * heads * (rotary_dim / 2)), kThreads>>>(x, n, heads, head_dim, rotary_dim, positions, inv_freq,
                                                                   magnitude, adjacent, inverse);
    launched();
  }
  void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
                std::int64_t capacity, float* cache) override {
    SEPAL_CHECK(start >= 0 && start + n <= capacity, "keys stored past the cache capacity");
    if (n * kv_heads * head_dim <= 0) return;
    enter();
    store_kv_kernel<<<grid(n * kv_heads * head_dim), kThreads>>>(rows, n, start, kv_heads, head_dim, capacity, cache);
    launched();
  }
  void attention_causal(const float* q, std::int64_t n, std::int64_t start, const float* keys, const float* values,
                        std::int64_t capacity, const AttentionDims& dims, float* out, const float* alibi,
                        std::int64_t window, std::int64_t held_from) override {
    SEPAL_CHECK(dims.kv_heads > 0 && dims.heads % dims.kv_heads == 0);
    SEPAL_CHECK(start - held_from + n <= capacity, "attention past the cache capacity");
    // The window must not reach before the first position held (kernels/attention.h).
    SEPAL_CHECK(held_from == 0 || (window > 0 && start - window + 1 >= held_from),
                "attention reaches positions the cache no longer holds");
    if (dims.head_dim > kMaxHeadDim) fail("attention on a GPU takes heads of at most ", kMaxHeadDim, " values, not ", dims.head_dim);
    if (dims.sinks) fail("attention sinks (GPT-OSS) do not run on a GPU yet");
    if (n <= 0) return;
    enter();
    const dim3 blocks(static_cast<unsigned>(n), static_cast<unsigned>(dims.heads));
    attention_kernel<<<blocks, 32 * kAttentionWarps>>>(q, start, held_from, keys, values, capacity, static_cast<int>(dims.heads),
                                                       static_cast<int>(dims.heads / dims.kv_heads),
                                                       static_cast<int>(dims.head_dim),
                                                       dims.score_scale(), dims.softcap, alibi, window, out);
    launched();
  }

  void attention_tree(const float* q, std::int64_t first, std::int64_t n, std::int64_t start, const std::int32_t* parents,
                      const float* keys, const float* values, std::int64_t capacity, const AttentionDims& dims,
                      float* out, const float* alibi, std::int64_t window, std::int64_t held_from) override {
    SEPAL_CHECK(dims.kv_heads > 0 && dims.heads % dims.kv_heads == 0);
    SEPAL_CHECK(first >= 0 && held_from >= 0 && held_from <= start && start + first + n - held_from <= capacity,
                "tree attention past the cache capacity");
    SEPAL_CHECK(held_from == 0 || (window > 0 && start - window + 1 >= held_from),
                "tree attention reaches positions the cache no longer holds");
    if (dims.head_dim > kMaxHeadDim) fail("attention on a GPU takes heads of at most ", kMaxHeadDim, " values, not ", dims.head_dim);
    if (dims.sinks) fail("attention sinks (GPT-OSS) do not run on a GPU yet");
    if (n <= 0) return;
    enter();
    attention_tree_kernel<<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(dims.heads)), 32>>>(
        q, first, start, parents, keys, values, capacity, static_cast<int>(dims.heads),
        static_cast<int>(dims.heads / dims.kv_heads), static_cast<int>(dims.head_dim), dims.score_scale(), dims.softcap,
        alibi, window, held_from, out);
    launched();
  }
  void keep_rows(float* arrays, std::int64_t count, std::int64_t capacity, std::int64_t head_dim, std::int64_t base,
                 const std::int32_t* path, std::int64_t kept) override {
    if (count <= 0 || kept <= 0) return;
    enter();
    path_.resize(static_cast<std::size_t>(kept));
    SEPAL_CUDA_CHECK(cudaMemcpy(path_.p, path, static_cast<std::size_t>(kept) * 4, cudaMemcpyHostToDevice));
    keep_rows_kernel<<<static_cast<unsigned>(count), kThreads>>>(arrays, capacity, head_dim, base, path_.p, kept);
    launched();
  }

  // ---- training passes (kernels/cuda/training_ops.cu) ----
  void copy(void* dst, const void* src, std::int64_t bytes) override {
    if (bytes <= 0) return;
    enter();
    SEPAL_CUDA_CHECK(cudaMemcpy(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyDeviceToDevice));
  }
  void zero(void* dst, std::int64_t bytes) override {
    if (bytes <= 0) return;
    enter();
    SEPAL_CUDA_CHECK(cudaMemset(dst, 0, static_cast<std::size_t>(bytes)));
  }
  void scale_in_place(float* x, float scale, std::int64_t count) override {
    enter();
    cuda::scale_in_place(x, scale, count);
  }
  void matmul_weight_grad(const float* dy, std::int64_t n, const float* x, std::int64_t rows, std::int64_t cols,
                          float* dw) override {
    enter();
    cuda::matmul_weight_grad(blas(), dy, n, x, rows, cols, dw);
  }
  void add_column_dots(const float* a, const float* b, std::int64_t n, std::int64_t dim, float* sums) override {
    enter();
    cuda::add_column_dots(a, b, n, dim, sums);
  }
  void load_kv(const float* cache, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
               std::int64_t capacity, float* rows) override {
    SEPAL_CHECK(start >= 0 && start + n <= capacity, "keys loaded past the cache capacity");
    enter();
    cuda::load_kv(cache, n, start, kv_heads, head_dim, capacity, rows);
  }
  void matmul_input_grad(const float* dy, std::int64_t n, const DeviceMatrix& w, float* dx) override {
    enter();
    cuda::matmul_input_grad(blas(), training_, dy, n, w.view, dx);
  }
  void rmsnorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                          const float* dy, float* dx) override {
    enter();
    cuda::rmsnorm_input_grad(x, n, dim, weight, eps, dy, dx);
  }
  void layernorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                            const float* dy, float* dx) override {
    enter();
    cuda::layernorm_input_grad(x, n, dim, 1, weight, eps, dy, dx);
  }
  void gelu_tanh_input_grad(const float* x, const float* dout, float* dx, std::int64_t count) override {
    enter();
    cuda::gelu_tanh_input_grad(x, dout, dx, count);
  }
  void silu_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                           std::int64_t count) override {
    enter();
    cuda::gate_mul_input_grad(false, gate, up, dout, dgate, dup, count);
  }
  void gelu_tanh_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                std::int64_t count) override {
    enter();
    cuda::gate_mul_input_grad(true, gate, up, dout, dgate, dup, count);
  }
  void rope_rotate_half_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                   std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                   double magnitude) override {
    rope(dx, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude, false, true);
  }
  void rope_rotate_adjacent_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                       std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                       double magnitude) override {
    rope(dx, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude, true, true);
  }
  void attention_causal_input_grad(const float* q, const float* keys, const float* values, std::int64_t n,
                                   const AttentionDims& dims, const float* dout, float* dq, float* dkeys, float* dvalues,
                                   const float* alibi, std::int64_t window) override {
    enter();
    cuda::attention_causal_input_grad(training_, q, keys, values, n, dims, dout, dq, dkeys, dvalues, alibi, window);
  }

 private:
  void enter() const { SEPAL_CUDA_CHECK(cudaSetDevice(index_)); }
  cublasHandle_t blas() {
    if (!blas_) SEPAL_CUDA_CHECK(cublasCreate(&blas_));
    return blas_;
  }
  cublasLtHandle_t lt() {
    if (!lt_) SEPAL_CUDA_CHECK(cublasLtCreate(&lt_));
    return lt_;
  }

  int index_ = 0;
  cublasHandle_t blas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  Int8Scratch int8_;
  Buffer<__nv_bfloat16> x_bf16_;
  TrainingScratch training_;
  Buffer<std::int32_t> path_;
};

}  // namespace

Backend* new_cuda_backend(int index) { return new CudaBackend(index); }

}  // namespace cuda
}  // namespace sepal

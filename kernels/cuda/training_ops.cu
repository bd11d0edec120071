// The training passes' input gradients on a GPU (kernels/cuda/training_ops.h): the formulas of
// kernels/cpu/gradients_cpu.cc, in kernels of our own and cuBLAS's f32 product.
#include <cuda_bf16.h>

#include <cmath>

#include "kernels/cuda/reductions.cuh"
#include "kernels/cuda/training_ops.h"

namespace sepal::cuda {
namespace {

void launched() { SEPAL_CUDA_CHECK(cudaGetLastError()); }

__device__ std::int64_t index() { return blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; }

__global__ void load_kv_kernel(const float* cache, std::int64_t n, std::int64_t start, std::int64_t kv_heads,
                               std::int64_t head_dim, std::int64_t capacity, float* rows) {
  const std::int64_t i = index();
  if (i >= n * kv_heads * head_dim) return;
  const std::int64_t d = i % head_dim, h = (i / head_dim) % kv_heads, t = i / (head_dim * kv_heads);
  rows[i] = cache[(h * capacity + start + t) * head_dim + d];
}

__global__ void widen_bf16_kernel(const __nv_bfloat16* w, std::int64_t count, float* out) {
  const std::int64_t i = index();
  if (i < count) out[i] = __bfloat162float(w[i]);
}

__global__ void dequantize_kernel(const std::int8_t* w, const float* scales, std::int64_t cols, std::int64_t count,
                                  float* out) {
  const std::int64_t i = index();
  if (i < count) out[i] = static_cast<float>(w[i]) * scales[i / cols];
}

__global__ void column_dots_kernel(const float* a, const float* b, std::int64_t n, std::int64_t dim, float* sums) {
  const std::int64_t i = index();
  if (i >= dim) return;
  double sum = 0.0;
  for (std::int64_t t = 0; t < n; ++t) sum += static_cast<double>(a[t * dim + i]) * b[t * dim + i];
  sums[i] += static_cast<float>(sum);
}

__global__ void scale_kernel(float* x, float scale, std::int64_t count) {
  const std::int64_t i = index();
  if (i < count) x[i] *= scale;
}

// One block per row: dx = r · dy · weight - x · r³ Σ(dy · weight · x) / dim, r = 1 / √(mean x² + eps);
// the sum of squares in float and the dot product in double, as the CPU's.
__global__ void rmsnorm_grad_kernel(const float* x, std::int64_t dim, const float* weight, float eps, const float* dy,
                                    float* dx) {
  const float* in = x + blockIdx.x * dim;
  const float* g = dy + blockIdx.x * dim;
  float* out = dx + blockIdx.x * dim;
  float squares = 0.0f;
  double dot = 0.0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    squares += in[i] * in[i];
    dot += static_cast<double>(g[i]) * weight[i] * in[i];
  }
  const float r = 1.0f / sqrtf(block_sum(squares) / static_cast<float>(dim) + eps);
  const float k = static_cast<float>(block_sum(dot)) * r * r * r / static_cast<float>(dim);
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[i] = r * g[i] * weight[i] - k * in[i];
}

// One block per row, in double: dx = r (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)), ĝ = dy · weight.
__global__ void layernorm_grad_kernel(const float* x, std::int64_t dim, std::int64_t heads, const float* weight,
                                      float eps, const float* dy, float* dx) {
  weight += (blockIdx.x % heads) * dim;
  const float* in = x + blockIdx.x * dim;
  const float* g = dy + blockIdx.x * dim;
  float* out = dx + blockIdx.x * dim;
  double sum = 0.0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += in[i];
  const double mean = block_sum(sum) / static_cast<double>(dim);
  double squares = 0.0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) squares += (in[i] - mean) * (in[i] - mean);
  const double r = 1.0 / sqrt(block_sum(squares) / static_cast<double>(dim) + eps);
  double g_sum = 0.0, gx_sum = 0.0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const double gi = static_cast<double>(g[i]) * weight[i];
    g_sum += gi;
    gx_sum += gi * (in[i] - mean) * r;
  }
  const double g_mean = block_sum(g_sum) / static_cast<double>(dim);
  const double gx_mean = block_sum(gx_sum) / static_cast<double>(dim);
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const double gi = static_cast<double>(g[i]) * weight[i];
    out[i] = static_cast<float>(r * (gi - g_mean - (in[i] - mean) * r * gx_mean));
  }
}

constexpr float kGeluC = 0.7978845608028654f, kGeluA = 0.044715f;

__global__ void gelu_grad_kernel(const float* x, const float* dout, float* dx, std::int64_t count) {
  const std::int64_t i = index();
  if (i >= count) return;
  const float v = x[i];
  const float t = tanhf(kGeluC * (v + kGeluA * v * v * v));
  const float du = kGeluC * (1.0f + 3.0f * kGeluA * v * v);
  dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
}

__global__ void gate_mul_grad_kernel(bool gelu, const float* gate, const float* up, const float* dout, float* dgate,
                                     float* dup, std::int64_t count) {
  const std::int64_t i = index();
  if (i >= count) return;
  const float g = gate[i], u = up[i], d = dout[i];  // read before writing: dgate or dup may be dout
  if (gelu) {
    const float t = tanhf(kGeluC * (g + kGeluA * g * g * g));
    const float slope = 0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * kGeluC * (1.0f + 3.0f * kGeluA * g * g);
    dgate[i] = d * u * slope;
    dup[i] = d * 0.5f * g * (1.0f + t);
    return;
  }
  const float s = 1.0f / (1.0f + expf(-g));
  dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
  dup[i] = d * g * s;
}

// ---- attention ----

constexpr int kMaxHeadDim = 256;
constexpr int kPerLane = kMaxHeadDim / 32;

struct AttentionShape {
  std::int64_t n;
  int heads, group, head_dim;
  float scale, softcap;
  const float* alibi;
  std::int64_t window;
};

// A row's scaled, capped and biased score of query vector qr against key row kr (each lane
// holding dimensions lane + 32 i); `capped` gets tanh(s / softcap) for the gradient.
__device__ float score(const AttentionShape& a, const float* qr, const float* kr, int lane, float slope,
                       std::int64_t key, float& capped) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < a.head_dim) s += qr[i] * kr[d];
  }
  s = warp_sum(s) * a.scale;
  capped = 0.0f;
  if (a.softcap > 0.0f) {  // Gemma 2
    capped = tanhf(s / a.softcap);
    s = a.softcap * capped;
  }
  return s + slope * static_cast<float>(key);
}

__device__ float dot_lanes(const float* mine, const float* row, int lane, int head_dim) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < head_dim) s += mine[i] * row[d];
  }
  return warp_sum(s);
}

__device__ void load_lanes(const float* row, int lane, int head_dim, float* mine) {
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    mine[i] = d < head_dim ? row[d] : 0.0f;
  }
}

// One warp per (query row t, head h): the row's softmax (its maximum and sum), c = Σ p·dp, and
// dq = Σ_j p_j (dp_j - c) · scale · (1 - tanh²) · k_j. Keeps (maximum, sum, c) in rows[h, t].
__global__ void attention_grad_queries_kernel(AttentionShape a, const float* q, const float* keys, const float* values,
                                              const float* dout, float* dq, float* rows) {
  const std::int64_t t = blockIdx.x;
  const int h = blockIdx.y, lane = threadIdx.x;
  const std::int64_t lowest = a.window > 0 ? max(t - a.window + 1, std::int64_t{0}) : 0;
  const float slope = a.alibi ? a.alibi[h] : 0.0f;
  const float* k = keys + static_cast<std::int64_t>(h / a.group) * a.n * a.head_dim;
  const float* v = values + static_cast<std::int64_t>(h / a.group) * a.n * a.head_dim;
  float qr[kPerLane], dr[kPerLane], acc[kPerLane] = {};
  load_lanes(q + (t * a.heads + h) * a.head_dim, lane, a.head_dim, qr);
  load_lanes(dout + (t * a.heads + h) * a.head_dim, lane, a.head_dim, dr);
  float m = -INFINITY, l = 0.0f, capped = 0.0f;
  for (std::int64_t p = lowest; p <= t; ++p) {
    const float s = score(a, qr, k + p * a.head_dim, lane, slope, p, capped);
    const float m_new = fmaxf(m, s);
    l = l * expf(m - m_new) + expf(s - m_new);
    m = m_new;
  }
  float centre = 0.0f;
  for (std::int64_t p = lowest; p <= t; ++p) {
    const float prob = expf(score(a, qr, k + p * a.head_dim, lane, slope, p, capped) - m) / l;
    centre += prob * dot_lanes(dr, v + p * a.head_dim, lane, a.head_dim);
  }
  for (std::int64_t p = lowest; p <= t; ++p) {
    const float* kr = k + p * a.head_dim;
    const float prob = expf(score(a, qr, kr, lane, slope, p, capped) - m) / l;
    float ds = prob * (dot_lanes(dr, v + p * a.head_dim, lane, a.head_dim) - centre) * a.scale;
    if (a.softcap > 0.0f) ds *= 1.0f - capped * capped;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < a.head_dim) acc[i] += ds * kr[d];
    }
  }
  float* out = dq + (t * a.heads + h) * a.head_dim;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < a.head_dim) out[d] = acc[i];
  }
  if (lane == 0) {
    float* keep = rows + (static_cast<std::int64_t>(h) * a.n + t) * 3;
    keep[0] = m, keep[1] = l, keep[2] = centre;
  }
}

// One warp per (key row j, key/value head g): over the group's heads and the query rows that see
// key j, dk_j = Σ ds · q_i and dv_j = Σ p · dout_i, with each row's softmax from rows[h, i].
__global__ void attention_grad_keys_kernel(AttentionShape a, const float* q, const float* keys, const float* values,
                                           const float* dout, const float* rows, float* dkeys, float* dvalues) {
  const std::int64_t j = blockIdx.x;
  const int g = blockIdx.y, lane = threadIdx.x;
  const std::int64_t highest = a.window > 0 ? min(j + a.window - 1, a.n - 1) : a.n - 1;
  float kr[kPerLane], vr[kPerLane], dk[kPerLane] = {}, dv[kPerLane] = {};
  load_lanes(keys + (static_cast<std::int64_t>(g) * a.n + j) * a.head_dim, lane, a.head_dim, kr);
  load_lanes(values + (static_cast<std::int64_t>(g) * a.n + j) * a.head_dim, lane, a.head_dim, vr);
  for (int h = g * a.group; h < (g + 1) * a.group; ++h) {
    const float slope = a.alibi ? a.alibi[h] : 0.0f;
    for (std::int64_t i = j; i <= highest; ++i) {
      const float* qi = q + (i * a.heads + h) * a.head_dim;
      const float* di = dout + (i * a.heads + h) * a.head_dim;
      const float* keep = rows + (static_cast<std::int64_t>(h) * a.n + i) * 3;
      float capped = 0.0f;
      const float s = score(a, kr, qi, lane, slope, j, capped);  // q·k is k·q
      const float prob = expf(s - keep[0]) / keep[1];
      float ds = prob * (dot_lanes(vr, di, lane, a.head_dim) - keep[2]) * a.scale;
      if (a.softcap > 0.0f) ds *= 1.0f - capped * capped;
#pragma unroll
      for (int x = 0; x < kPerLane; ++x) {
        const int d = lane + 32 * x;
        if (d < a.head_dim) {
          dk[x] += ds * qi[d];
          dv[x] += prob * di[d];
        }
      }
    }
  }
  float* dkj = dkeys + (static_cast<std::int64_t>(g) * a.n + j) * a.head_dim;
  float* dvj = dvalues + (static_cast<std::int64_t>(g) * a.n + j) * a.head_dim;
#pragma unroll
  for (int x = 0; x < kPerLane; ++x) {
    const int d = lane + 32 * x;
    if (d < a.head_dim) dkj[d] = dk[x], dvj[d] = dv[x];
  }
}

}  // namespace

void load_kv(const float* cache, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
             std::int64_t capacity, float* rows) {
  if (n * kv_heads * head_dim <= 0) return;
  load_kv_kernel<<<grid(n * kv_heads * head_dim), kThreads>>>(cache, n, start, kv_heads, head_dim, capacity, rows);
  launched();
}

void matmul_input_grad(cublasHandle_t blas, TrainingScratch& scratch, const float* dy, std::int64_t n,
                       const WeightView& w, float* dx) {
  SEPAL_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16 || w.dtype == DType::kI8,
              "matmul_input_grad: weights must be f32, bf16 or int8, not ", dtype_name(w.dtype));
  if (n <= 0 || w.cols <= 0) return;
  const std::int64_t count = w.rows * w.cols;
  const float* weights = static_cast<const float*>(w.data);
  if (w.dtype != DType::kF32) {
    scratch.weights.resize(static_cast<std::size_t>(count));
    if (w.dtype == DType::kBF16) {
      widen_bf16_kernel<<<grid(count), kThreads>>>(static_cast<const __nv_bfloat16*>(w.data), count, scratch.weights.p);
    } else {
      SEPAL_CHECK(w.scales != nullptr, "matmul_input_grad: int8 weights without scales");
      dequantize_kernel<<<grid(count), kThreads>>>(static_cast<const std::int8_t*>(w.data), w.scales, w.cols, count,
                                                  scratch.weights.p);
    }
    launched();
    weights = scratch.weights.p;
  }
  // Row-major dx[n, cols] = dy[n, rows] · W[rows, cols] is column-major dxᵀ[cols, n] = W'[cols, rows] · dyᵀ[rows, n],
  // W' being W read column-major.
  const float one = 1.0f, zero = 0.0f;
  SEPAL_CUDA_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(w.cols), static_cast<int>(n),
                               static_cast<int>(w.rows), &one, weights, static_cast<int>(w.cols), dy,
                               static_cast<int>(w.rows), &zero, dx, static_cast<int>(w.cols)));
}

void matmul_weight_grad(cublasHandle_t blas, const float* dy, std::int64_t n, const float* x, std::int64_t rows,
                        std::int64_t cols, float* dw) {
  if (n <= 0 || rows <= 0 || cols <= 0) return;
  // Row-major dw[rows, cols] += dyᵀ[rows, n] · x[n, cols] is column-major dwᵀ[cols, rows] += xᵀ[cols, n] · dy[n, rows],
  // dy read column-major as [rows, n] and transposed.
  const float one = 1.0f;
  SEPAL_CUDA_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(cols), static_cast<int>(rows),
                               static_cast<int>(n), &one, x, static_cast<int>(cols), dy, static_cast<int>(rows), &one, dw,
                               static_cast<int>(cols)));
}

void add_column_dots(const float* a, const float* b, std::int64_t n, std::int64_t dim, float* sums) {
  if (dim <= 0) return;
  column_dots_kernel<<<grid(dim), kThreads>>>(a, b, n, dim, sums);
  launched();
}

void scale_in_place(float* x, float scale, std::int64_t count) {
  if (count <= 0) return;
  scale_kernel<<<grid(count), kThreads>>>(x, scale, count);
  launched();
}

void rmsnorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                        const float* dy, float* dx) {
  SEPAL_CHECK(dim > 0);
  if (n <= 0) return;
  rmsnorm_grad_kernel<<<static_cast<unsigned>(n), kThreads>>>(x, dim, weight, eps, dy, dx);
  launched();
}

void layernorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, std::int64_t heads, const float* weight,
                          float eps, const float* dy, float* dx) {
  SEPAL_CHECK(dim > 0 && heads > 0);
  if (n <= 0) return;
  layernorm_grad_kernel<<<static_cast<unsigned>(n), kThreads>>>(x, dim, heads, weight, eps, dy, dx);
  launched();
}

void gelu_tanh_input_grad(const float* x, const float* dout, float* dx, std::int64_t count) {
  if (count <= 0) return;
  gelu_grad_kernel<<<grid(count), kThreads>>>(x, dout, dx, count);
  launched();
}

void gate_mul_input_grad(bool gelu, const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                         std::int64_t count) {
  SEPAL_CHECK(dgate != dup, "gate_mul_input_grad: dgate and dup must differ");
  if (count <= 0) return;
  gate_mul_grad_kernel<<<grid(count), kThreads>>>(gelu, gate, up, dout, dgate, dup, count);
  launched();
}

void attention_causal_input_grad(TrainingScratch& scratch, const float* q, const float* keys, const float* values,
                                 std::int64_t n, const AttentionDims& dims, const float* dout, float* dq, float* dkeys,
                                 float* dvalues, const float* alibi, std::int64_t window) {
  SEPAL_CHECK(dims.kv_heads > 0 && dims.heads % dims.kv_heads == 0);
  if (dims.head_dim > kMaxHeadDim) fail("attention on a GPU takes heads of at most ", kMaxHeadDim, " values, not ", dims.head_dim);
  if (dims.sinks) fail("attention sinks (GPT-OSS) do not run on a GPU yet");
  if (n <= 0) return;
  const AttentionShape a{n,
                         static_cast<int>(dims.heads),
                         static_cast<int>(dims.heads / dims.kv_heads),
                         static_cast<int>(dims.head_dim),
                         dims.score_scale(),
                         dims.softcap,
                         alibi,
                         window};
  scratch.attention_rows.resize(static_cast<std::size_t>(dims.heads * n * 3));
  attention_grad_queries_kernel<<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(dims.heads)), 32>>>(
      a, q, keys, values, dout, dq, scratch.attention_rows.p);
  launched();
  attention_grad_keys_kernel<<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(dims.kv_heads)), 32>>>(
      a, q, keys, values, dout, scratch.attention_rows.p, dkeys, dvalues);
  launched();
}

}  // namespace sepal::cuda

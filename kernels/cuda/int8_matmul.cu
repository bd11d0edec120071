#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "kernels/cuda/int8_matmul.h"
#include "kernels/error.h"

namespace sepal::cuda {
namespace {

void check(cudaError_t e, const char* call) {
  if (e != cudaSuccess) fail("CUDA ", call, " failed: ", cudaGetErrorString(e));
}
void check(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt ", call, " failed: status ", static_cast<int>(s));
}
#define SEPAL_CUDA_CHECK(call) check((call), #call)

// Device memory that frees itself.
template <typename T>
struct Buffer {
  T* p = nullptr;
  std::size_t n = 0;
  Buffer() = default;
  explicit Buffer(std::size_t count) { resize(count); }
  ~Buffer() {
    if (p) cudaFree(p);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void resize(std::size_t count) {
    if (count <= n) return;
    if (p) cudaFree(p);
    p = nullptr;
    SEPAL_CUDA_CHECK(cudaMalloc(&p, count * sizeof(T)));
    n = count;
  }
};

constexpr int kThreads = 256;

__device__ float block_max(float v) {
  __shared__ float shared[kThreads / 32];
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < kThreads / 32 ? shared[threadIdx.x] : 0.0f;
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0) shared[0] = v;
  }
  __syncthreads();
  const float result = shared[0];
  __syncthreads();
  return result;
}

// One block a row: absmax over the columns not flagged as outliers (flags may be null), then
// q = round-half-even(x * 127 / absmax), 0 in outlier columns; scale = absmax / 127.
__global__ void quantize_rows_kernel(const float* x, std::int64_t cols, const int* outlier, std::int8_t* q,
                                     float* scales) {
  const float* row = x + blockIdx.x * cols;
  float m = 0.0f;
  for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    if (!outlier || !outlier[c]) m = fmaxf(m, fabsf(row[c]));
  }
  const float absmax = block_max(m);
  const float inverse = absmax > 0.0f ? 127.0f / absmax : 0.0f;
  for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const bool skip = outlier && outlier[c];
    q[blockIdx.x * cols + c] = skip ? 0 : static_cast<std::int8_t>(__float2int_rn(row[c] * inverse));
  }
  if (threadIdx.x == 0) scales[blockIdx.x] = absmax / 127.0f;
}

__global__ void dequantize_rows_kernel(const std::int8_t* q, const float* scales, std::int64_t rows,
                                       std::int64_t cols, float* out) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < rows * cols) out[i] = static_cast<float>(q[i]) * scales[i / cols];
}

// flags[c] = 1 when any of the n tokens has |x[t, c]| >= threshold, 2 when one is not finite.
__global__ void find_outliers_kernel(const float* x, std::int64_t n, std::int64_t cols, float threshold, int* flags) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  int flag = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    const float v = x[t * cols + c];
    if (!isfinite(v)) flag = 2;
    else if (flag == 0 && fabsf(v) >= threshold) flag = 1;
  }
  flags[c] = flag;
}

// y[t, r] = ws[r] * (xs[t] * acc[t, r] + Σ_j x[t, col_j] * w[r, col_j]): the scaling and the
// floating-point outlier part against the int8 weight columns, dequantized by ws[r].
__global__ void epilogue_kernel(const std::int32_t* acc, const float* x_scale, const float* w_scale,
                                const float* x, const std::int8_t* w, const int* outlier_cols, int outliers,
                                std::int64_t n, std::int64_t rows, std::int64_t cols, float* y) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * rows) return;
  const std::int64_t t = i / rows, r = i % rows;
  float sum = x_scale[t] * static_cast<float>(acc[i]);
  for (int j = 0; j < outliers; ++j) {
    const int c = outlier_cols[j];
    sum += x[t * cols + c] * static_cast<float>(w[r * cols + c]);
  }
  y[i] = sum * w_scale[r];
}

unsigned grid(std::int64_t items) { return static_cast<unsigned>((items + kThreads - 1) / kThreads); }

}  // namespace

bool device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

void quantize_rows(const float* x, std::int64_t rows, std::int64_t cols, std::int8_t* q, float* scales) {
  Buffer<float> dx(rows * cols), ds(rows);
  Buffer<std::int8_t> dq(rows * cols);
  SEPAL_CUDA_CHECK(cudaMemcpy(dx.p, x, rows * cols * sizeof(float), cudaMemcpyHostToDevice));
  quantize_rows_kernel<<<static_cast<unsigned>(rows), kThreads>>>(dx.p, cols, nullptr, dq.p, ds.p);
  SEPAL_CUDA_CHECK(cudaGetLastError());
  SEPAL_CUDA_CHECK(cudaMemcpy(q, dq.p, rows * cols, cudaMemcpyDeviceToHost));
  SEPAL_CUDA_CHECK(cudaMemcpy(scales, ds.p, rows * sizeof(float), cudaMemcpyDeviceToHost));
}

void dequantize_rows(const std::int8_t* q, const float* scales, std::int64_t rows, std::int64_t cols, float* out) {
  Buffer<std::int8_t> dq(rows * cols);
  Buffer<float> ds(rows), dout(rows * cols);
  SEPAL_CUDA_CHECK(cudaMemcpy(dq.p, q, rows * cols, cudaMemcpyHostToDevice));
  SEPAL_CUDA_CHECK(cudaMemcpy(ds.p, scales, rows * sizeof(float), cudaMemcpyHostToDevice));
  dequantize_rows_kernel<<<grid(rows * cols), kThreads>>>(dq.p, ds.p, rows, cols, dout.p);
  SEPAL_CUDA_CHECK(cudaGetLastError());
  SEPAL_CUDA_CHECK(cudaMemcpy(out, dout.p, rows * cols * sizeof(float), cudaMemcpyDeviceToHost));
}

struct Int8Matmul::Device {
  std::int64_t rows = 0, cols = 0;
  float threshold = 6.0f;
  Buffer<std::int8_t> w;
  Buffer<float> w_scale;
  cublasLtHandle_t lt = nullptr;
  // Per call, grown as needed.
  Buffer<float> x, x_scale, y;
  Buffer<std::int8_t> xq;
  Buffer<std::int32_t> acc;
  Buffer<int> flags, outlier_cols;
  Buffer<char> workspace;
};

Int8Matmul::Int8Matmul(const WeightView& view) : device_(std::make_unique<Device>()) {
  SEPAL_CHECK(view.dtype == DType::kI8 && view.scales, "Int8Matmul needs int8 weights with their scales");
  SEPAL_CHECK(view.cols % 4 == 0 && view.rows % 4 == 0, "cuBLASLt int8 needs rows and cols divisible by 4");
  Device& d = *device_;
  d.rows = view.rows;
  d.cols = view.cols;
  d.threshold = view.outlier_threshold > 0 ? view.outlier_threshold : INFINITY;
  d.w.resize(d.rows * d.cols);
  d.w_scale.resize(d.rows);
  SEPAL_CUDA_CHECK(cudaMemcpy(d.w.p, view.data, d.rows * d.cols, cudaMemcpyHostToDevice));
  SEPAL_CUDA_CHECK(cudaMemcpy(d.w_scale.p, view.scales, d.rows * sizeof(float), cudaMemcpyHostToDevice));
  SEPAL_CUDA_CHECK(cublasLtCreate(&d.lt));
  d.workspace.resize(4 << 20);
}

Int8Matmul::~Int8Matmul() {
  if (device_ && device_->lt) cublasLtDestroy(device_->lt);
}

void Int8Matmul::forward(const float* x, std::int64_t n, float* y) {
  SEPAL_CHECK(n >= 0);
  if (n == 0) return;
  Device& d = *device_;
  const std::int64_t rows = d.rows, cols = d.cols;
  const std::int64_t padded = (n + 3) / 4 * 4;  // cuBLASLt's int8 kernels want dimensions divisible by 4
  d.x.resize(n * cols);
  d.x_scale.resize(n);
  d.xq.resize(padded * cols);
  d.acc.resize(padded * rows);
  d.y.resize(n * rows);
  d.flags.resize(cols);
  d.outlier_cols.resize(cols);
  SEPAL_CUDA_CHECK(cudaMemcpy(d.x.p, x, n * cols * sizeof(float), cudaMemcpyHostToDevice));

  // Outlier columns: flagged on the device, listed on the host (they are few).
  find_outliers_kernel<<<grid(cols), kThreads>>>(d.x.p, n, cols, d.threshold, d.flags.p);
  SEPAL_CUDA_CHECK(cudaGetLastError());
  std::vector<int> flags(static_cast<std::size_t>(cols)), list;
  SEPAL_CUDA_CHECK(cudaMemcpy(flags.data(), d.flags.p, cols * sizeof(int), cudaMemcpyDeviceToHost));
  for (std::int64_t c = 0; c < cols; ++c) {
    if (flags[c] == 2) fail("int8 matmul: the activations hold NaN or infinity");
    if (flags[c]) list.push_back(static_cast<int>(c));
  }
  if (!list.empty()) {
    SEPAL_CUDA_CHECK(cudaMemcpy(d.outlier_cols.p, list.data(), list.size() * sizeof(int), cudaMemcpyHostToDevice));
  }
  quantize_rows_kernel<<<static_cast<unsigned>(n), kThreads>>>(d.x.p, cols, d.flags.p, d.xq.p, d.x_scale.p);
  SEPAL_CUDA_CHECK(cudaGetLastError());
  if (padded > n) SEPAL_CUDA_CHECK(cudaMemset(d.xq.p + n * cols, 0, (padded - n) * cols));

  // acc (column-major [rows, n], i.e. row-major [n, rows]) = Wᵀ-op(W) · Xq in int32: the "TN"
  // layout cuBLASLt's int8 kernels take. W row-major [rows, cols] is column-major [cols, rows].
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  SEPAL_CUDA_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32I, CUDA_R_32I));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  SEPAL_CUDA_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  SEPAL_CUDA_CHECK(cublasLtMatrixLayoutCreate(&a, CUDA_R_8I, cols, rows, cols));
  SEPAL_CUDA_CHECK(cublasLtMatrixLayoutCreate(&b, CUDA_R_8I, cols, padded, cols));
  SEPAL_CUDA_CHECK(cublasLtMatrixLayoutCreate(&c, CUDA_R_32I, rows, padded, rows));
  const std::int32_t alpha = 1, beta = 0;
  const cublasStatus_t status = cublasLtMatmul(d.lt, op, &alpha, d.w.p, a, d.xq.p, b, &beta, d.acc.p, c, d.acc.p, c,
                                               nullptr, d.workspace.p, d.workspace.n, nullptr);
  cublasLtMatrixLayoutDestroy(c);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(a);
  cublasLtMatmulDescDestroy(op);
  check(status, "cublasLtMatmul");

  epilogue_kernel<<<grid(n * rows), kThreads>>>(d.acc.p, d.x_scale.p, d.w_scale.p, d.x.p, d.w.p, d.outlier_cols.p,
                                                static_cast<int>(list.size()), n, rows, cols, d.y.p);
  SEPAL_CUDA_CHECK(cudaGetLastError());
  SEPAL_CUDA_CHECK(cudaMemcpy(y, d.y.p, n * rows * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace sepal::cuda

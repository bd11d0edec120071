#include <cmath>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/int8_matmul.h"
#include "kernels/cuda/int8_product.h"

namespace sepal::cuda {
namespace {

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

void int8_product(cublasLtHandle_t lt, Int8Scratch& d, const float* x, std::int64_t n, const WeightView& w, float* y) {
  SEPAL_CHECK(n >= 0 && w.dtype == DType::kI8 && w.rows % 4 == 0 && w.cols % 4 == 0);
  if (n == 0) return;
  const std::int64_t rows = w.rows, cols = w.cols;
  const float threshold = w.outlier_threshold > 0 ? w.outlier_threshold : INFINITY;
  const auto* wq = static_cast<const std::int8_t*>(w.data);
  const std::int64_t padded = (n + 3) / 4 * 4;  // cuBLASLt's int8 kernels want dimensions divisible by 4
  d.x_scale.resize(n);
  d.xq.resize(padded * cols);
  d.acc.resize(padded * rows);
  d.flags.resize(cols);
  d.outlier_cols.resize(cols);
  d.workspace.resize(4 << 20);

  // Outlier columns: flagged on the device, listed on the host (they are few).
  find_outliers_kernel<<<grid(cols), kThreads>>>(x, n, cols, threshold, d.flags.p);
  SEPAL_CUDA_CHECK(cudaGetLastError());
  d.host_flags.resize(static_cast<std::size_t>(cols));
  d.outlier_list.clear();
  SEPAL_CUDA_CHECK(cudaMemcpy(d.host_flags.data(), d.flags.p, cols * sizeof(int), cudaMemcpyDeviceToHost));
  for (std::int64_t c = 0; c < cols; ++c) {
    if (d.host_flags[c] == 2) fail("int8 matmul: the activations hold NaN or infinity");
    if (d.host_flags[c]) d.outlier_list.push_back(static_cast<int>(c));
  }
  if (!d.outlier_list.empty()) {
    SEPAL_CUDA_CHECK(cudaMemcpy(d.outlier_cols.p, d.outlier_list.data(), d.outlier_list.size() * sizeof(int),
                                cudaMemcpyHostToDevice));
  }
  quantize_rows_kernel<<<static_cast<unsigned>(n), kThreads>>>(x, cols, d.flags.p, d.xq.p, d.x_scale.p);
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
  const cublasStatus_t status = cublasLtMatmul(lt, op, &alpha, wq, a, d.xq.p, b, &beta, d.acc.p, c, d.acc.p, c,
                                               nullptr, d.workspace.p, d.workspace.n, nullptr);
  cublasLtMatrixLayoutDestroy(c);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(a);
  cublasLtMatmulDescDestroy(op);
  check(status, "cublasLtMatmul");

  epilogue_kernel<<<grid(n * rows), kThreads>>>(d.acc.p, d.x_scale.p, w.scales, x, wq, d.outlier_cols.p,
                                                static_cast<int>(d.outlier_list.size()), n, rows, cols, y);
  SEPAL_CUDA_CHECK(cudaGetLastError());
}

struct Int8Matmul::Device {
  WeightView view;
  Buffer<std::int8_t> w;
  Buffer<float> w_scale;
  cublasLtHandle_t lt = nullptr;
  Buffer<float> x, y;  // per call, grown as needed
  Int8Scratch scratch;
};

Int8Matmul::Int8Matmul(const WeightView& view) : device_(std::make_unique<Device>()) {
  SEPAL_CHECK(view.dtype == DType::kI8 && view.scales, "Int8Matmul needs int8 weights with their scales");
  SEPAL_CHECK(view.cols % 4 == 0 && view.rows % 4 == 0, "cuBLASLt int8 needs rows and cols divisible by 4");
  Device& d = *device_;
  d.w.resize(view.rows * view.cols);
  d.w_scale.resize(view.rows);
  SEPAL_CUDA_CHECK(cudaMemcpy(d.w.p, view.data, view.rows * view.cols, cudaMemcpyHostToDevice));
  SEPAL_CUDA_CHECK(cudaMemcpy(d.w_scale.p, view.scales, view.rows * sizeof(float), cudaMemcpyHostToDevice));
  d.view = view;
  d.view.data = d.w.p;
  d.view.scales = d.w_scale.p;
  SEPAL_CUDA_CHECK(cublasLtCreate(&d.lt));
}

Int8Matmul::~Int8Matmul() {
  if (device_ && device_->lt) cublasLtDestroy(device_->lt);
}

void Int8Matmul::forward(const float* x, std::int64_t n, float* y) {
  SEPAL_CHECK(n >= 0);
  if (n == 0) return;
  Device& d = *device_;
  d.x.resize(n * d.view.cols);
  d.y.resize(n * d.view.rows);
  SEPAL_CUDA_CHECK(cudaMemcpy(d.x.p, x, n * d.view.cols * sizeof(float), cudaMemcpyHostToDevice));
  int8_product(d.lt, d.scratch, d.x.p, n, d.view, d.y.p);
  SEPAL_CUDA_CHECK(cudaMemcpy(y, d.y.p, n * d.view.rows * sizeof(float), cudaMemcpyDeviceToHost));
}

}  // namespace sepal::cuda

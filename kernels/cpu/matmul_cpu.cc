#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/matmul_i8.h"
#include "kernels/cpu/row_slices.h"
#include "kernels/error.h"
#include "kernels/matmul.h"
#include "kernels/parallel.h"

namespace sepal {
namespace {

cpu::GemvFn gemv_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512Vnni:
    case CpuIsa::kAvx512: return cpu::gemv_avx512;
    case CpuIsa::kAvx2: return cpu::gemv_avx2;
    case CpuIsa::kGeneric: break;
  }
  return cpu::gemv_generic;
}

// Streaming path: every thread reads one contiguous slice of rows, once.
void matmul_streaming(const float* x, std::int64_t n, const WeightView& w, float* y, CpuIsa isa) {
  const cpu::GemvFn gemv = gemv_for(isa);
  cpu::for_each_row_slice(w.rows, [&](std::int64_t r0, std::int64_t r1) { gemv(x, n, w, r0, r1, y); });
}

// Blocked path for f32: OpenBLAS (its single-threaded build) on panels of rows, one per task.
// The panels have a fixed size, not one per thread, so that the result does not depend on the
// thread count (OpenBLAS treats a panel's last columns differently from the others).
void matmul_blocked_f32(const float* x, std::int64_t n, const WeightView& w, float* y) {
  constexpr std::int64_t kPanelRows = 256;
  const auto* weights = static_cast<const float*>(w.data);
  parallel_for((w.rows + kPanelRows - 1) / kPanelRows, [&](std::int64_t p) {
    const std::int64_t r0 = p * kPanelRows, rows = std::min(kPanelRows, w.rows - r0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(rows),
                static_cast<int>(w.cols), 1.0f, x, static_cast<int>(w.cols), weights + r0 * w.cols,
                static_cast<int>(w.cols), 0.0f, y + r0, static_cast<int>(w.rows));
  });
}

// Blocked path for bf16: panels of rows are widened to f32 once and multiplied by all tokens.
void matmul_blocked_bf16(const float* x, std::int64_t n, const WeightView& w, float* y) {
  constexpr std::int64_t kPanelRows = 64;
  const std::int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
  const auto* bits = static_cast<const std::uint16_t*>(w.data);
  parallel_for(panels, [&](std::int64_t p) {
    thread_local std::vector<float> panel;
    panel.resize(static_cast<std::size_t>(kPanelRows * w.cols));
    const std::int64_t r0 = p * kPanelRows;
    const std::int64_t rows = std::min(kPanelRows, w.rows - r0);
    const std::uint16_t* src = bits + r0 * w.cols;
    for (std::int64_t i = 0; i < rows * w.cols; ++i) panel[i] = bf16_to_f32(src[i]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(rows),
                static_cast<int>(w.cols), 1.0f, x, static_cast<int>(w.cols), panel.data(),
                static_cast<int>(w.cols), 0.0f, y + r0, static_cast<int>(w.rows));
  });
}

}  // namespace

void matmul(const float* x, std::int64_t n, const WeightView& w, float* y, CpuIsa isa) {
  SEPAL_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16 || w.dtype == DType::kI8,
              "matmul weights must be f32, bf16 or int8");
  SEPAL_CHECK(n >= 0 && w.rows >= 0 && w.cols >= 0);
  if (n == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    std::fill(y, y + n * w.rows, 0.0f);
    return;
  }
  if (w.dtype == DType::kI8) {
    cpu::matmul_i8(x, n, w, y, isa);
    return;
  }
  if (n <= kStreamingMaxTokens) {
    matmul_streaming(x, n, w, y, isa);
  } else if (isa >= CpuIsa::kAvx512) {
    cpu::gemm_avx512(x, n, w, y);
  } else if (w.dtype == DType::kF32) {
    matmul_blocked_f32(x, n, w, y);
  } else {
    matmul_blocked_bf16(x, n, w, y);
  }
}

void matmul(const float* x, std::int64_t n, const WeightView& w, float* y) {
  matmul(x, n, w, y, active_cpu_isa());
}

}  // namespace sepal

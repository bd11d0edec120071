#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/aligned_vector.h"
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
    case CpuIsa::kAmx:
    case CpuIsa::kAvx512Vnni:
    case CpuIsa::kAvx512:
      return cpu::gemv_avx512;
    case CpuIsa::kAvx2:
      return cpu::gemv_avx2;
    case CpuIsa::kGeneric:
      break;
  }
  return cpu::gemv_generic;
}

// Streaming path: every thread reads one contiguous slice of rows (of all the matrices), once.
void matmul_streaming(const float* x, std::int64_t n, std::span<const WeightView> ws,
                      std::span<float* const> ys, CpuIsa isa) {
  const cpu::GemvFn gemv = gemv_for(isa);
  if (gemv == cpu::gemv_avx512 && ws[0].dtype == DType::kBF16) {
    // The activations' layout once for every chunk of rows (it was 3% of a bf16 decode), on a
    // cache line: the kernel loads it 64 bytes at a time, two loads per weight line (unaligned,
    // most loads straddled two lines: 2 layers of the 110M shape, in the last-level cache, were
    // read at 50 GB/s against 78 aligned on a 2-core AMD EPYC).
    thread_local AlignedFloats split;
    split.resize(static_cast<std::size_t>(n * (ws[0].cols / 32 * 32)));
    // The lambda also runs on the pool's threads, each with a `split` of its own.
    const float* laid_out = split.data();
    cpu::lay_out_bf16_activations_avx512(x, n, ws[0].cols, split.data());
    cpu::for_each_row_slice(ws, [&](std::size_t i, std::int64_t r0, std::int64_t r1) {
      cpu::gemv_bf16_avx512(x, laid_out, n, ws[i], r0, r1, ys[i]);
    });
    return;
  }
  cpu::for_each_row_slice(ws, [&](std::size_t i, std::int64_t r0, std::int64_t r1) {
    gemv(x, n, ws[i], r0, r1, ys[i]);
  });
}
// Blocked path for f32: OpenBLAS (its single-threaded build) on panels of rows, one per task.
// The panels have a fixed size, not one per thread, so that the result does not depend on the
// thread count (OpenBLAS treats a panel's last columns differently from the others).
void matmul_blocked_f32(const float* x, std::int64_t n, const WeightView& w, float* y) {
  constexpr std::int64_t kPanelRows = 256;
  const auto* weights = static_cast<const float*>(w.data);
  parallel_for((w.rows + kPanelRows - 1) / kPanelRows, [&](std::int64_t p) {
    const std::int64_t r0 = p * kPanelRows, rows = std::min(kPanelRows, w.rows - r0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                static_cast<int>(rows), static_cast<int>(w.cols), 1.0f, x, static_cast<int>(w.cols),
                weights + r0 * w.cols, static_cast<int>(w.cols), 0.0f, y + r0,
                static_cast<int>(w.rows));
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
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                static_cast<int>(rows), static_cast<int>(w.cols), 1.0f, x, static_cast<int>(w.cols),
                panel.data(), static_cast<int>(w.cols), 0.0f, y + r0, static_cast<int>(w.rows));
  });
}

// Products that can share one pass: same dtype, same input width, and for int8 the same
// outlier threshold (their activations quantize the same way).
bool fusable(std::span<const WeightView> ws) {
  for (const WeightView& w : ws) {
    if (w.dtype != ws[0].dtype || w.cols != ws[0].cols) return false;
    if (w.dtype == DType::kI8 && !(w.outlier_threshold == ws[0].outlier_threshold)) return false;
  }
  return true;
}

void check_products(std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys) {
  SEPAL_CHECK(ws.size() == ys.size(), "matmul_many needs one output per matrix");
  SEPAL_CHECK(n >= 0);
  for (const WeightView& w : ws) {
    SEPAL_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16 || w.dtype == DType::kI8,
                "matmul weights must be f32, bf16 or int8");
    SEPAL_CHECK(w.rows >= 0 && w.cols >= 0);
    SEPAL_CHECK(w.dtype != DType::kI8 || w.scales != nullptr, "int8 weights need their scales");
    SEPAL_CHECK(w.dtype != DType::kI8 || w.cols <= kMaxInt8Cols, "int8 rows of ", w.cols,
                " values would overflow the kernels' int32 sums (at most ", kMaxInt8Cols, ")");
  }
}

}  // namespace

void matmul_many(const float* x, std::int64_t n, std::span<const WeightView> ws,
                 std::span<float* const> ys, CpuIsa isa) {
  check_products(n, ws, ys);
  if (ws.empty() || n == 0) return;
  if (ws.size() > 1 && !fusable(ws)) {
    for (std::size_t i = 0; i < ws.size(); ++i)
      matmul_many(x, n, ws.subspan(i, 1), ys.subspan(i, 1), isa);
    return;
  }
  if (ws[0].cols == 0) {
    for (std::size_t i = 0; i < ws.size(); ++i) std::fill(ys[i], ys[i] + n * ws[i].rows, 0.0f);
    return;
  }
  if (ws[0].dtype == DType::kI8) {
    cpu::matmul_i8(x, n, ws, ys, isa);
  } else if (n <= kStreamingMaxTokens) {
    matmul_streaming(x, n, ws, ys, isa);
  } else if (ws[0].dtype == DType::kBF16 && isa >= CpuIsa::kAmx && cpu_supports(CpuIsa::kAmx)) {
    cpu::gemm_bf16_amx(x, n, ws, ys);
  } else if (isa >= CpuIsa::kAvx512) {
    cpu::gemm_avx512(x, n, ws, ys);
  } else {
    for (std::size_t i = 0; i < ws.size(); ++i) {
      if (ws[i].rows == 0) continue;
      if (ws[i].dtype == DType::kF32) {
        matmul_blocked_f32(x, n, ws[i], ys[i]);
      } else {
        matmul_blocked_bf16(x, n, ws[i], ys[i]);
      }
    }
  }
}

void matmul_many(const float* x, std::int64_t n, std::span<const WeightView> ws,
                 std::span<float* const> ys) {
  matmul_many(x, n, ws, ys, active_cpu_isa());
}

void matmul_many_alone(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys,
                       CpuIsa isa) {
  if (n <= kStreamingMaxTokens || ws.empty()) return matmul_many(x, n, ws, ys, isa);
  if (ws.size() > 1 && !fusable(ws)) {
    for (std::size_t i = 0; i < ws.size(); ++i) matmul_many_alone(x, n, ws.subspan(i, 1), ys.subspan(i, 1), isa);
    return;
  }
  check_products(n, ws, ys);
  if (ws[0].cols == 0) return matmul_many(x, n, ws, ys, isa);
  if (ws[0].dtype == DType::kI8) return cpu::matmul_i8_alone(x, n, ws, ys, isa);
  const cpu::GemvFn gemv = gemv_for(isa);
  const auto row_bytes = static_cast<std::int64_t>(dtype_size(ws[0].dtype)) * ws[0].cols;
  cpu::for_each_row_slice(ws, [&](std::size_t i, std::int64_t r0, std::int64_t r1) {
    cpu::for_each_tile_and_group(r0, r1, row_bytes, n, [&](std::int64_t t0, std::int64_t count, std::int64_t a, std::int64_t b) {
      gemv(x + t0 * ws[i].cols, count, ws[i], a, b, ys[i] + t0 * ws[i].rows);
    });
  });
}

void matmul_many_alone(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys) {
  matmul_many_alone(x, n, ws, ys, active_cpu_isa());
}

void matmul(const float* x, std::int64_t n, const WeightView& w, float* y, CpuIsa isa) {
  matmul_many(x, n, std::span<const WeightView>(&w, 1), std::span<float* const>(&y, 1), isa);
}

void matmul(const float* x, std::int64_t n, const WeightView& w, float* y) {
  matmul(x, n, w, y, active_cpu_isa());
}

}  // namespace sepal

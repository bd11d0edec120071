// The LLM.int8() product on the CPU: finds the outlier input columns, quantizes each token's
// other activations, and runs the int8 kernel of the CPU level over rows split between threads.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemv_i8.h"
#include "kernels/cpu/i8_activations.h"
#include "kernels/cpu/matmul_i8.h"
#include "kernels/cpu/row_slices.h"
#include "kernels/error.h"
#include "kernels/parallel.h"
#include "kernels/quantize.h"

namespace sepal::cpu {
namespace {

GemvI8Fn gemv_i8_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAmx:
    case CpuIsa::kAvx512Vnni:
      return gemv_i8_avx512vnni;
    case CpuIsa::kAvx512:
    case CpuIsa::kAvx2:
      return gemv_i8_avx2;
    case CpuIsa::kGeneric:
      break;
  }
  return gemv_i8_generic;
}

// Activations of all n tokens, quantized, with their outlier columns split off. Reused between
// calls on the same thread.
struct QuantizedActivations {
  std::int64_t ldq = 0;
  std::vector<std::int8_t, CacheLineAllocator<std::int8_t>> q;  // rows of ldq bytes, each on a cache line
  std::vector<float> scale;
  std::vector<std::int32_t> qsum;
  std::vector<std::int32_t> outlier_cols;
  std::vector<float> outlier_x;
  std::vector<std::uint8_t> is_outlier;

  // Tokens from t0 on; without their outlier part when `with_outliers` is false.
  I8Activations tokens(std::int64_t t0, bool with_outliers = true) const {
    const auto outliers = static_cast<std::int64_t>(outlier_cols.size());
    return I8Activations{q.data() + t0 * ldq,
                         ldq,
                         scale.data() + t0,
                         qsum.data() + t0,
                         outlier_cols.data(),
                         with_outliers ? outliers : 0,
                         outlier_x.data() + t0 * outliers};
  }
};

// A call of up to kStreamingMaxTokens tokens (decode, a token tree's rows) gives each token the
// bits it gets alone: a token's own outlier columns are split off, its values in the other
// columns of the call's outlier set are zero (adding a zero product leaves a sum's bits as they
// are). Longer calls split off the columns where any token has an outlier, as LLM.int8() does.
const QuantizedActivations& quantize_activations(const float* x, std::int64_t n, std::int64_t cols,
                                                 float threshold, CpuIsa isa) {
  thread_local QuantizedActivations a;
  thread_local std::vector<std::uint8_t> token_outliers;  // per token, for calls taken token by token
  const bool per_token = n > 1 && n <= kStreamingMaxTokens;
  const bool wide = isa >= CpuIsa::kAvx512;
  auto mark = [&](const float* rows, std::int64_t count, std::uint8_t* is_outlier) {
    if (wide) return mark_outlier_columns_avx512(rows, count, cols, threshold, is_outlier);
    bool finite = true;
    for (std::int64_t i = 0; i < count * cols; ++i) {
      finite = finite && std::isfinite(rows[i]);
      if (std::fabs(rows[i]) >= threshold) is_outlier[i % cols] = 1;
    }
    return finite;
  };
  a.is_outlier.assign(static_cast<std::size_t>(cols), 0);
  bool finite = true;
  if (per_token) {
    token_outliers.assign(static_cast<std::size_t>(n * cols), 0);
    for (std::int64_t t = 0; t < n; ++t) {
      std::uint8_t* own = token_outliers.data() + t * cols;
      finite = mark(x + t * cols, 1, own) && finite;
      for (std::int64_t k = 0; k < cols; ++k) a.is_outlier[static_cast<std::size_t>(k)] |= own[k];
    }
  } else {
    finite = mark(x, n, a.is_outlier.data());
  }
  if (!finite) fail("int8 matmul: the activations hold NaN or infinity");
  a.outlier_cols.clear();
  for (std::int64_t k = 0; k < cols; ++k) {
    if (a.is_outlier[static_cast<std::size_t>(k)])
      a.outlier_cols.push_back(static_cast<std::int32_t>(k));
  }
  const auto outliers = static_cast<std::int64_t>(a.outlier_cols.size());
  a.ldq = (cols + kI8RowAlign - 1) / kI8RowAlign * kI8RowAlign;
  a.q.assign(static_cast<std::size_t>(n * a.ldq), 0);
  a.scale.resize(static_cast<std::size_t>(n));
  a.qsum.resize(static_cast<std::size_t>(n));
  a.outlier_x.resize(static_cast<std::size_t>(n * outliers));
  // The workers see their own thread-local `a`: the lambda reaches the caller's through `q`.
  QuantizedActivations& q = a;
  const std::uint8_t* per_token_outliers = token_outliers.data();
  auto quantize_token = [&](std::int64_t t) {
    const float* xt = x + t * cols;
    const std::uint8_t* is_outlier = per_token ? per_token_outliers + t * cols : q.is_outlier.data();
    for (std::int64_t j = 0; j < outliers; ++j) {
      const std::int32_t col = q.outlier_cols[static_cast<std::size_t>(j)];
      q.outlier_x[static_cast<std::size_t>(t * outliers + j)] = is_outlier[col] ? xt[col] : 0.0f;
    }
    std::int8_t* qt = q.q.data() + t * q.ldq;
    if (wide) {
      q.scale[static_cast<std::size_t>(t)] =
          quantize_inliers_avx512(xt, cols, is_outlier, qt, &q.qsum[static_cast<std::size_t>(t)]);
      return;
    }
    thread_local std::vector<float> inliers;
    inliers.assign(xt, xt + cols);
    for (std::int64_t k = 0; k < cols; ++k) {
      if (is_outlier[k]) inliers[static_cast<std::size_t>(k)] = 0.0f;
    }
    q.scale[static_cast<std::size_t>(t)] = quantize_row_i8(inliers.data(), cols, qt, isa);
    std::int32_t sum = 0;
    for (std::int64_t k = 0; k < cols; ++k) sum += qt[k];
    q.qsum[static_cast<std::size_t>(t)] = sum;
  };
  if (n > kStreamingMaxTokens) {
    parallel_for(n, quantize_token);  // prompts: tokens in parallel
  } else {
    for (std::int64_t t = 0; t < n; ++t) quantize_token(t);
  }
  return a;
}

// Prompts below VNNI: the int8 part runs in panels of rows that stay in cache while every group
// of tokens passes over them, so the weights are read from memory once however many tokens there
// are. The outlier part of a panel is one small float product, Xo[n, k] · Wo[rows, k]ᵀ, with the k
// outlier columns of the panel's rows gathered and dequantized.
void matmul_i8_blocked(const QuantizedActivations& a, std::int64_t n, const WeightView& w, float* y,
                       GemvI8Fn gemv) {
  const auto k = static_cast<std::int64_t>(a.outlier_cols.size());
  const auto* data = static_cast<const std::int8_t*>(w.data);
  const std::int64_t panel_rows =
      std::max<std::int64_t>(16, (128 << 10) / std::max<std::int64_t>(w.cols, 1) / 16 * 16);
  const std::int64_t panels = (w.rows + panel_rows - 1) / panel_rows;
  parallel_for(panels, [&](std::int64_t p) {
    const std::int64_t r0 = p * panel_rows, r1 = std::min(w.rows, r0 + panel_rows), rows = r1 - r0;
    for (std::int64_t t0 = 0; t0 < n; t0 += kStreamingMaxTokens) {
      const std::int64_t group = std::min(kStreamingMaxTokens, n - t0);
      gemv(a.tokens(t0, /*with_outliers=*/false), group, w, r0, r1, w.rows, y + t0 * w.rows);
    }
    if (k == 0) return;
    thread_local std::vector<float> wo, outlier_y;
    wo.resize(static_cast<std::size_t>(rows * k));
    outlier_y.resize(static_cast<std::size_t>(n * rows));
    for (std::int64_t r = r0; r < r1; ++r) {
      for (std::int64_t j = 0; j < k; ++j) {
        wo[static_cast<std::size_t>((r - r0) * k + j)] =
            static_cast<float>(data[r * w.cols + a.outlier_cols[j]]) * w.scales[r];
      }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                static_cast<int>(rows), static_cast<int>(k), 1.0f, a.outlier_x.data(),
                static_cast<int>(k), wo.data(), static_cast<int>(k), 0.0f, outlier_y.data(),
                static_cast<int>(rows));
    for (std::int64_t t = 0; t < n; ++t) {
      for (std::int64_t r = 0; r < rows; ++r)
        y[t * w.rows + r0 + r] += outlier_y[static_cast<std::size_t>(t * rows + r)];
    }
  });
}

}  // namespace

void matmul_i8(const float* x, std::int64_t n, std::span<const WeightView> ws,
               std::span<float* const> ys, CpuIsa isa) {
  const GemvI8Fn gemv = gemv_i8_for(isa);
  const float threshold = ws[0].outlier_threshold > 0 ? ws[0].outlier_threshold : INFINITY;
  const QuantizedActivations& a = quantize_activations(x, n, ws[0].cols, threshold, isa);
  if (n <= kStreamingMaxTokens) {
    // Decode: every thread streams one contiguous slice of rows once, at memory bandwidth.
    const I8Activations all = a.tokens(0);
    for_each_row_slice(ws, [&](std::size_t i, std::int64_t r0, std::int64_t r1) {
      gemv(all, n, ws[i], r0, r1, ws[i].rows, ys[i]);
    });
    return;
  }
  if (isa >= CpuIsa::kAmx && cpu_supports(CpuIsa::kAmx)) {  // prompts in AMX tiles (Linux enables them on request)
    gemm_i8_amx(a.tokens(0), n, ws, ys);
    return;
  }
  if (isa >= CpuIsa::kAvx512Vnni) {  // prompts in register tiles, outliers included
    gemm_i8_avx512vnni(a.tokens(0), n, ws, ys);
    return;
  }
  for (std::size_t i = 0; i < ws.size(); ++i) matmul_i8_blocked(a, n, ws[i], ys[i], gemv);
}

void matmul_i8_alone(const float* x, std::int64_t n, std::span<const WeightView> ws, std::span<float* const> ys,
                     CpuIsa isa) {
  if (n <= kStreamingMaxTokens) return matmul_i8(x, n, ws, ys, isa);
  const GemvI8Fn gemv = gemv_i8_for(isa);
  const float threshold = ws[0].outlier_threshold > 0 ? ws[0].outlier_threshold : INFINITY;
  // Each group of tokens quantized as a call of its own: its outlier columns are those of its
  // tokens only (the union over all the tokens would make every token's float part longer).
  thread_local std::vector<QuantizedActivations> groups;
  const std::int64_t count = (n + kStreamingMaxTokens - 1) / kStreamingMaxTokens;
  groups.resize(static_cast<std::size_t>(std::max<std::int64_t>(count, static_cast<std::int64_t>(groups.size()))));
  for (std::int64_t g = 0; g < count; ++g) {
    const std::int64_t t0 = g * kStreamingMaxTokens;
    groups[static_cast<std::size_t>(g)] =
        quantize_activations(x + t0 * ws[0].cols, std::min(kStreamingMaxTokens, n - t0), ws[0].cols, threshold, isa);
  }
  const std::vector<QuantizedActivations>& quantized = groups;  // the workers see their own thread_local
  for_each_row_slice(ws, [&](std::size_t i, std::int64_t r0, std::int64_t r1) {
    for_each_tile_and_group(r0, r1, ws[i].cols, n, [&](std::int64_t t0, std::int64_t rows, std::int64_t a0, std::int64_t a1) {
      const QuantizedActivations& a = quantized[static_cast<std::size_t>(t0 / kStreamingMaxTokens)];
      gemv(a.tokens(0), rows, ws[i], a0, a1, ws[i].rows, ys[i] + t0 * ws[i].rows);
    });
  });
}

}  // namespace sepal::cpu

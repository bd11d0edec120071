// CPU input gradients of the forward ops (kernels/gradients.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/aligned_vector.h"
#include "kernels/cpu/input_grad.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/cpu_isa.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/parallel.h"
#include "kernels/softmax.h"


namespace sepal {
namespace {

// A task is one column strip of kInputGradCols for a block of tokens, so the strip stays in cache
// between its tiles.
constexpr std::int64_t kTaskTokens = 32 * cpu::kInputGradTokens;
static_assert(kTaskTokens % 32 == 0, "the AMX tiles take tokens 32 at a time");

}  // namespace

void matmul_input_grad(const float* dy, std::int64_t n, const WeightView& w, float* dx) {
  SEPAL_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16 || w.dtype == DType::kI8,
              "matmul_input_grad: weights must be f32, bf16 or int8, not ", dtype_name(w.dtype));
  SEPAL_CHECK(w.dtype != DType::kI8 || w.scales != nullptr, "matmul_input_grad: int8 weights without scales");
  if (n <= 0 || w.cols <= 0) return;
  const std::int64_t strips = (w.cols + cpu::kInputGradCols - 1) / cpu::kInputGradCols;
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  // bf16 and int8 weights on AMX tiles (f32 ones are not exact in bf16).
  const bool tiles = w.dtype != DType::kF32 && active_cpu_isa() >= CpuIsa::kAmx;
  const std::int64_t blocks = (n + kTaskTokens - 1) / kTaskTokens;
  thread_local std::vector<std::uint8_t, CacheLineAllocator<std::uint8_t>> split;
  if (tiles) {
    split.resize(static_cast<std::size_t>(cpu::input_grad_amx_bytes(n, w.rows)));
    cpu::split_input_grads_amx(dy, n, w, split.data());
  }
  const std::uint8_t* const split_dy = split.data();  // the workers see their own thread_local
  auto task = [&](std::int64_t k) {
    const std::int64_t strip = k % strips, block = k / strips;
    const std::int64_t c0 = strip * cpu::kInputGradCols, width = std::min(cpu::kInputGradCols, w.cols - c0);
    const std::int64_t begin = block * kTaskTokens, end = std::min(n, (block + 1) * kTaskTokens);
    if (tiles) {
      cpu::input_grad_strip_amx(split_dy, n, begin, end - begin, w, c0, width, dx);
      return;
    }
    if (wide) {
      cpu::input_grad_strip_avx512(dy + begin * w.rows, end - begin, w, c0, width, dx + begin * w.cols);
      return;
    }
    for (std::int64_t t0 = begin; t0 < end; t0 += cpu::kInputGradTokens) {
      cpu::input_grad_tile(dy + t0 * w.rows, std::min(cpu::kInputGradTokens, end - t0), w, c0, width, dx + t0 * w.cols);
    }
  };
  if (n * w.rows * w.cols > (1 << 16)) {
    parallel_for(strips * blocks, task);
  } else {
    for (std::int64_t k = 0; k < strips * blocks; ++k) task(k);
  }
}

void matmul_weight_grad(const float* dy, std::int64_t n, const float* x, std::int64_t rows, std::int64_t cols, float* dw) {
  if (n <= 0 || rows <= 0 || cols <= 0) return;
  auto row = [&](std::int64_t r) {
    float* out = dw + r * cols;
    for (std::int64_t t = 0; t < n; ++t) {
      const float g = dy[t * rows + r];
      if (g == 0.0f) continue;
      const float* xt = x + t * cols;
#pragma omp simd
      for (std::int64_t c = 0; c < cols; ++c) out[c] += g * xt[c];
    }
  };
  if (n * rows * cols > (1 << 16)) {
    parallel_for(rows, row);
  } else {
    for (std::int64_t r = 0; r < rows; ++r) row(r);
  }
}

void add_column_dots(const float* a, const float* b, std::int64_t n, std::int64_t dim, float* sums) {
  parallel_for((dim + 63) / 64, [&](std::int64_t chunk) {
    for (std::int64_t i = chunk * 64; i < std::min(dim, chunk * 64 + 64); ++i) {
      double sum = 0;
      for (std::int64_t t = 0; t < n; ++t) sum += static_cast<double>(a[t * dim + i]) * b[t * dim + i];
      sums[i] += static_cast<float>(sum);
    }
  });
}

void rmsnorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                        const float* dy, float* dx) {
  SEPAL_CHECK(dim > 0);
  auto row = [&](std::int64_t t) {
    const float* in = x + t * dim;
    const float* g = dy + t * dim;
    float* out = dx + t * dim;
    const float mean_square = cpu::sum_squares(in, dim) / static_cast<float>(dim);
    const float r = 1.0f / std::sqrt(mean_square + eps);
    double dot = 0.0;  // Σ dy·weight·x
    for (std::int64_t i = 0; i < dim; ++i) dot += static_cast<double>(g[i]) * weight[i] * in[i];
    const float k = static_cast<float>(dot) * r * r * r / static_cast<float>(dim);
    for (std::int64_t i = 0; i < dim; ++i) out[i] = r * g[i] * weight[i] - k * in[i];
  };
  if (n > 8) {
    parallel_for(n, row);
  } else {
    for (std::int64_t t = 0; t < n; ++t) row(t);
  }
}

void layernorm_input_grad(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
                          const float* dy, float* dx) {
  SEPAL_CHECK(dim > 0);
  auto row = [&](std::int64_t t) {
    const float* in = x + t * dim;
    const float* g = dy + t * dim;
    float* out = dx + t * dim;
    // With x̂ = (x - mean) r: dx = r (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)), ĝ = dy · weight; as the forward,
    // the statistics in double.
    double sum = 0, sum_sq = 0;
    for (std::int64_t i = 0; i < dim; ++i) sum += in[i];
    const double mean = sum / static_cast<double>(dim);
    for (std::int64_t i = 0; i < dim; ++i) sum_sq += (in[i] - mean) * (in[i] - mean);
    const double r = 1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps);
    double g_mean = 0, gx_mean = 0;
    for (std::int64_t i = 0; i < dim; ++i) {
      const double gi = static_cast<double>(g[i]) * weight[i];
      g_mean += gi;
      gx_mean += gi * (in[i] - mean) * r;
    }
    g_mean /= static_cast<double>(dim);
    gx_mean /= static_cast<double>(dim);
    for (std::int64_t i = 0; i < dim; ++i) {
      const double gi = static_cast<double>(g[i]) * weight[i];
      out[i] = static_cast<float>(r * (gi - g_mean - (in[i] - mean) * r * gx_mean));
    }
  };
  if (n > 8) {
    parallel_for(n, row);
  } else {
    for (std::int64_t t = 0; t < n; ++t) row(t);
  }
}

void gelu_tanh_input_grad(const float* x, const float* dout, float* dx, std::int64_t count) {
  // gelu(x) = x/2 (1 + tanh(u)), u = c (x + 0.044715 x³): gelu' = (1 + t)/2 + x/2 (1 - t²) u'.
  constexpr float kC = 0.7978845608028654f, kA = 0.044715f;
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto span = [&](std::int64_t i0, std::int64_t i1) {
    if (wide) return cpu::gelu_tanh_input_grad_avx512(x + i0, dout + i0, dx + i0, i1 - i0);
    for (std::int64_t i = i0; i < i1; ++i) {
      const float v = x[i];
      const float t = std::tanh(kC * (v + kA * v * v * v));
      const float du = kC * (1.0f + 3.0f * kA * v * v);
      dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
  };
  parallel_spans(count, span);
}

void silu_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                         std::int64_t count) {
  SEPAL_CHECK(dgate != dup, "silu_mul_input_grad: dgate and dup must differ");
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto span = [&](std::int64_t i0, std::int64_t i1) {
    if (wide) return cpu::silu_mul_input_grad_avx512(gate + i0, up + i0, dout + i0, dgate + i0, dup + i0, i1 - i0);
    for (std::int64_t i = i0; i < i1; ++i) {
      const float g = gate[i], u = up[i], d = dout[i];
      const float s = 1.0f / (1.0f + std::exp(-g));
      const float silu = g * s;
      dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
      dup[i] = d * silu;
    }
  };
  parallel_spans(count, span);
}

void gelu_tanh_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                              std::int64_t count) {
  SEPAL_CHECK(dgate != dup, "gelu_tanh_mul_input_grad: dgate and dup must differ");
  constexpr float kC = 0.7978845608028654f, kA = 0.044715f;
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto span = [&](std::int64_t i0, std::int64_t i1) {
    if (wide) return cpu::gelu_tanh_mul_input_grad_avx512(gate + i0, up + i0, dout + i0, dgate + i0, dup + i0, i1 - i0);
    for (std::int64_t i = i0; i < i1; ++i) {
      const float g = gate[i], u = up[i], d = dout[i];
      const float t = std::tanh(kC * (g + kA * g * g * g));
      const float slope = 0.5f * (1.0f + t) + 0.5f * g * (1.0f - t * t) * kC * (1.0f + 3.0f * kA * g * g);
      dgate[i] = d * u * slope;
      dup[i] = d * 0.5f * g * (1.0f + t);
    }
  };
  parallel_spans(count, span);
}

void clamped_swiglu_mul_input_grad(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                   std::int64_t count, float limit) {
  SEPAL_CHECK(dgate != dup, "clamped_swiglu_mul_input_grad: dgate and dup must differ");
  SEPAL_CHECK(limit > 0.0f, "the clamped SwiGLU needs a positive limit");
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto span = [&](std::int64_t i0, std::int64_t i1) {
    if (wide) {
      return cpu::clamped_swiglu_mul_input_grad_avx512(gate + i0, up + i0, dout + i0, dgate + i0, dup + i0, i1 - i0,
                                                       limit);
    }
    for (std::int64_t i = i0; i < i1; ++i) {
      const float g = std::min(gate[i], limit), u = std::clamp(up[i], -limit, limit), d = dout[i];
      const float s = 1.0f / (1.0f + std::exp(-kClampedSwigluAlpha * g));
      const bool gate_clamped = gate[i] > limit, up_clamped = up[i] < -limit || up[i] > limit;
      dgate[i] = gate_clamped ? 0.0f : d * (u + 1.0f) * s * (1.0f + kClampedSwigluAlpha * g * (1.0f - s));
      dup[i] = up_clamped ? 0.0f : d * g * s;
    }
  };
  parallel_spans(count, span);
}

void gate_mul_input_grad(GateActivation activation, const float* gate, const float* up, const float* dout,
                         float* dgate, float* dup, std::int64_t count, float limit) {
  if (activation == GateActivation::kGeluTanh) return gelu_tanh_mul_input_grad(gate, up, dout, dgate, dup, count);
  if (activation == GateActivation::kClampedSwiglu) {
    return clamped_swiglu_mul_input_grad(gate, up, dout, dgate, dup, count, limit);
  }
  silu_mul_input_grad(gate, up, dout, dgate, dup, count);
}

void attention_causal_input_grad(const float* q, const float* keys, const float* values, std::int64_t n,
                                 const AttentionDims& dims, const float* dout, float* dq, float* dkeys,
                                 float* dvalues, const float* alibi, std::int64_t window) {
  SEPAL_CHECK(dims.kv_heads > 0 && dims.heads % dims.kv_heads == 0);
  if (n <= 0) return;
  const std::int64_t group = dims.heads / dims.kv_heads;
  const std::int64_t hd = dims.head_dim;
  const float scale = dims.score_scale(), softcap = dims.softcap;
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto kv_head = [&](std::int64_t g) {
    thread_local std::vector<float> probs, dprobs, capped;
    probs.resize(static_cast<std::size_t>(n) + 1);  // and a sink's (GPT-OSS)
    dprobs.resize(static_cast<std::size_t>(n));
    capped.resize(softcap > 0.0f ? static_cast<std::size_t>(n) : 0);
    const float* k = keys + g * n * hd;
    const float* v = values + g * n * hd;
    float* dk = dkeys + g * n * hd;
    float* dv = dvalues + g * n * hd;
    std::fill(dk, dk + n * hd, 0.0f);
    std::fill(dv, dv + n * hd, 0.0f);
    for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
      const float slope = alibi ? alibi[h] : 0.0f;
      for (std::int64_t i = 0; i < n; ++i) {
        // Keys [lowest, i]: the causal mask and, with a window, its lower edge.
        const std::int64_t lowest = window > 0 ? std::max<std::int64_t>(i - window + 1, 0) : 0;
        const std::int64_t visible = i + 1 - lowest;
        const float* qi = q + (i * dims.heads + h) * hd;
        const float* doi = dout + (i * dims.heads + h) * hd;
        const float* ki = k + lowest * hd;
        const float* vi = v + lowest * hd;
        // The forward's probabilities, computed as attention_causal computes them.
        if (!(wide && cpu::dot_rows_avx512(qi, ki, visible, hd, scale, probs.data())))
          cpu::dot_rows(qi, ki, visible, hd, scale, probs.data());
        // Gemma 2: capped keeps tanh(s / softcap) for the gradient.
        if (softcap > 0.0f) sepal::softcap(probs.data(), visible, softcap, capped.data());
        if (slope != 0.0f) {
          for (std::int64_t j = 0; j < visible; ++j) probs[j] += slope * static_cast<float>(lowest + j);
        }
        // A sink joins the softmax and weights no value: its score's gradient is not needed, and
        // the others' are those of a softmax whose sink column has no output gradient.
        if (dims.sinks) probs[static_cast<std::size_t>(visible)] = dims.sinks[h];
        softmax(probs.data(), visible + (dims.sinks ? 1 : 0));
        cpu::dot_rows(doi, vi, visible, hd, 1.0f, dprobs.data());
        double mean = 0.0;  // Σ p·dp, the softmax's centre
        for (std::int64_t j = 0; j < visible; ++j) mean += static_cast<double>(probs[j]) * dprobs[j];
        const float centre = static_cast<float>(mean);
        // dprobs becomes the scaled score gradient (ALiBi's bias is a constant: no gradient).
        for (std::int64_t j = 0; j < visible; ++j) dprobs[j] = probs[j] * (dprobs[j] - centre) * scale;
        if (softcap > 0.0f) {  // through softcap · tanh(s / softcap): times 1 - tanh²
          for (std::int64_t j = 0; j < visible; ++j) dprobs[j] *= 1.0f - capped[j] * capped[j];
        }
        float* dqi = dq + (i * dims.heads + h) * hd;
        std::fill(dqi, dqi + hd, 0.0f);
        cpu::add_weighted_rows(dprobs.data(), ki, visible, hd, dqi);
        for (std::int64_t j = 0; j < visible; ++j) {
          const float ds = dprobs[j], p = probs[j];
          float* dkj = dk + (lowest + j) * hd;
          float* dvj = dv + (lowest + j) * hd;
#pragma omp simd
          for (std::int64_t d = 0; d < hd; ++d) {
            dkj[d] += ds * qi[d];
            dvj[d] += p * doi[d];
          }
        }
      }
    }
  };
  if (dims.heads * n * n * hd > 32768) {
    parallel_for(dims.kv_heads, kv_head);
  } else {
    for (std::int64_t g = 0; g < dims.kv_heads; ++g) kv_head(g);
  }
}

}  // namespace sepal

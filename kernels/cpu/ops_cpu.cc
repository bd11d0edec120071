// CPU implementations of the element-wise and normalisation ops, attention and RoPE.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/cpu_isa.h"
#include "kernels/error.h"
#include "kernels/gradients.h"
#include "kernels/parallel.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/softmax.h"

namespace sepal {

void rmsnorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps,
             float* y) {
  SEPAL_CHECK(dim > 0);
  auto row = [&](std::int64_t t) {
    const float* in = x + t * dim;
    const float mean_square = cpu::sum_squares(in, dim) / static_cast<float>(dim);
    const float scale = 1.0f / std::sqrt(mean_square + eps);
    cpu::scale_mul(in, scale, weight, y + t * dim, dim);
  };
  if (n > 8) {
    parallel_for(n, row);
  } else {
    for (std::int64_t t = 0; t < n; ++t) row(t);
  }
}

void layernorm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, const float* bias, float eps,
               float* y) {
  SEPAL_CHECK(dim > 0);
  auto row = [&](std::int64_t t) {
    const float* in = x + t * dim;
    double sum = 0, sum_sq = 0;
    for (std::int64_t i = 0; i < dim; ++i) sum += in[i];
    const double mean = sum / static_cast<double>(dim);
    for (std::int64_t i = 0; i < dim; ++i) sum_sq += (in[i] - mean) * (in[i] - mean);
    const double inv = 1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps);
    float* out = y + t * dim;
    for (std::int64_t i = 0; i < dim; ++i) {
      out[i] = static_cast<float>((in[i] - mean) * inv) * weight[i] + (bias ? bias[i] : 0.0f);
    }
  };
  if (n > 8) {
    parallel_for(n, row);
  } else {
    for (std::int64_t t = 0; t < n; ++t) row(t);
  }
}

std::vector<float> alibi_slopes(std::int64_t heads) {
  SEPAL_CHECK(heads > 0);
  std::int64_t power = 1;
  while (power * 2 <= heads) power *= 2;
  auto slopes_of = [](std::int64_t count, std::int64_t from, std::int64_t step, std::int64_t n) {
    const double base = std::pow(2.0, -8.0 / static_cast<double>(n));
    std::vector<float> out;
    for (std::int64_t i = from; out.size() < static_cast<std::size_t>(count); i += step) {
      out.push_back(static_cast<float>(std::pow(base, static_cast<double>(i))));
    }
    return out;
  };
  std::vector<float> slopes = slopes_of(power, 1, 1, power);
  if (power < heads) {
    const std::vector<float> extra = slopes_of(std::min(power, heads - power), 1, 2, 2 * power);
    slopes.insert(slopes.end(), extra.begin(), extra.end());
  }
  return slopes;
}

std::vector<double> rope_inverse_frequencies(std::int64_t head_dim, double theta,
                                             const RopeScaling& scaling) {
  SEPAL_CHECK(head_dim > 0 && head_dim % 2 == 0, "head_dim must be even, got ", head_dim);
  std::vector<double> inv_freq(static_cast<std::size_t>(head_dim / 2));
  for (std::size_t i = 0; i < inv_freq.size(); ++i) {
    inv_freq[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  }
  if (scaling.kind == RopeScaling::Kind::kLinear) {
    SEPAL_CHECK(scaling.factor > 0.0 && std::isfinite(scaling.factor), "a linear RoPE factor must be positive, got ", scaling.factor);
    for (double& f : inv_freq) f /= scaling.factor;
  }
  if (scaling.kind == RopeScaling::Kind::kLlama3) {
    const double old_len = scaling.original_max_position_embeddings;
    const double low_freq_wavelen = old_len / scaling.low_freq_factor;
    const double high_freq_wavelen = old_len / scaling.high_freq_factor;
    for (double& f : inv_freq) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen < high_freq_wavelen) continue;
      if (wavelen > low_freq_wavelen) {
        f /= scaling.factor;
      } else {
        const double smooth = (old_len / wavelen - scaling.low_freq_factor) /
                              (scaling.high_freq_factor - scaling.low_freq_factor);
        f = (1.0 - smooth) * f / scaling.factor + smooth * f;
      }
    }
  }
  if (scaling.kind == RopeScaling::Kind::kYarn) {
    SEPAL_CHECK(scaling.factor > 0.0 && std::isfinite(scaling.factor), "a YaRN factor must be positive, got ", scaling.factor);
    // The dimension (of head_dim) whose wavelength turns `turns` times within the original context.
    const auto dimension = [&](double turns) {
      return static_cast<double>(head_dim) * std::log(scaling.original_max_position_embeddings / (turns * 2.0 * std::numbers::pi)) /
             (2.0 * std::log(theta));
    };
    double low = dimension(scaling.beta_fast), high = dimension(scaling.beta_slow);
    if (scaling.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(head_dim - 1));
    if (low == high) high += 0.001;
    for (std::size_t i = 0; i < inv_freq.size(); ++i) {
      // 1 keeps the frequency (fast dimensions), 0 divides it by the factor (slow ones).
      const double keep = 1.0 - std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      inv_freq[i] = inv_freq[i] / scaling.factor * (1.0 - keep) + inv_freq[i] * keep;
    }
  }
  if (scaling.kind == RopeScaling::Kind::kFactors) {
    SEPAL_CHECK(scaling.freq_factors.size() == inv_freq.size(), "RoPE needs ", inv_freq.size(),
                " frequency factors (head_dim / 2), got ", scaling.freq_factors.size());
    for (std::size_t i = 0; i < inv_freq.size(); ++i) {
      SEPAL_CHECK(scaling.freq_factors[i] > 0.0 && std::isfinite(scaling.freq_factors[i]),
                  "RoPE frequency factors must be positive, got ", scaling.freq_factors[i]);
      inv_freq[i] /= scaling.freq_factors[i];
    }
  }
  return inv_freq;
}

namespace {

// Rotates each head's pairs (i, i + half), or (`adjacent`) (2i, 2i + 1), by the angle of its
// position, or by its opposite (`inverse`: the transpose, which is the rotation's input gradient).
// One set of tables for both, so the gradient rotates by exactly the rounded angles the forward used.
void rope_apply(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                const std::int64_t* positions, const double* inv_freq, double magnitude, bool inverse, bool adjacent) {
  SEPAL_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, "RoPE rotates an even number of a head's ",
              head_dim, " dimensions, not ", rotary_dim);
  const std::int64_t half = rotary_dim / 2;
  std::vector<float> cos_table(static_cast<std::size_t>(half));
  std::vector<float> sin_table(static_cast<std::size_t>(half));
  for (std::int64_t t = 0; t < n; ++t) {
    for (std::int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(positions[t]) * inv_freq[i];
      cos_table[i] = static_cast<float>(std::cos(angle) * magnitude);
      sin_table[i] = static_cast<float>(std::sin(angle) * magnitude);
      if (inverse) sin_table[i] = -sin_table[i];
    }
    for (std::int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (std::int64_t i = 0; i < half; ++i) {
        float& first = adjacent ? v[2 * i] : v[i];
        float& second = adjacent ? v[2 * i + 1] : v[i + half];
        const float a = first;
        const float b = second;
        first = a * cos_table[i] - b * sin_table[i];
        second = b * cos_table[i] + a * sin_table[i];
      }
    }
  }
}

}  // namespace

void rope_rotate_half(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                      const std::int64_t* positions, const double* inv_freq, double magnitude) {
  rope_apply(x, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude, /*inverse=*/false, /*adjacent=*/false);
}

void rope_rotate_half_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                 std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                 double magnitude) {
  rope_apply(dx, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude, /*inverse=*/true, /*adjacent=*/false);
}

void rope_rotate_adjacent(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                          const std::int64_t* positions, const double* inv_freq, double magnitude) {
  rope_apply(x, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude, /*inverse=*/false, /*adjacent=*/true);
}

void rope_rotate_adjacent_input_grad(float* dx, std::int64_t n, std::int64_t heads, std::int64_t head_dim,
                                     std::int64_t rotary_dim, const std::int64_t* positions, const double* inv_freq,
                                     double magnitude) {
  rope_apply(dx, n, heads, head_dim, rotary_dim, positions, inv_freq, magnitude, /*inverse=*/true, /*adjacent=*/true);
}

namespace {

// One query row of attention: scores against `prefix` contiguous key rows and then `tail` more
// (gathered elsewhere), softmax, and the weighted sum of the matching value rows into o. With a
// tail, prefix is a multiple of 16, so the scores are grouped (and rounded) exactly as one call
// over all prefix + tail rows would group them: a row's result does not depend on where its
// keys were stored.
// One query row against `prefix` keys in place, the first at position `first`, and `tail` more
// gathered after them (the next positions). Keys before position `lowest` are outside the
// sliding window and skipped, so the rows computed start at `lowest` wherever the cache's
// arrays begin. T: the cache's element type (float, or std::uint16_t for bf16).
template <typename T>
void attend(const float* qv, const T* k, const T* v, std::int64_t prefix, const T* tail_k, const T* tail_v,
            std::int64_t tail, std::int64_t hd, float scale, float softcap, bool wide, float slope, std::int64_t first,
            std::int64_t lowest, const float* sink, float* o) {
  thread_local std::vector<float> scores;
  const std::int64_t skip_prefix = std::clamp<std::int64_t>(lowest - first, 0, prefix);
  const std::int64_t skip_tail = std::clamp<std::int64_t>(lowest - first - prefix, 0, tail);
  k += skip_prefix * hd;
  v += skip_prefix * hd;
  prefix -= skip_prefix;
  if (tail > 0) {
    tail_k += skip_tail * hd;
    tail_v += skip_tail * hd;
    tail -= skip_tail;
  }
  const std::int64_t first_position = first + skip_prefix + skip_tail;
  // A sink (GPT-OSS) is one more score after the keys', in the softmax and weighting no value.
  scores.resize(static_cast<std::size_t>(prefix + tail + (sink ? 1 : 0)));
  auto dots = [&](const T* rows, std::int64_t count, float* out) {
    if (!(wide && cpu::dot_rows_avx512(qv, rows, count, hd, scale, out))) cpu::dot_rows(qv, rows, count, hd, scale, out);
  };
  auto weighted = [&](const float* weights, const T* rows, std::int64_t count) {
    if (!(wide && cpu::add_weighted_rows_avx512(weights, rows, count, hd, o))) cpu::add_weighted_rows(weights, rows, count, hd, o);
  };
  dots(k, prefix, scores.data());
  if (tail > 0) dots(tail_k, tail, scores.data() + prefix);
  if (softcap > 0.0f) sepal::softcap(scores.data(), prefix + tail, softcap);  // Gemma 2
  if (slope != 0.0f) {  // ALiBi: the key at position p scores slope * p more
    for (std::int64_t p = 0; p < prefix + tail; ++p) {
      scores[static_cast<std::size_t>(p)] += slope * static_cast<float>(first_position + p);
    }
  }
  if (sink) scores[static_cast<std::size_t>(prefix + tail)] = *sink;
  softmax(scores.data(), prefix + tail + (sink ? 1 : 0));
  std::fill(o, o + hd, 0.0f);
  weighted(scores.data(), v, prefix);
  if (tail > 0) weighted(scores.data() + prefix, tail_v, tail);
}

}  // namespace

void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
              std::int64_t capacity, float* cache) {
  for (std::int64_t t = 0; t < n; ++t) {
    for (std::int64_t h = 0; h < kv_heads; ++h) {
      const float* src = rows + (t * kv_heads + h) * head_dim;
      std::copy(src, src + head_dim, cache + (h * capacity + start + t) * head_dim);
    }
  }
}

void store_kv(const float* rows, std::int64_t n, std::int64_t start, std::int64_t kv_heads, std::int64_t head_dim,
              std::int64_t capacity, KvArray cache) {
  if (cache.dtype == DType::kF32) {
    return store_kv(rows, n, start, kv_heads, head_dim, capacity, static_cast<float*>(cache.data));
  }
  SEPAL_CHECK(cache.dtype == DType::kBF16, "a key/value cache of f32 or bf16");
  auto* out = static_cast<std::uint16_t*>(cache.data);
  for (std::int64_t t = 0; t < n; ++t) {
    for (std::int64_t h = 0; h < kv_heads; ++h) {
      const float* src = rows + (t * kv_heads + h) * head_dim;
      std::uint16_t* dst = out + (h * capacity + start + t) * head_dim;
      for (std::int64_t i = 0; i < head_dim; ++i) dst[i] = f32_to_bf16(src[i]);
    }
  }
}

namespace {

template <typename T>
void causal(const float* q, std::int64_t n, std::int64_t start, const T* keys, const T* values, std::int64_t capacity,
            const AttentionDims& dims, float* out, const float* alibi, std::int64_t window, std::int64_t held_from) {
  SEPAL_CHECK(dims.kv_heads > 0 && dims.heads % dims.kv_heads == 0);
  SEPAL_CHECK(held_from >= 0 && held_from <= start && start + n - held_from <= capacity,
              "attention past the cache capacity");
  SEPAL_CHECK(held_from == 0 || (window > 0 && start - window + 1 >= held_from),
              "attention reaches positions before ", held_from, ", which the cache no longer holds");
  const std::int64_t group = dims.heads / dims.kv_heads;
  const std::int64_t hd = dims.head_dim;
  const float scale = dims.score_scale();
  const std::int64_t tasks = n * dims.heads;
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto head = [&](std::int64_t task) {
    const std::int64_t t = task / dims.heads;
    const std::int64_t kv = (task % dims.heads) / group;
    const std::int64_t lowest = window > 0 ? std::max<std::int64_t>(start + t - window + 1, 0) : 0;
    attend<T>(q + task * hd, keys + kv * capacity * hd, values + kv * capacity * hd, start + t + 1 - held_from, nullptr,
              nullptr, 0, hd, scale, dims.softcap, wide, alibi ? alibi[task % dims.heads] : 0.0f, held_from, lowest,
              dims.sinks ? dims.sinks + task % dims.heads : nullptr, out + task * hd);
  };
  if (tasks * (start + n) * hd > 32768) {
    parallel_for(tasks, head);
  } else {
    for (std::int64_t task = 0; task < tasks; ++task) head(task);
  }
}

template <typename T>
void tree(const float* q, std::int64_t first, std::int64_t n, std::int64_t start, const std::int32_t* parents,
          const T* keys, const T* values, std::int64_t capacity, const AttentionDims& dims, float* out, const float* alibi,
          std::int64_t window, std::int64_t held_from) {
  SEPAL_CHECK(dims.kv_heads > 0 && dims.heads % dims.kv_heads == 0);
  SEPAL_CHECK(first >= 0 && n >= 0 && held_from >= 0 && held_from <= start && start + first + n - held_from <= capacity,
              "tree attention past the cache capacity");
  SEPAL_CHECK(held_from == 0 || (window > 0 && start - window + 1 >= held_from),
              "tree attention reaches positions before ", held_from, ", which the cache no longer holds");
  for (std::int64_t i = 0; i < first + n; ++i) {
    SEPAL_CHECK(parents[i] >= -1 && parents[i] < i, "tree node ", i, " has parent ", parents[i], ", not an earlier node");
  }
  const std::int64_t group = dims.heads / dims.kv_heads;
  const std::int64_t hd = dims.head_dim;
  const float scale = dims.score_scale();
  // Positions [held_from, prefix) are read in place; the rest is gathered.
  const std::int64_t prefix = std::max(start & ~std::int64_t{15}, held_from);
  // Each node's key positions past the prefix, in position order: the cache's [prefix, start),
  // then the node's ancestors from the root down, then the node itself (slot = position - held_from).
  std::vector<std::vector<std::int64_t>> slots(static_cast<std::size_t>(n));
  std::int64_t longest = 0;
  for (std::int64_t t = 0; t < n; ++t) {
    auto& s = slots[static_cast<std::size_t>(t)];
    for (std::int64_t node = first + t; node >= 0; node = parents[node]) s.push_back(start + node);
    for (std::int64_t p = start - 1; p >= prefix; --p) s.push_back(p);
    std::reverse(s.begin(), s.end());
    longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(s.size()));
  }
  const std::int64_t tasks = n * dims.heads;
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto head = [&](std::int64_t task) {
    thread_local std::vector<T> tail_k, tail_v;
    const std::int64_t t = task / dims.heads;
    const std::int64_t kv = (task % dims.heads) / group;
    const T* k = keys + kv * capacity * hd;
    const T* v = values + kv * capacity * hd;
    const auto& s = slots[static_cast<std::size_t>(t)];
    const auto tail = static_cast<std::int64_t>(s.size());
    tail_k.resize(static_cast<std::size_t>(longest * hd));
    tail_v.resize(static_cast<std::size_t>(longest * hd));
    for (std::int64_t r = 0; r < tail; ++r) {
      const std::int64_t slot = s[r] - held_from;
      std::copy(k + slot * hd, k + (slot + 1) * hd, tail_k.begin() + r * hd);
      std::copy(v + slot * hd, v + (slot + 1) * hd, tail_v.begin() + r * hd);
    }
    const std::int64_t position = prefix + tail - 1;  // the node's own position
    const std::int64_t lowest = window > 0 ? std::max<std::int64_t>(position - window + 1, 0) : 0;
    attend<T>(q + task * hd, k, v, prefix - held_from, tail_k.data(), tail_v.data(), tail, hd, scale, dims.softcap, wide,
              alibi ? alibi[task % dims.heads] : 0.0f, held_from, lowest, dims.sinks ? dims.sinks + task % dims.heads : nullptr,
              out + task * hd);
  };
  if (tasks * (start + longest) * hd > 32768) {
    parallel_for(tasks, head);
  } else {
    for (std::int64_t task = 0; task < tasks; ++task) head(task);
  }
}

}  // namespace

void attention_causal(const float* q, std::int64_t n, std::int64_t start, const float* keys, const float* values,
                      std::int64_t capacity, const AttentionDims& dims, float* out, const float* alibi,
                      std::int64_t window, std::int64_t held_from) {
  causal(q, n, start, keys, values, capacity, dims, out, alibi, window, held_from);
}

void attention_causal(const float* q, std::int64_t n, std::int64_t start, KvArray keys, KvArray values,
                      std::int64_t capacity, const AttentionDims& dims, float* out, const float* alibi,
                      std::int64_t window, std::int64_t held_from) {
  SEPAL_CHECK(keys.dtype == values.dtype && kv_dtype_supported(keys.dtype), "a key/value cache of f32 or bf16");
  if (keys.dtype == DType::kF32) {
    return causal(q, n, start, static_cast<const float*>(keys.data), static_cast<const float*>(values.data), capacity,
                  dims, out, alibi, window, held_from);
  }
  causal(q, n, start, static_cast<const std::uint16_t*>(keys.data), static_cast<const std::uint16_t*>(values.data),
         capacity, dims, out, alibi, window, held_from);
}

void attention_tree(const float* q, std::int64_t first, std::int64_t n, std::int64_t start, const std::int32_t* parents,
                    const float* keys, const float* values, std::int64_t capacity, const AttentionDims& dims, float* out,
                    const float* alibi, std::int64_t window, std::int64_t held_from) {
  tree(q, first, n, start, parents, keys, values, capacity, dims, out, alibi, window, held_from);
}

void attention_tree(const float* q, std::int64_t first, std::int64_t n, std::int64_t start, const std::int32_t* parents,
                    KvArray keys, KvArray values, std::int64_t capacity, const AttentionDims& dims, float* out,
                    const float* alibi, std::int64_t window, std::int64_t held_from) {
  SEPAL_CHECK(keys.dtype == values.dtype && kv_dtype_supported(keys.dtype), "a key/value cache of f32 or bf16");
  if (keys.dtype == DType::kF32) {
    return tree(q, first, n, start, parents, static_cast<const float*>(keys.data),
                static_cast<const float*>(values.data), capacity, dims, out, alibi, window, held_from);
  }
  tree(q, first, n, start, parents, static_cast<const std::uint16_t*>(keys.data),
       static_cast<const std::uint16_t*>(values.data), capacity, dims, out, alibi, window, held_from);
}

void silu_mul(float* gate, const float* up, std::int64_t count) {
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto span = [&](std::int64_t i0, std::int64_t i1) {
    if (wide) {
      cpu::silu_mul_avx512(gate + i0, up + i0, i1 - i0);
      return;
    }
#pragma omp simd
    for (std::int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  };
  parallel_spans(count, span);
}

void gelu_tanh_mul(float* gate, const float* up, std::int64_t count) {
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto span = [&](std::int64_t i0, std::int64_t i1) {
    if (wide) {
      cpu::gelu_tanh_mul_avx512(gate + i0, up + i0, i1 - i0);
      return;
    }
#pragma omp simd
    for (std::int64_t i = i0; i < i1; ++i) {
      const float g = gate[i];
      const float u = 0.7978845608028654f * (g + 0.044715f * g * g * g);
      gate[i] = g / (1.0f + std::exp(-2.0f * u)) * up[i];
    }
  };
  parallel_spans(count, span);
}

void clamped_swiglu_mul(float* gate, const float* up, std::int64_t count, float limit) {
  SEPAL_CHECK(limit > 0.0f, "the clamped SwiGLU needs a positive limit");
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto span = [&](std::int64_t i0, std::int64_t i1) {
    if (wide) {
      cpu::clamped_swiglu_mul_avx512(gate + i0, up + i0, i1 - i0, limit);
      return;
    }
    for (std::int64_t i = i0; i < i1; ++i) {
      const float g = std::min(gate[i], limit), u = std::clamp(up[i], -limit, limit);
      gate[i] = g / (1.0f + std::exp(-kClampedSwigluAlpha * g)) * (u + 1.0f);
    }
  };
  parallel_spans(count, span);
}

void gate_mul(GateActivation activation, float* gate, const float* up, std::int64_t count, float limit) {
  if (activation == GateActivation::kGeluTanh) return gelu_tanh_mul(gate, up, count);
  if (activation == GateActivation::kClampedSwiglu) return clamped_swiglu_mul(gate, up, count, limit);
  silu_mul(gate, up, count);
}

void add_in_place(float* y, const float* x, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void scale_in_place(float* x, float scale, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) x[i] *= scale;
}

void scale_by_one_plus(float* rows, std::int64_t n, std::int64_t dim, const float* offsets) {
  for (std::int64_t t = 0; t < n; ++t) {
    float* row = rows + t * dim;
#pragma omp simd
    for (std::int64_t i = 0; i < dim; ++i) row[i] *= 1.0f + offsets[i];
  }
}

void add_scaled_in_place(float* y, const float* x, float scale, std::int64_t count) {
  if (scale == 1.0f) return add_in_place(y, x, count);
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) y[i] += scale * x[i];
}

void gelu_tanh(float* x, std::int64_t count) {
  // As gelu_tanh_mul: x / (1 + e^(-2u)). A tanh from libm an element, on one thread, had taken
  // more of a BLOOM int8 prompt than its matrix products.
  const bool wide = active_cpu_isa() >= CpuIsa::kAvx512;
  auto span = [&](std::int64_t i0, std::int64_t i1) {
    if (wide) {
      cpu::gelu_tanh_avx512(x + i0, i1 - i0);
      return;
    }
#pragma omp simd
    for (std::int64_t i = i0; i < i1; ++i) {
      const float v = x[i];
      const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      x[i] = v / (1.0f + std::exp(-2.0f * u));
    }
  };
  parallel_spans(count, span);
}

void softcap(float* x, std::int64_t count, float cap, float* tanh_out) {
  // libm's tanh an element had taken 2 ms of each token of a Gemma 2 model (256,000 logits).
  if (active_cpu_isa() >= CpuIsa::kAvx512) return cpu::softcap_avx512(x, count, cap, tanh_out);
  for (std::int64_t i = 0; i < count; ++i) {
    const float t = std::tanh(x[i] / cap);
    if (tanh_out) tanh_out[i] = t;
    x[i] = cap * t;
  }
}

void add_bias(float* rows, std::int64_t n, std::int64_t dim, const float* bias) {
  for (std::int64_t t = 0; t < n; ++t) add_in_place(rows + t * dim, bias, dim);
}

void softmax(float* x, std::int64_t count) {
  if (count <= 0) return;
  if (active_cpu_isa() >= CpuIsa::kAvx512) {
    cpu::softmax_avx512(x, count);
    return;
  }
  float max_value = x[0];
  for (std::int64_t i = 1; i < count; ++i) max_value = std::max(max_value, x[i]);
  double sum = 0.0;
  for (std::int64_t i = 0; i < count; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (std::int64_t i = 0; i < count; ++i) x[i] *= inv;
}

double log_sum_exp(const float* x, std::int64_t count) {
  if (count <= 0) return -INFINITY;
  if (active_cpu_isa() >= CpuIsa::kAvx512) return cpu::log_sum_exp_avx512(x, count);
  double max_value = x[0];
  for (std::int64_t i = 1; i < count; ++i)
    max_value = std::max(max_value, static_cast<double>(x[i]));
  if (std::isinf(max_value)) return max_value;
  double sum = 0.0;
  for (std::int64_t i = 0; i < count; ++i) sum += std::exp(static_cast<double>(x[i]) - max_value);
  return max_value + std::log(sum);
}

void exp_shifted(float* x, std::int64_t count, double shift, float scale) {
  if (active_cpu_isa() >= CpuIsa::kAvx512) return cpu::exp_shifted_avx512(x, count, shift, scale);
  for (std::int64_t i = 0; i < count; ++i) x[i] = static_cast<float>(std::exp(x[i] - shift)) * scale;
}

}  // namespace sepal

// Compiled with -mavx512f -mavx512dq -mfma. The exponential 16 lanes at a time, for softmax,
// log-sum-exp, SiLU, the tanh GELUs (BLOOM's, Gemma's gated one) and their input gradients,
// GPT-OSS's clamped SwiGLU and the tanh of Gemma 2's soft-capping:
// n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so r is exact), e^r from a degree-7
// polynomial (Cephes' expf coefficients), scaled by 2^n with VSCALEFPS, which gives 0 below the
// f32 range and infinity above it. Within 2 ulp of the correctly rounded exponential over the
// whole f32 range; the kernels' tests check each of them against double references.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/activation.h"
#include "kernels/cpu/lanes_avx512.h"
#include "kernels/cpu/vector_math.h"

namespace sepal::cpu {
namespace {

inline __m512 exp16(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  // Far outside the range n itself is huge or infinite; scalef still gives 0 or infinity, and
  // NaN stays NaN.
  return _mm512_scalef_ps(p, n);
}

// tanh(y): 1 - 2 / (1 + e^(2|y|)) with y's sign where |y| >= 0.625, and below that, where the
// subtraction would cancel y's leading digits, y + y³ P(y²) with Cephes' tanhf coefficients.
// Within 3e-7 of tanh, relatively (kernels_test checks it against double); ±1 for ±infinity,
// NaN for NaN.
inline __m512 tanh16(__m512 y) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 magnitude = _mm512_abs_ps(y);
  const __m512 far = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f),
                                                      _mm512_add_ps(one, exp16(_mm512_add_ps(magnitude, magnitude)))));
  const __m512 sign = _mm512_and_ps(y, _mm512_set1_ps(-0.0f));
  const __m512 z = _mm512_mul_ps(y, y);
  __m512 p = _mm512_set1_ps(-5.70498872745e-3f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.06390887954e-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531e-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036e-1f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422e-1f));
  const __m512 near = _mm512_fmadd_ps(_mm512_mul_ps(p, z), y, y);
  const __mmask16 is_near = _mm512_cmp_ps_mask(magnitude, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(is_near, _mm512_or_ps(far, sign), near);
}

// x/2 (1 + tanh(u)) = x / (1 + e^(-2u)), u = c (x + 0.044715 x³).
inline __m512 gelu_tanh16(__m512 x) {
  const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 minus_two_u =
      _mm512_mul_ps(_mm512_set1_ps(-2.0f * 0.7978845608028654f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), cube, x));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(minus_two_u)));
}

// For the input gradients, with s = 1 / (1 + e^(-2u)) = (1 + tanh u) / 2 and 1 - tanh² u =
// 4 s (1 - s): gelu'(x) = s + 2 x s (1 - s) u', u' = c (1 + 3 · 0.044715 x²).
struct GeluTanhParts {
  __m512 value;  // gelu(x) / x = s
  __m512 slope;  // gelu'(x)
};

inline GeluTanhParts gelu_tanh_parts16(__m512 x) {
  const __m512 c = _mm512_set1_ps(0.7978845608028654f), a = _mm512_set1_ps(0.044715f), one = _mm512_set1_ps(1.0f);
  const __m512 x2 = _mm512_mul_ps(x, x);
  const __m512 u = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(a, x2), x, x));
  const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u))));
  const __m512 du = _mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_set1_ps(3.0f * 0.044715f), x2, one));
  const __m512 two_s_rest = _mm512_mul_ps(_mm512_add_ps(s, s), _mm512_sub_ps(one, s));
  return {s, _mm512_fmadd_ps(_mm512_mul_ps(x, two_s_rest), du, s)};
}

}  // namespace

void softmax_avx512(float* x, std::int64_t count) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  for (std::int64_t i = 0; i < count; i += 16)
    top = _mm512_max_ps(top, _mm512_mask_loadu_ps(top, first_lanes(count - i), x + i));
  const __m512 max_value = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  __m512d sum_lo = _mm512_setzero_pd(),
          sum_hi = _mm512_setzero_pd();  // in double, as the portable path
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    const __m512 e =
        _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), max_value)));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    sum_hi = _mm512_add_pd(
        sum_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
  }
  const __m512 inv =
      _mm512_set1_ps(static_cast<float>(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi))));
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

double log_sum_exp_avx512(const float* x, std::int64_t count) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  // A NaN need not survive the maximum (VMAXPS returns its second operand then): the sum carries it.
  for (std::int64_t i = 0; i < count; i += 16)
    top = _mm512_max_ps(top, _mm512_mask_loadu_ps(top, first_lanes(count - i), x + i));
  float most = -INFINITY;
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, top);
  for (const float v : lanes) most = std::isnan(v) || std::isnan(most) ? NAN : std::max(most, v);
  if (std::isinf(most) || std::isnan(most)) return most;
  const __m512 m = _mm512_set1_ps(most), floor = _mm512_set1_ps(-150.0f);  // e^-150 is 0 in f32
  __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 k = first_lanes(count - i);
    const __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_max_ps(floor, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m))));
    sum_lo = _mm512_add_pd(sum_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    sum_hi = _mm512_add_pd(sum_hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
  }
  return static_cast<double>(most) + std::log(_mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi)));
}

void exp_shifted_avx512(float* x, std::int64_t count, double shift, float scale) {
  // x - shift in f32 as (x - hi) - lo: hi + lo is the shift to about 2^-48 of it.
  const auto hi = static_cast<float>(shift);
  const auto lo = static_cast<float>(shift - static_cast<double>(hi));
  const __m512 h = _mm512_set1_ps(hi), l = _mm512_set1_ps(lo), s = _mm512_set1_ps(scale),
               floor = _mm512_set1_ps(-150.0f);
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 k = first_lanes(count - i);
    const __m512 d = _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), h), l);
    _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(exp16(_mm512_max_ps(floor, d)), s));
  }
}

void silu_mul_avx512(float* gate, const float* up, std::int64_t count) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 silu =
        _mm512_div_ps(g, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

void clamped_swiglu_mul_avx512(float* gate, const float* up, std::int64_t count, float limit) {
  const __m512 one = _mm512_set1_ps(1.0f), high = _mm512_set1_ps(limit), low = _mm512_set1_ps(-limit);
  const __m512 minus_alpha = _mm512_set1_ps(-kClampedSwigluAlpha);
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    // VMINPS and VMAXPS return their second operand when either is NaN: the inputs go second,
    // so NaN stays NaN as with std::min and std::clamp.
    const __m512 g = _mm512_min_ps(high, _mm512_maskz_loadu_ps(m, gate + i));
    const __m512 u = _mm512_max_ps(low, _mm512_min_ps(high, _mm512_maskz_loadu_ps(m, up + i)));
    const __m512 glu = _mm512_div_ps(g, _mm512_add_ps(one, exp16(_mm512_mul_ps(minus_alpha, g))));
    _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(glu, _mm512_add_ps(u, one)));
  }
}

void gelu_tanh_mul_avx512(float* gate, const float* up, std::int64_t count) {
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    const __m512 gelu = gelu_tanh16(_mm512_maskz_loadu_ps(m, gate + i));
    _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(gelu, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

void gelu_tanh_input_grad_avx512(const float* x, const float* dout, float* dx, std::int64_t count) {
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    const GeluTanhParts p = gelu_tanh_parts16(_mm512_maskz_loadu_ps(m, x + i));
    _mm512_mask_storeu_ps(dx + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dout + i), p.slope));
  }
}

void gelu_tanh_mul_input_grad_avx512(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                     std::int64_t count) {
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i),
                 d = _mm512_maskz_loadu_ps(m, dout + i);
    const GeluTanhParts p = gelu_tanh_parts16(g);
    _mm512_mask_storeu_ps(dgate + i, m, _mm512_mul_ps(_mm512_mul_ps(d, u), p.slope));
    _mm512_mask_storeu_ps(dup + i, m, _mm512_mul_ps(d, _mm512_mul_ps(g, p.value)));
  }
}

void silu_mul_input_grad_avx512(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                std::int64_t count) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i),
                 d = _mm512_maskz_loadu_ps(m, dout + i);
    const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    // d u s (1 + g (1 - s)), d g s
    const __m512 slope = _mm512_mul_ps(s, _mm512_fmadd_ps(g, _mm512_sub_ps(one, s), one));
    _mm512_mask_storeu_ps(dgate + i, m, _mm512_mul_ps(_mm512_mul_ps(d, u), slope));
    _mm512_mask_storeu_ps(dup + i, m, _mm512_mul_ps(d, _mm512_mul_ps(g, s)));
  }
}

void clamped_swiglu_mul_input_grad_avx512(const float* gate, const float* up, const float* dout, float* dgate,
                                          float* dup, std::int64_t count, float limit) {
  const __m512 one = _mm512_set1_ps(1.0f), high = _mm512_set1_ps(limit), low = _mm512_set1_ps(-limit);
  const __m512 alpha = _mm512_set1_ps(kClampedSwigluAlpha), minus_alpha = _mm512_set1_ps(-kClampedSwigluAlpha);
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    const __m512 gate_in = _mm512_maskz_loadu_ps(m, gate + i), up_in = _mm512_maskz_loadu_ps(m, up + i),
                 d = _mm512_maskz_loadu_ps(m, dout + i);
    // Clamped as the forward clamps them (NaN kept); a clamped input's gradient is 0. The
    // compares are unordered: NaN counts as not clamped, so its NaN gradient stays, as in the
    // scalar loop.
    const __m512 g = _mm512_min_ps(high, gate_in);
    const __m512 u = _mm512_max_ps(low, _mm512_min_ps(high, up_in));
    const __mmask16 gate_free = _mm512_cmp_ps_mask(gate_in, high, _CMP_NGT_UQ);
    const __mmask16 up_free = _mm512_cmp_ps_mask(up_in, low, _CMP_NLT_UQ) & _mm512_cmp_ps_mask(up_in, high, _CMP_NGT_UQ);
    const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_mul_ps(minus_alpha, g))));
    // d (u + 1) s (1 + alpha g (1 - s)), d g s
    const __m512 slope = _mm512_mul_ps(s, _mm512_fmadd_ps(_mm512_mul_ps(alpha, g), _mm512_sub_ps(one, s), one));
    _mm512_mask_storeu_ps(dgate + i, m, _mm512_maskz_mov_ps(gate_free, _mm512_mul_ps(_mm512_mul_ps(d, _mm512_add_ps(u, one)), slope)));
    _mm512_mask_storeu_ps(dup + i, m, _mm512_maskz_mov_ps(up_free, _mm512_mul_ps(d, _mm512_mul_ps(g, s))));
  }
}

void gelu_tanh_avx512(float* x, std::int64_t count) {
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    _mm512_mask_storeu_ps(x + i, m, gelu_tanh16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

void softcap_avx512(float* x, std::int64_t count, float cap, float* tanh_out) {
  const __m512 c = _mm512_set1_ps(cap);
  for (std::int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = first_lanes(count - i);
    const __m512 t = tanh16(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), c));
    if (tanh_out) _mm512_mask_storeu_ps(tanh_out + i, m, t);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(c, t));
  }
}

}  // namespace sepal::cpu

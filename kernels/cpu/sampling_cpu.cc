#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "kernels/cpu/vector_math.h"
#include "kernels/error.h"
#include "kernels/sampling.h"

namespace sepal {
namespace {
std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(std::uint64_t seed) {
  for (auto& s : state_) s = splitmix64(seed);
}

std::uint64_t Rng::next() {
  const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
  const std::uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = rotl(state_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  const double u1 = 1.0 - uniform();  // (0, 1]
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::int32_t argmax(const float* logits, std::int64_t vocab) {
  SEPAL_CHECK(vocab > 0);
  // std::max_element's answer, vectorized: the first of the largest values; a NaN is never larger,
  // so a NaN first value stays the answer.
  if (std::isnan(logits[0])) return 0;
  const float largest = cpu::max_value(logits, vocab);
  std::int64_t i = 0;
  while (i + 1 < vocab && logits[i] != largest) ++i;
  return static_cast<std::int32_t>(i);
}

std::int32_t sample_token(const float* logits, std::int64_t vocab, const SamplingParams& params,
                          Rng& rng) {
  if (params.temperature <= 0.0f) return argmax(logits, vocab);
  if (params.top_k <= 0 && params.top_p >= 1.0f) {
    // Every token, by its probability, in id order: one pass and no sort, which on a vocabulary of
    // 150 000 tokens costs a fraction of a millisecond where sorting it cost 20.
    const double max_logit = cpu::max_value(logits, vocab);
    thread_local std::vector<double> probs;
    probs.resize(static_cast<std::size_t>(vocab));
    double total = 0.0;
    for (std::int64_t i = 0; i < vocab; ++i) {
      probs[static_cast<std::size_t>(i)] = std::exp((logits[i] - max_logit) / params.temperature);
      total += probs[static_cast<std::size_t>(i)];
    }
    double target = rng.uniform() * total;
    for (std::int64_t i = 0; i < vocab; ++i) {
      target -= probs[static_cast<std::size_t>(i)];
      if (target < 0.0) return static_cast<std::int32_t>(i);
    }
    // Rounding left some of the draw: the last token with any probability (never one whose
    // logit is -inf, which a grammar forbids).
    for (std::int64_t i = vocab; i-- > 0;) {
      if (probs[static_cast<std::size_t>(i)] > 0.0) return static_cast<std::int32_t>(i);
    }
    return argmax(logits, vocab);
  }
  // Top-k or top-p: candidates sorted by logit, descending; ties keep the lower id first. Tokens
  // a grammar forbids (-inf) have no probability and are left out of the sort.
  std::vector<std::int32_t> order;
  order.reserve(static_cast<std::size_t>(vocab));
  for (std::int32_t i = 0; i < vocab; ++i) {
    if (logits[i] != -std::numeric_limits<float>::infinity()) order.push_back(i);
  }
  if (order.empty()) return argmax(logits, vocab);
  auto keep = static_cast<std::int64_t>(order.size());
  if (params.top_k > 0 && params.top_k < keep) keep = params.top_k;
  auto by_logit = [&](std::int32_t a, std::int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
  order.resize(static_cast<std::size_t>(keep));

  std::vector<double> probs(order.size());
  const double max_logit = logits[order[0]];
  double total = 0.0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    probs[i] = std::exp((logits[order[i]] - max_logit) / params.temperature);
    total += probs[i];
  }
  // Nucleus: the smallest prefix whose probability reaches top_p (at least one token).
  std::size_t nucleus = probs.size();
  if (params.top_p < 1.0f) {
    double cumulative = 0.0;
    for (std::size_t i = 0; i < probs.size(); ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= params.top_p) {
        nucleus = i + 1;
        break;
      }
    }
  }
  double nucleus_total = 0.0;
  for (std::size_t i = 0; i < nucleus; ++i) nucleus_total += probs[i];
  double target = rng.uniform() * nucleus_total;
  for (std::size_t i = 0; i < nucleus; ++i) {
    target -= probs[i];
    if (target < 0.0) return order[i];
  }
  // Rounding left some of the draw: the last token that has any probability (never one whose
  // logit is -inf, which a grammar forbids).
  for (std::size_t i = nucleus; i-- > 1;) {
    if (probs[i] > 0.0) return order[i];
  }
  return order[0];
}

}  // namespace sepal

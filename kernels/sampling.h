#pragma once
// Choosing the next token from logits: greedy, temperature, top-k, top-p, reproducible by seed.

#include <cstdint>

namespace sepal {

/// How to sample. temperature 0 is greedy; top_k 0 and top_p 1 disable those filters.
struct SamplingParams {
  float temperature = 0.0f;
  std::int32_t top_k = 0;
  float top_p = 1.0f;
};

/// A small, fast generator (xoshiro256**) whose stream depends only on the seed, on every
/// platform and compiler. Not thread-safe: one per sampling stream.
class Rng {
 public:
  explicit Rng(std::uint64_t seed);
  /// Next 64 random bits.
  std::uint64_t next();
  /// Uniform double in [0, 1) with 53 random bits.
  double uniform();
  /// Standard normal (Box-Muller).
  double normal();

 private:
  std::uint64_t state_[4];
};

/// Index of the largest logit (the first one on ties).
std::int32_t argmax(const float* logits, std::int64_t vocab);

/// Samples a token id from logits (not modified) with the given parameters: one uniform draw of
/// `rng`, walked over the tokens' probabilities (in id order without top-k and top-p, likeliest
/// first with them). A token whose logit is -inf is never drawn.
std::int32_t sample_token(const float* logits, std::int64_t vocab, const SamplingParams& params,
                          Rng& rng);

}  // namespace sepal

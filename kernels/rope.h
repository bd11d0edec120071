#pragma once
// Rotary position embeddings in the rotate-half layout (Hugging Face Llama): dimension i of a
// head is paired with dimension i + head_dim/2; or in the adjacent-pairs layout (GPT-J, Cohere):
// dimension 2i with 2i + 1.

#include <cstdint>
#include <vector>

namespace sepal {

/// Frequency scaling of rotary embeddings. kLinear divides every inverse frequency by `factor`
/// (positions interpolated: Hugging Face's "linear", Gemma 3's global blocks); kLlama3 is Llama
/// 3.1's piecewise scaling (from its parameters); kFactors divides each inverse frequency by its own factor (freq_factors, head_dim/2
/// of them: what GGUF files store as rope_freqs.weight, llama.cpp's form of the same scaling, and
/// LongRoPE's short factors); kYarn is YaRN (Peng et al.; Hugging Face's "yarn": each inverse
/// frequency blended between itself and itself over `factor` by a ramp over the dimensions whose
/// wavelengths turn between beta_fast and beta_slow times within the original context).
/// `attention_factor` multiplies the rotation's cosines and sines (LongRoPE's and YaRN's
/// magnitude scaling: attention scores grow by its square).
struct RopeScaling {
  enum class Kind { kNone, kLinear, kLlama3, kFactors, kYarn };
  Kind kind = Kind::kNone;
  std::vector<double> freq_factors;  ///< kFactors: each > 0
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
  double attention_factor = 1.0;
  double beta_fast = 32.0;  ///< kYarn: the ramp's ends, in turns over the original context
  double beta_slow = 1.0;
  bool truncate = true;     ///< kYarn: the ramp's ends rounded out to whole dimensions
  /// LongRoPE: the factors (in place of freq_factors) of a session longer than
  /// original_max_position_embeddings; empty: none.
  std::vector<double> long_freq_factors;
};

/// The head_dim/2 inverse frequencies theta^(-2i/head_dim), adjusted by the scaling (with partial
/// rotary embeddings, pass the rotated dimensions as head_dim).
std::vector<double> rope_inverse_frequencies(std::int64_t head_dim, double theta,
                                             const RopeScaling& scaling);

/// Rotates the first `rotary_dim` dimensions of each head of x[n, heads, head_dim] in place
/// (pairs i, i + rotary_dim/2; rotary_dim == head_dim: the whole head) and multiplies them by
/// `magnitude` (1, or RopeScaling::attention_factor); the other dimensions pass unchanged. Row t
/// is at position positions[t]. inv_freq has rotary_dim/2 entries (from
/// rope_inverse_frequencies(rotary_dim, ...)).
void rope_rotate_half(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                      const std::int64_t* positions, const double* inv_freq, double magnitude);

/// rope_rotate_half with pairs (2i, 2i + 1) of the first rotary_dim dimensions, pair i turning by
/// inv_freq[i] (Cohere's layout).
void rope_rotate_adjacent(float* x, std::int64_t n, std::int64_t heads, std::int64_t head_dim, std::int64_t rotary_dim,
                          const std::int64_t* positions, const double* inv_freq, double magnitude);

}  // namespace sepal

#pragma once
// AdamW (Loshchilov & Hutter) over a flat vector of f32 parameters, and the learning-rate schedule
// of prompt tuning: linear warmup, then cosine decay to zero.
//
// Thread-safety: an AdamW belongs to one trainer.

#include <cstdint>
#include <vector>

namespace sepal {

/// AdamW's constants.
struct AdamWSettings {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  ///< decoupled: params -= lr · weight_decay · params
};

/// The optimizer's state: the moments of every parameter and the steps taken.
class AdamW {
 public:
  AdamW() = default;
  AdamW(std::size_t params, AdamWSettings settings) : m_(params), v_(params), settings_(settings) {}

  /// One update of params[i] from grads[i] at learning rate lr (each element computed in double
  /// and rounded once, so the result is the same on every machine).
  void step(std::vector<float>& params, const std::vector<float>& grads, double lr);

  std::int64_t steps() const { return steps_; }
  const std::vector<float>& first_moment() const { return m_; }
  const std::vector<float>& second_moment() const { return v_; }
  const AdamWSettings& settings() const { return settings_; }
  /// Restores a saved state; sizes must match the parameters.
  void restore(std::vector<float> m, std::vector<float> v, std::int64_t steps);

 private:
  std::vector<float> m_, v_;
  std::int64_t steps_ = 0;
  AdamWSettings settings_;
};

/// The learning rate of optimizer step `step` (0-based) of `total`: peak · (step + 1) / warmup
/// during the first `warmup` steps, then a cosine from peak down to 0 at step `total`.
double scheduled_learning_rate(double peak, std::int64_t step, std::int64_t warmup, std::int64_t total);

/// Scales grads so that their L2 norm is at most max_norm (no change when max_norm <= 0);
/// returns the norm before scaling.
double clip_gradient_norm(std::vector<float>& grads, double max_norm);

}  // namespace sepal

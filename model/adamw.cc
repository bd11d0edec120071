#include "model/adamw.h"

#include <cmath>
#include <numbers>

#include "kernels/error.h"

namespace sepal {

void AdamW::step(std::vector<float>& params, const std::vector<float>& grads, double lr) {
  SEPAL_CHECK(params.size() == m_.size() && grads.size() == m_.size(), "AdamW: ", m_.size(),
              " moments for ", params.size(), " parameters and ", grads.size(), " gradients");
  ++steps_;
  const AdamWSettings& s = settings_;
  const double correction1 = 1.0 - std::pow(s.beta1, static_cast<double>(steps_));
  const double correction2 = 1.0 - std::pow(s.beta2, static_cast<double>(steps_));
  for (std::size_t i = 0; i < params.size(); ++i) {
    const double g = grads[i];
    const double m = s.beta1 * m_[i] + (1.0 - s.beta1) * g;
    const double v = s.beta2 * v_[i] + (1.0 - s.beta2) * g * g;
    m_[i] = static_cast<float>(m);
    v_[i] = static_cast<float>(v);
    double p = params[i];
    p -= lr * s.weight_decay * p;
    p -= lr * (m / correction1) / (std::sqrt(v / correction2) + s.eps);
    params[i] = static_cast<float>(p);
  }
}

void AdamW::restore(std::vector<float> m, std::vector<float> v, std::int64_t steps) {
  SEPAL_CHECK(m.size() == m_.size() && v.size() == v_.size(), "AdamW: restored moments of ", m.size(), " and ",
              v.size(), " values for ", m_.size(), " parameters");
  m_ = std::move(m);
  v_ = std::move(v);
  steps_ = steps;
}

double scheduled_learning_rate(double peak, std::int64_t step, std::int64_t warmup, std::int64_t total) {
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double span = static_cast<double>(std::max<std::int64_t>(1, total - warmup));
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
  return peak * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

double clip_gradient_norm(std::vector<float>& grads, double max_norm) {
  double sum = 0;
  for (float g : grads) sum += static_cast<double>(g) * g;
  const double norm = std::sqrt(sum);
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / norm;
    for (float& g : grads) g = static_cast<float>(g * scale);
  }
  return norm;
}

}  // namespace sepal

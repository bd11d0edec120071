#include "model/guess_policy.h"

#include <algorithm>

#include "kernels/error.h"

namespace sepal {
namespace {

constexpr double kForget = 0.97;  // weight of a step or guess one step older

}  // namespace

GuessPolicy::GuessPolicy(std::int64_t kinds, bool learning)
    : taken_(static_cast<std::size_t>(kinds), 1.0), offered_(static_cast<std::size_t>(kinds), 2.0), learning_(learning) {
  if (kinds < 0) fail("a guess policy needs a number of kinds, got ", kinds);
}

double GuessPolicy::taken_share(std::int64_t kind) const {
  return taken_.at(static_cast<std::size_t>(kind)) / offered_.at(static_cast<std::size_t>(kind));
}

bool GuessPolicy::worth(std::int64_t kind) const {
  return !learning_ || exploring() || taken_share(kind) * (a_ + b_) > b_;
}

void GuessPolicy::ran(std::int64_t rows, double seconds) {
  const auto n = static_cast<double>(rows);
  sw_ = kForget * sw_ + 1;
  sn_ = kForget * sn_ + n;
  snn_ = kForget * snn_ + n * n;
  st_ = kForget * st_ + seconds;
  snt_ = kForget * snt_ + n * seconds;
  const double spread = sw_ * snn_ - sn_ * sn_;
  if (spread > 1e-9 * sw_ * snn_) {
    b_ = std::max(0.0, (sw_ * snt_ - sn_ * st_) / spread);
    a_ = std::max(0.0, (st_ - b_ * sn_) / sw_);
  }
  ++steps_;
}

void GuessPolicy::guessed(std::int64_t kind, bool taken) {
  auto& t = taken_.at(static_cast<std::size_t>(kind));
  auto& o = offered_.at(static_cast<std::size_t>(kind));
  t = kForget * t + (taken ? 1.0 : 0.0);
  o = kForget * o + 1.0;
}

}  // namespace sepal

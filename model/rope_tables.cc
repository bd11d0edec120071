#include "model/rope_tables.h"

#include "kernels/rope.h"

namespace sepal {

std::vector<double> rope_tables(const ModelConfig& config) {
  std::vector<double> tables = rope_inverse_frequencies(config.rope_dims(), config.rope_theta, config.rope_scaling);
  if (config.local_rope_theta > 0.0) {
    const auto local = rope_inverse_frequencies(config.rope_dims(), config.local_rope_theta, RopeScaling{});
    tables.insert(tables.end(), local.begin(), local.end());
  }
  if (!config.rope_scaling.long_freq_factors.empty()) {
    RopeScaling long_scaling = config.rope_scaling;
    long_scaling.freq_factors = long_scaling.long_freq_factors;
    const auto long_table = rope_inverse_frequencies(config.rope_dims(), config.rope_theta, long_scaling);
    tables.insert(tables.end(), long_table.begin(), long_table.end());
  }
  return tables;
}

std::int64_t rope_table_offset(const ModelConfig& config, std::int64_t layer, std::int64_t session_positions) {
  const std::int64_t size = config.rope_dims() / 2;
  if (config.local_rope_of(layer)) return size;
  if (config.long_rope_for(session_positions)) return config.local_rope_theta > 0.0 ? 2 * size : size;
  return 0;
}

}  // namespace sepal

#pragma once
// A model's RoPE inverse-frequency tables, kept one after another in one array (what a block
// stack holds, on the CPU or on its device), and which of them a block of a session rotates with.

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace sepal {

/// The tables, rope_dims() / 2 entries each: rope_theta's with the config's scaling; then Gemma 3's
/// sliding blocks' own (local_rope_theta, no scaling), where the model has them; then LongRoPE's
/// long factors', where it has them.
std::vector<double> rope_tables(const ModelConfig& config);

/// Where in rope_tables() the table of block `layer` starts for a session of `session_positions`
/// positions (ModelConfig::long_rope_for).
std::int64_t rope_table_offset(const ModelConfig& config, std::int64_t layer, std::int64_t session_positions);

}  // namespace sepal

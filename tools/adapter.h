#pragma once
// --adapter: a trained prompt (a `sepal tune` checkpoint) for generate and perplexity.

#include <boost/program_options.hpp>
#include <optional>
#include <string>

#include "model/model_config.h"
#include "model/prompt_tuning.h"
#include "model/weights.h"

namespace sepal::tools {

/// Adds --adapter, storing the path into `path`.
void add_adapter_option(boost::program_options::options_description& description, std::string& path);

/// The prompt or adapters saved in `path` (nullopt when empty), after checking that they were
/// trained on the model in `model_dir`. Throws sepal::Error with one line naming the problem.
std::optional<PromptParameters> load_adapter(const std::string& path, const std::string& model_dir,
                                             const ModelConfig& config);

/// Refuses (one line) a PEQA adapter on weights not loaded as int8 (here and on the hosts).
void check_adapter_use(const PromptParameters* adapter, const WeightLoading& loading);

}  // namespace sepal::tools

#include "tools/adapter.h"

#include "kernels/error.h"
#include "model/tuning_checkpoint.h"

namespace sepal::tools {

void add_adapter_option(boost::program_options::options_description& description, std::string& path) {
  description.add_options()("adapter", boost::program_options::value(&path),
                            "a prompt trained by sepal tune (its HDF5 checkpoint), put where it was trained");
}

std::optional<PromptParameters> load_adapter(const std::string& path, const std::string& model_dir,
                                             const ModelConfig& config) {
  if (path.empty()) return std::nullopt;
  TuningCheckpoint ck = load_tuning_checkpoint(path);
  const std::string fingerprint = model_fingerprint(config, Checkpoint::open(model_dir));
  if (ck.model_fingerprint != fingerprint) {
    fail(path, ": the adapter was trained on another model (fingerprint ", ck.model_fingerprint, ", ", model_dir,
         " has ", fingerprint, ")");
  }
  return std::move(ck.state.params);
}

}  // namespace sepal::tools

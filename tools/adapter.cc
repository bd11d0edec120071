#include "tools/adapter.h"

#include "kernels/error.h"
#include "model/peft_adapter.h"
#include "model/tuning_checkpoint.h"

namespace sepal::tools {

void add_adapter_option(boost::program_options::options_description& description, std::string& path) {
  description.add_options()("adapter", boost::program_options::value(&path),
                            "a prompt or adapters trained by sepal tune (its HDF5 checkpoint), applied as trained;\n"
                            "or a Hugging Face PEFT LoRA folder (adapter_config.json, adapter_model.safetensors)");
}

std::optional<PromptParameters> load_adapter(const std::string& path, const std::string& model_dir,
                                             const ModelConfig& config) {
  if (path.empty()) return std::nullopt;
  if (is_peft_folder(path)) return read_peft_adapter(path, config);
  TuningCheckpoint ck = load_tuning_checkpoint(path);
  const std::string fingerprint = model_fingerprint(config, Checkpoint::open(model_dir));
  if (ck.model_fingerprint != fingerprint) {
    fail(path, ": the adapter was trained on another model (fingerprint ", ck.model_fingerprint, ", ", model_dir,
         " has ", fingerprint, ")");
  }
  return std::move(ck.state.params);
}

void check_adapter_use(const PromptParameters* adapter, const WeightLoading& loading) {
  if (!adapter || !trains_adapters(adapter->method)) return;
  if (adapter->method == TuningMethod::kPeqa && loading.dtype != DType::kI8) {
    fail("--adapter: a PEQA adapter holds int8 scales: add --dtype int8");
  }
}

}  // namespace sepal::tools

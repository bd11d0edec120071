#include "tools/weight_options.h"

#include <cmath>

#include "kernels/error.h"
#include "tools/commands.h"

namespace sepal::tools {

namespace po = boost::program_options;

void add_weight_options(po::options_description& description, WeightOptions& options) {
  description.add_options()
      ("dtype", po::value(&options.dtype)->default_value("f32"),
       "weights in memory: f32, bf16, or int8 (LLM.int8(): a quarter of f32's bytes)")
      ("outlier-threshold", po::value(&options.outlier_threshold)->default_value(kDefaultOutlierThreshold),
       "int8: activations of at least this magnitude are multiplied in floating point (inf: never)")
      ("mmap-weights", "use weights in place from the file mapping where the stored type matches:\n"
                       "faster to load and shared between processes, slower to decode (4 KiB pages)");
}

WeightLoading weight_loading(const WeightOptions& options, const po::variables_map& vm) {
  const auto dtype = parse_dtype(options.dtype);
  if (!dtype || *dtype == DType::kF16) {
    throw UsageError{"--dtype must be f32, bf16 or int8, got '" + options.dtype + "'"};
  }
  if (std::isnan(options.outlier_threshold) || options.outlier_threshold <= 0) {
    throw UsageError{"--outlier-threshold must be a number above 0 (inf turns the decomposition off)"};
  }
  if (*dtype == DType::kI8 && vm.count("mmap-weights")) {
    throw UsageError{"--mmap-weights cannot be used with --dtype int8: the weights are quantized while loading"};
  }
  WeightLoading loading(*dtype, vm.count("mmap-weights") > 0);
  loading.outlier_threshold = options.outlier_threshold;
  return loading;
}

void add_device_option(po::options_description& description, std::string& device) {
  description.add_options()
      ("device", po::value(&device)->default_value("cpu"),
       "where the blocks run (in this process, or with a swarm on its hosts): cpu, cuda or cuda:N\n"
       "(GPU N: weights, KV caches and the forward on the device; decode and prompts, without\n"
       "adapters or drafts)");
}

Device device_option(const std::string& text) {
  try {
    return parse_device(text);
  } catch (const Error& e) {
    throw UsageError{std::string("--device: ") + e.what()};
  }
}

void check_device_use(const Device& device, bool with_adapter, bool with_draft) {
  if (device.is_cpu()) return;
  const std::string flag = "--device " + device_name(device);
  if (with_adapter) throw UsageError{flag + ": adapters and tuned prompts run on the CPU only"};
  if (with_draft) throw UsageError{flag + ": speculative decoding (token trees) runs on the CPU only"};
}

std::vector<std::string> weight_arguments(const WeightOptions& options, const po::variables_map& vm) {
  std::vector<std::string> args{"--dtype", options.dtype, "--outlier-threshold", std::to_string(options.outlier_threshold)};
  if (vm.count("mmap-weights")) args.push_back("--mmap-weights");
  return args;
}

}  // namespace sepal::tools

#include "tools/weight_options.h"

#include <cmath>

#include "kernels/attention.h"
#include "kernels/error.h"
#include "tools/commands.h"

namespace sepal::tools {

namespace po = boost::program_options;

void add_weight_options(po::options_description& description, WeightOptions& options, bool kv_caches) {
  description.add_options()
      ("dtype", po::value(&options.dtype)->default_value("f32"),
       "weights in memory: f32, bf16, or int8 (LLM.int8(): a quarter of f32's bytes)")
      ("outlier-threshold", po::value(&options.outlier_threshold)->default_value(kDefaultOutlierThreshold),
       "int8: activations of at least this magnitude are multiplied in floating point (inf: never)")
      ("mmap-weights", "use weights in place from the file mapping where the stored type matches:\n"
                       "faster to load and shared between processes, slower to decode (4 KiB pages)");
  if (kv_caches) {
    description.add_options()
        ("kv-dtype", po::value(&options.kv_dtype)->default_value("f32"),
         "the sessions' key/value caches (on the blocks' hosts): f32, or bf16 (half the memory\n"
         "and half the bytes attention reads; keys and values rounded; CPU only)");
  }
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
  const auto kv_dtype = parse_dtype(options.kv_dtype);
  if (!kv_dtype || !kv_dtype_supported(*kv_dtype)) {
    throw UsageError{"--kv-dtype must be f32 or bf16, got '" + options.kv_dtype + "'"};
  }
  WeightLoading loading(*dtype, vm.count("mmap-weights") > 0);
  loading.outlier_threshold = options.outlier_threshold;
  loading.kv_dtype = *kv_dtype;
  return loading;
}

void add_device_option(po::options_description& description, std::string& device) {
  description.add_options()
      ("device", po::value(&device)->default_value("cpu"),
       "where the blocks run (in this process, or with a swarm on its hosts): cpu, cuda or cuda:N\n"
       "(GPU N: weights, KV caches, the forward, token trees and tuning's passes on the\n"
       "device, with deep prompts and adapters)");
}

Device device_option(const std::string& text, const WeightLoading& loading) {
  Device device;
  try {
    device = parse_device(text);
  } catch (const Error& e) {
    throw UsageError{std::string("--device: ") + e.what()};
  }
  if (!device.is_cpu() && loading.kv_dtype != DType::kF32) {
    throw UsageError{"--kv-dtype " + std::string(dtype_name(loading.kv_dtype)) + " is for blocks on the CPU; caches on " +
                     device_name(device) + " are f32"};
  }
  return device;
}


std::vector<std::string> weight_arguments(const WeightOptions& options, const po::variables_map& vm) {
  std::vector<std::string> args{"--dtype", options.dtype, "--outlier-threshold", std::to_string(options.outlier_threshold)};
  if (vm.count("mmap-weights")) args.push_back("--mmap-weights");
  if (vm.count("kv-dtype")) args.insert(args.end(), {"--kv-dtype", options.kv_dtype});
  return args;
}

}  // namespace sepal::tools

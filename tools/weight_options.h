#pragma once
// The options every command that loads weights shares: --dtype, --outlier-threshold and
// --mmap-weights, and --kv-dtype where the command keeps sessions' key/value caches, checked once
// here.

#include <boost/program_options.hpp>
#include <string>

#include "kernels/device.h"
#include "model/weights.h"

namespace sepal::tools {

struct WeightOptions {
  std::string dtype = "f32";
  float outlier_threshold = kDefaultOutlierThreshold;
  std::string kv_dtype = "f32";
};

/// Adds --dtype, --outlier-threshold and --mmap-weights, and with `kv_caches` --kv-dtype, storing
/// into `options`.
void add_weight_options(boost::program_options::options_description& description, WeightOptions& options,
                        bool kv_caches = true);

/// The loading the parsed options ask for. Throws UsageError naming the bad option.
WeightLoading weight_loading(const WeightOptions& options, const boost::program_options::variables_map& vm);

/// Adds --device: where the blocks this process holds run (cpu, cuda, cuda:N).
void add_device_option(boost::program_options::options_description& description, std::string& device);

/// The device --device names. Throws UsageError when the text is not one, or when it is a GPU and
/// `loading` asks for caches of another type than f32.
Device device_option(const std::string& text, const WeightLoading& loading);


/// The same options as arguments for another sepal process.
std::vector<std::string> weight_arguments(const WeightOptions& options, const boost::program_options::variables_map& vm);

}  // namespace sepal::tools

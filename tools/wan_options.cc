#include "tools/wan_options.h"

#include <boost/program_options.hpp>
#include <fstream>

#include "tools/commands.h"

namespace sepal::tools {

WanConfig wan_settings(const std::string& config_path, const std::string& flag) {
  namespace po = boost::program_options;
  std::string text;
  if (!config_path.empty()) {
    std::ifstream in(config_path);
    if (!in) throw UsageError{"cannot read config file " + config_path};
    po::options_description none;
    po::parsed_options parsed = po::parse_config_file(in, none, /*allow_unregistered=*/true);
    for (const auto& option : parsed.options) {
      if (option.string_key.rfind("wan.", 0) != 0) continue;  // other sections belong to other commands
      if (option.value.size() != 1) throw UsageError{config_path + ": " + option.string_key + " needs one value"};
      text += option.string_key.substr(4) + "=" + option.value[0] + " ";
    }
  }
  text += flag;
  auto parsed = parse_wan_config(text);
  if (!parsed.is_ok()) throw UsageError{(config_path.empty() ? "" : config_path + ": ") + parsed.status().message()};
  return parsed.value();
}

}  // namespace sepal::tools

#include "tools/wan_options.h"

#include <boost/program_options.hpp>
#include <fstream>
#include <sstream>

#include "tools/commands.h"

namespace sepal::tools {
namespace {

WanConfig wan_settings_text(const std::string& text, const std::string& name) {
  auto parsed = parse_wan_config(text);
  if (!parsed.is_ok()) throw UsageError{(name.empty() ? "" : name + ": ") + parsed.status().message()};
  return parsed.value();
}

}  // namespace

WanConfig wan_settings(const std::string& config_path, const std::string& flag) {
  if (config_path.empty()) return wan_settings_text(flag, "");
  std::ifstream in(config_path);
  if (!in) throw UsageError{"cannot read config file " + config_path};
  return wan_settings(in, config_path, flag);
}

WanConfig wan_settings(std::istream& ini, const std::string& name, const std::string& flag) {
  namespace po = boost::program_options;
  std::string text;
  // Boost 1.74 loops forever building the message of an error whose line holds '%' (its
  // placeholder syntax): such lines are refused first. '#' starts a comment, as for Boost.
  std::stringstream content;
  content << ini.rdbuf();
  std::string line;
  for (int number = 1; std::getline(content, line); ++number) {
    if (line.substr(0, line.find('#')).find('%') != std::string::npos) {
      throw UsageError{name + ": line " + std::to_string(number) + ": '%' is not allowed outside comments"};
    }
  }
  content.clear();
  content.seekg(0);
  po::options_description none;
  po::parsed_options parsed(nullptr);
  try {
    parsed = po::parse_config_file(content, none, /*allow_unregistered=*/true);
  } catch (const po::error& e) {
    throw UsageError{name + ": " + e.what()};
  }
  for (const auto& option : parsed.options) {
    if (option.string_key.rfind("wan.", 0) != 0) continue;  // other sections belong to other commands
    if (option.value.size() != 1) throw UsageError{name + ": " + option.string_key + " needs one value"};
    text += option.string_key.substr(4) + "=" + option.value[0] + " ";
  }
  return wan_settings_text(text + flag, name);
}

}  // namespace sepal::tools

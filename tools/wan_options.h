#pragma once
// WAN emulation settings from the command line (--wan "rtt_ms=..,bandwidth_mbps=..") and from a
// config file's [wan] section; the flag's keys override the file's.

#include <istream>
#include <string>

#include "runtime/wan_link.h"

namespace sepal::tools {

/// Reads `[wan]` from `config_path` (if not empty), then applies `flag` (if not empty). Throws
/// UsageError naming the bad key, value or file.
WanConfig wan_settings(const std::string& config_path, const std::string& flag);

/// Same, from an INI text already open; `name` names it in errors.
WanConfig wan_settings(std::istream& ini, const std::string& name, const std::string& flag);

}  // namespace sepal::tools

// Fuzz target: an INI config file (the [wan] section of --config). Reading must give settings
// that pass their own validation, or throw UsageError naming the key or value.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "tools/commands.h"
#include "tools/wan_options.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream ini(std::string(reinterpret_cast<const char*>(data), size));
  try {
    (void)sepal::tools::wan_settings(ini, "fuzz.ini", "");
  } catch (const sepal::tools::UsageError&) {
  }
  return 0;
}

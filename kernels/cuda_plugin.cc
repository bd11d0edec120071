// open_cuda_backend in a build with CUDA: loads the CUDA backend from bin/libsepal_cuda.so (next
// to the program, or $SEPAL_CUDA_PLUGIN) the first time a GPU is asked for, so that programs
// that never use one load no CUDA library. The plugin stays loaded until the process ends.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>

#include "kernels/backend.h"
#include "kernels/error.h"

namespace sepal {
namespace {

using OpenFunction = Backend* (*)(int);

std::filesystem::path plugin_path() {
  if (const char* path = std::getenv("SEPAL_CUDA_PLUGIN"); path && *path) return path;
  std::error_code error;
  const auto program = std::filesystem::read_symlink("/proc/self/exe", error);
  const auto dir = error ? std::filesystem::path(".") : program.parent_path();
  for (const auto& candidate : {dir / "libsepal_cuda.so", dir / ".." / "lib" / "libsepal_cuda.so"}) {
    if (std::filesystem::exists(candidate, error)) return candidate;
  }
  return dir / "libsepal_cuda.so";
}

}  // namespace

std::unique_ptr<Backend> open_cuda_backend(int index) {
  static std::once_flag loaded;
  static OpenFunction open = nullptr;
  static std::string why;
  std::call_once(loaded, [] {
    const auto path = plugin_path();
    void* plugin = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!plugin) {
      const char* reason = dlerror();
      why = "cannot load the CUDA backend " + path.string() + ": " + (reason ? reason : "unknown error");
      return;
    }
    open = reinterpret_cast<OpenFunction>(dlsym(plugin, "sepal_cuda_backend_open"));
    if (!open) why = path.string() + " is not sepal's CUDA backend (no sepal_cuda_backend_open)";
  });
  if (!open) fail("--device cuda:", index, ": ", why);
  return std::unique_ptr<Backend>(open(index));
}

}  // namespace sepal

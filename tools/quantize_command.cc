// sepal quantize: writes an LLM.int8() copy of a checkpoint (model/int8_checkpoint.h), so that
// hosts read a quarter of the bytes and skip quantizing; with --adapter, a PEQA-tuned one. The
// other files of the folder (config, tokenizer) are copied.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "model/gguf.h"
#include "model/gpt_oss_experts.h"
#include "model/int8_checkpoint.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "tools/adapter.h"
#include "tools/commands.h"

namespace sepal::tools {

int quantize_command(int argc, char** argv) {
  namespace po = boost::program_options;
  std::string model_dir, out_dir, adapter_file;
  po::options_description options("sepal quantize: write an int8 (LLM.int8()) copy of a checkpoint");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model_dir)->required(), "model folder (Hugging Face layout)")
      ("out", po::value(&out_dir)->required(), "folder for the int8 checkpoint (created; must not hold model files)")
      ("adapter", po::value(&adapter_file),
       "a PEQA checkpoint (sepal tune --method peqa): write the tuned int8 model, its scales folded in");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  namespace fs = std::filesystem;
  if (is_gguf_file(model_dir)) {
    throw UsageError{"--model " + model_dir + " is a GGUF file; sepal quantize writes folders (load the file with --dtype int8)"};
  }
  const ModelConfig config = read_model_config(model_dir);  // a bad folder fails before anything is written
  const std::optional<PromptParameters> adapter = load_adapter(adapter_file, model_dir, config);
  if (adapter && adapter->method != TuningMethod::kPeqa) {
    throw UsageError{"--adapter: a " + std::string(tuning_method_name(adapter->method)) +
                     " checkpoint does not fold into int8 scales; sepal quantize takes PEQA checkpoints"};
  }
  if (fs::exists(fs::path(out_dir) / "model.safetensors") || fs::exists(fs::path(out_dir) / "config.json")) {
    throw UsageError{"--out " + out_dir + " already holds a model; give an empty folder"};
  }
  std::error_code ec;
  if (fs::exists(out_dir) && fs::equivalent(model_dir, out_dir, ec)) throw UsageError{"--out must differ from --model"};
  const Checkpoint read = Checkpoint::open(model_dir);
  // GPT-OSS's stacked experts (transposed, or in MXFP4) are written one matrix per expert and
  // projection, int8 rows with their scales, as the loader reads them (model/gpt_oss_experts.h).
  const bool gpt_oss = config.architecture == "GptOssForCausalLM";
  const std::optional<Checkpoint> split = gpt_oss ? std::optional(split_gpt_oss_experts(read, config, model_dir)) : std::nullopt;
  const Checkpoint& checkpoint = split ? *split : read;
  const bool tty = isatty(STDERR_FILENO);
  auto tensors = quantize_checkpoint_tensors(checkpoint, [&](double done) {
    if (tty) std::fprintf(stderr, "\rsepal quantize: %3.0f%%", done * 100);
  });
  if (adapter) fold_peqa_scales(config, *adapter->block_adapters(), tensors);
  std::int64_t in_bytes = 0, out_bytes = 0;
  for (const auto& t : tensors) out_bytes += static_cast<std::int64_t>(t.bytes.size());
  fs::create_directories(out_dir);
  for (const auto& entry : fs::directory_iterator(model_dir)) {
    const std::string file = entry.path().filename().string();
    if (entry.is_regular_file() && file.ends_with(".safetensors")) in_bytes += static_cast<std::int64_t>(entry.file_size());
    if (!entry.is_regular_file() || file.ends_with(".safetensors") || file == "model.safetensors.index.json") continue;
    fs::copy_file(entry.path(), fs::path(out_dir) / file, fs::copy_options::overwrite_existing);
  }
  {  // MXFP4, FP8 and packed integer weights are int8 now: the copy's config.json says no other quantization
    const fs::path copy = fs::path(out_dir) / "config.json";
    std::ifstream in(copy);
    nlohmann::json c = nlohmann::json::parse(in);
    in.close();
    const nlohmann::json method = c.contains("quantization_config") && c["quantization_config"].is_object()
                                      ? c["quantization_config"].value("quant_method", nlohmann::json())
                                      : nlohmann::json();
    const bool four_bit = method == "bitsandbytes" && c["quantization_config"].value("load_in_4bit", false);
    if (method == "mxfp4" || method == "fp8" || method == "compressed-tensors" || method == "gptq" || method == "awq" || four_bit) {
      c.erase("quantization_config");
      std::ofstream(copy) << c.dump(2) << "\n";
    }
  }
  write_safetensors(fs::path(out_dir) / "model.safetensors", tensors);
  std::fprintf(stderr, "%ssepal quantize: wrote %s: %.1f MB (%.3f of the original %.1f MB)\n", tty ? "\n" : "", out_dir.c_str(),
               out_bytes / 1e6, static_cast<double>(out_bytes) / static_cast<double>(in_bytes), in_bytes / 1e6);
  return 0;
}

}  // namespace sepal::tools

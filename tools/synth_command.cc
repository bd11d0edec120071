// sepal synth: write a synthetic checkpoint (random weights) in Hugging Face layout.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <unistd.h>

#include "kernels/dtype.h"
#include "model/synthetic_checkpoint.h"
#include "tools/commands.h"

namespace sepal::tools {

int synth_command(int argc, char** argv) {
  namespace po = boost::program_options;
  SyntheticSpec spec;
  std::string arch = "llama", preset, dtype_text = "f32", out_dir;
  po::options_description options("sepal synth: write a checkpoint with random weights (for benchmarks only)");
  options.add_options()
      ("help,h", "show this help")
      ("out", po::value(&out_dir)->required(), "output folder")
      ("preset", po::value(&preset), "named shape: tinyllama-1.1b, llama-7b, stories-110m, stories-15m, bloom-1.1b,\n"
                                             "qwen3-0.6b, phi3-mini, gemma-2b, gemma2-2b, gemma3-1b")
      ("arch", po::value(&arch)->default_value("llama"), "architecture: llama, qwen2 (biases on q, k and v), qwen3\n"
                                                         "(q and k norms), phi3 (fused qkv_proj and\n"
                                                         "gate_up_proj), gemma (GeGLU, norms of 1 + w,\n"
                                                         "scaled embeddings), gemma2 (and output\n"
                                                         "norms, soft-capping), gemma3 (output and\n"
                                                         "q, k norms, local RoPE), mixtral (Mistral's\n"
                                                         "blocks, a mixture of experts), qwen3moe\n"
                                                         "(Qwen3's, a mixture of experts), qwen2moe\n"
                                                         "(Qwen2's, experts and a shared one), granite\n"
                                                         "(Llama's with multipliers), granitemoe\n"
                                                         "(and stacked experts), granitemoeshared\n"
                                                         "(and a shared MLP), olmo2 (output\n"
                                                         "norms only, q and k norms over all heads),\n"
                                                         "olmo3 (and a window on 3 of 4 blocks),\n"
                                                         "olmoe (experts, OLMo's q and k norms),\n"
                                                         "smollm3 (Llama's, every 4th block without\n"
                                                         "RoPE), gpt_oss (biases, sinks, a window on\n"
                                                         "every other block, biased experts with a\n"
                                                         "clamped SwiGLU), cohere (LayerNorms, q and\n"
                                                         "k norms per head, parallel blocks, RoPE\n"
                                                         "over adjacent pairs), cohere2 (no q, k\n"
                                                         "norms; a window on 3 of 4 blocks, which\n"
                                                         "alone rotate), glm (biases on q, k, v,\n"
                                                         "half of each head rotating in adjacent\n"
                                                         "pairs, gate_up_proj), glm4 (and norms of\n"
                                                         "the attention's and MLP's outputs) or bloom\n"
                                                         "(default: the preset's, else llama)")
      ("hidden", po::value(&spec.hidden_size), "hidden size")
      ("intermediate", po::value(&spec.intermediate_size), "MLP size")
      ("layers", po::value(&spec.num_layers), "number of blocks")
      ("heads", po::value(&spec.num_heads), "attention heads")
      ("kv-heads", po::value(&spec.num_kv_heads), "key/value heads")
      ("head-dim", po::value(&spec.head_dim), "attention head size (default hidden/heads)")
      ("vocab", po::value(&spec.vocab_size), "vocabulary size (>= 259)")
      ("max-positions", po::value(&spec.max_position_embeddings), "max_position_embeddings")
      ("experts", po::value(&spec.num_experts), "mixtures (mixtral, qwen2moe, qwen3moe, olmoe,\ngranitemoe, granitemoeshared, gpt_oss): experts per block\n(default 8)")
      ("experts-per-token", po::value(&spec.experts_per_token)->default_value(2), "mixtures: experts each token takes")
      ("moe-intermediate", po::value(&spec.moe_intermediate_size), "qwen2moe, qwen3moe: an expert's MLP size (default --intermediate)")
      ("shared-intermediate", po::value(&spec.shared_expert_intermediate_size), "qwen2moe, granitemoeshared: the shared expert's\nMLP size (default --intermediate)")
      ("swiglu-limit", po::value(&spec.swiglu_limit), "gpt_oss: where its experts' SwiGLU clamps (default 7)")
      ("tied", "tie the LM head to the embeddings")
      ("dtype", po::value(&dtype_text)->default_value("f32"), "stored type: f32, f16 or bf16")
      ("seed", po::value(&spec.seed)->default_value(0), "random seed")
      ("outlier-dims", po::value(&spec.outlier_dims)->default_value(0),
       "hidden dimensions whose block norm weights are --outlier-scale instead of 1, giving\n"
       "large-magnitude features as in models past 6.7B parameters")
      ("outlier-scale", po::value(&spec.outlier_scale)->default_value(20.0), "norm weight of the outlier dimensions");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  static const std::map<std::string, std::string> kArchitectures = {
      {"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"},
      {"phi3", "Phi3ForCausalLM"}, {"gemma", "GemmaForCausalLM"}, {"gemma2", "Gemma2ForCausalLM"},
      {"gemma3", "Gemma3ForCausalLM"}, {"mixtral", "MixtralForCausalLM"}, {"qwen3moe", "Qwen3MoeForCausalLM"},
      {"qwen2moe", "Qwen2MoeForCausalLM"}, {"granite", "GraniteForCausalLM"}, {"granitemoe", "GraniteMoeForCausalLM"},
      {"granitemoeshared", "GraniteMoeSharedForCausalLM"}, {"olmo2", "Olmo2ForCausalLM"},
      {"olmo3", "Olmo3ForCausalLM"}, {"olmoe", "OlmoeForCausalLM"}, {"smollm3", "SmolLM3ForCausalLM"},
      {"gpt_oss", "GptOssForCausalLM"}, {"cohere", "CohereForCausalLM"}, {"cohere2", "Cohere2ForCausalLM"},
      {"glm", "GlmForCausalLM"}, {"glm4", "Glm4ForCausalLM"},
      {"bloom", "BloomForCausalLM"}};
  arch = vm["arch"].as<std::string>();  // before notify: the preset is read first
  const auto architecture = kArchitectures.find(arch);
  if (architecture == kArchitectures.end()) {
    throw UsageError{"--arch '" + arch + "' is not supported (supported: llama, qwen2, qwen3, phi3, gemma, gemma2, gemma3, mixtral, qwen2moe, qwen3moe, granite, granitemoe, granitemoeshared, olmo2, olmo3, olmoe, smollm3, gpt_oss, cohere, cohere2, glm, glm4, bloom)"};
  }
  if (vm.count("preset")) {
    preset = vm["preset"].as<std::string>();
    const auto p = synthetic_preset(preset);
    if (!p) {
      throw UsageError{"unknown --preset '" + preset + "' (known: tinyllama-1.1b, llama-7b, stories-110m, stories-15m, bloom-1.1b, qwen3-0.6b, phi3-mini, gemma-2b, gemma2-2b, gemma3-1b)"};
    }
    spec = *p;
  }
  if (!vm["arch"].defaulted() || !vm.count("preset")) spec.architecture = architecture->second;
  po::notify(vm);  // explicit shape flags override the preset
  if (vm.count("tied")) spec.tie_word_embeddings = true;
  const bool moe = synthetic_mixture(spec.architecture);
  if (moe && !vm.count("experts")) spec.num_experts = 8;
  if (!moe && (vm.count("experts") || !vm["experts-per-token"].defaulted())) {
    throw UsageError{"--experts and --experts-per-token are for --arch mixtral, qwen2moe, qwen3moe, olmoe, granitemoe, granitemoeshared and gpt_oss"};
  }
  if (vm.count("swiglu-limit") && spec.architecture != "GptOssForCausalLM") throw UsageError{"--swiglu-limit is for --arch gpt_oss"};
  if (vm.count("moe-intermediate") && spec.architecture != "Qwen2MoeForCausalLM" && spec.architecture != "Qwen3MoeForCausalLM") {
    throw UsageError{"--moe-intermediate is for --arch qwen2moe and qwen3moe (mixtral's, olmoe's and granitemoe's experts are --intermediate wide)"};
  }
  if (spec.architecture != "Qwen2MoeForCausalLM" && spec.architecture != "GraniteMoeSharedForCausalLM" && vm.count("shared-intermediate")) {
    throw UsageError{"--shared-intermediate is for --arch qwen2moe and granitemoeshared"};
  }
  const auto dtype = parse_dtype(dtype_text);
  if (!dtype || *dtype == DType::kI8) throw UsageError{"--dtype must be f32, f16 or bf16, got '" + dtype_text + "'"};
  spec.dtype = *dtype;
  validate(spec);

  int last_percent = -1;
  const bool tty = isatty(STDERR_FILENO);  // a log gets the last line only
  write_synthetic_checkpoint(spec, out_dir, [&](double fraction) {
    const int percent = static_cast<int>(fraction * 100);
    if (tty && percent != last_percent && percent % 5 == 0) {
      std::fprintf(stderr, "\rsepal synth: writing %s: %3d%%", out_dir.c_str(), percent);
      last_percent = percent;
    }
  });
  std::fprintf(stderr, "%ssepal synth: wrote %s\n", tty ? "\n" : "", out_dir.c_str());
  return 0;
}

}  // namespace sepal::tools

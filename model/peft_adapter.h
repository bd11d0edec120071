#pragma once
// LoRA adapters in Hugging Face PEFT's layout: a folder with adapter_config.json ("peft_type":
// "LORA", "r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", ...) and
// adapter_model.safetensors holding "base_model.model.<module path>.lora_A.weight" [r, in] and
// "...lora_B.weight" [out, r] for every block and target module (the update is alpha / r · B A,
// with a module's r and alpha from the patterns where a key names it). Modules are the
// architecture's own (model/block_adapters.h, ProjectionModule): Llama's q_proj ... down_proj;
// each expert's of a mixture (Mixtral's block_sparse_moe.experts.E.w1, w3, w2; Qwen3-MoE's and
// OLMoE's mlp.experts.E.gate_proj ...), a LoRA each; BLOOM's fused query_key_value, whose one
// LoRA covers q, k and v. sepal tune writes it
// (--export-peft; sepal's q, k and v of BLOOM become one LoRA of their summed rank, each part's
// columns of B nonzero only in its rows); --adapter reads it, including adapters trained
// elsewhere, which become sepal adapters of one rank (the largest a projection needs; columns of
// B that are zero in a projection's rows dropped, others padded with zeros) and one scale (each
// B scaled by its module's alpha / r where these differ).
//
// Thread-safety: plain functions.

#include <filesystem>
#include <string>

#include "model/model_config.h"
#include "model/prompt_tuning.h"

namespace sepal {

/// Whether `path` is a folder holding adapter_config.json.
bool is_peft_folder(const std::filesystem::path& path);

/// Writes `params` (LoRA over every block of `config`) into `dir` (created). `base_model` goes into
/// base_model_name_or_path. Throws sepal::Error for other methods or on I/O failure.
void write_peft_adapter(const std::filesystem::path& dir, const ModelConfig& config, const PromptParameters& params,
                        const std::string& base_model);

/// Reads a PEFT LoRA folder for the model of `config` (F32, F16 or BF16 tensors, with or without
/// the "base_model.model." prefix). Throws sepal::Error with one line naming the problem: another
/// PEFT type, settings sepal does not apply (rsLoRA, DoRA, fan_in_fan_out, biases, some layers
/// only, modules_to_save, a pattern key that names no adapted module, such as a regular
/// expression), a missing or extra tensor, or a shape that does not fit the model.
PromptParameters read_peft_adapter(const std::filesystem::path& dir, const ModelConfig& config);

}  // namespace sepal

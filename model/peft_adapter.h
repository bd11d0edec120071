#pragma once
// LoRA adapters in Hugging Face PEFT's layout: a folder with adapter_config.json ("peft_type":
// "LORA", "r", "lora_alpha", "target_modules", ...) and adapter_model.safetensors holding
// "base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight" [r, in] and "...lora_B.weight"
// [out, r] for every block and target (the update is lora_alpha / r · B A). sepal tune writes it
// (--export-peft); --adapter reads it, including adapters trained elsewhere.
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
/// only, modules_to_save), a missing or extra tensor, or a shape that does not fit the model.
PromptParameters read_peft_adapter(const std::filesystem::path& dir, const ModelConfig& config);

}  // namespace sepal

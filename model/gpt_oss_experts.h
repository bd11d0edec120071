#pragma once
// GPT-OSS's experts as transformers holds them: each block's stacked, every matrix transposed
// (inputs by outputs), `mlp.experts.gate_up_proj` [experts, hidden, 2 · inter] whose even columns
// are the gate's and odd ones the up's, `down_proj` [experts, inter, hidden], and their biases
// `gate_up_proj_bias` [experts, 2 · inter] and `down_proj_bias` [experts, hidden] (MXFP4 files
// unpacked to this layout: model/mxfp4.h). The loader and `sepal quantize` take each expert's
// matrices out of them here, as the tensors a GGUF file gives (`mlp.experts.E.gate_proj.weight`
// [inter, hidden], `.bias` [inter], ...), which the loader also reads.
//
// Thread-safety: pure functions; a Checkpoint a split one reads from must outlive it.

#include <cstdint>
#include <filesystem>
#include <string>

#include "model/model_config.h"
#include "model/safetensors.h"

namespace sepal {

/// Expert e's gate_proj, up_proj or down_proj (`projection`), or with `bias` its bias, out of the
/// stacks of the block whose MLP's names start with `moe` ("model.layers.L.mlp."), as an f32 tensor
/// of its own named as a GGUF file's ("...mlp.experts.E.gate_proj.weight"). Throws sepal::Error
/// naming a stack that is missing or shaped unlike the config says.
TensorRef gpt_oss_expert(const Checkpoint& checkpoint, const ModelConfig& config, const std::string& moe, std::int64_t e,
                         const std::string& projection, bool bias);

/// `checkpoint` (of GPT-OSS, read from `source`) with every block's stacks split into one tensor
/// per expert, projection and bias, each computed when first asked for; the other tensors as they
/// are.
Checkpoint split_gpt_oss_experts(const Checkpoint& checkpoint, const ModelConfig& config, const std::filesystem::path& source);

}  // namespace sepal

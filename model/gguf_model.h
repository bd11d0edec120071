#pragma once
// A GGUF file as a model: its Llama configuration, its tensors under the Hugging Face names the
// rest of model/ reads (dequantized to f32 where stored quantized; llama.cpp's row permutation of
// the query and key projections undone, since sepal rotates halves as Hugging Face does), and its
// tokenizer from the metadata. read_model_config, Checkpoint::open and load_tokenizer take a
// .gguf file wherever they take a model folder.
//
// Thread-safety: pure functions over an immutable GgufFile.

#include <map>
#include <string>

#include "model/gguf.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

namespace sepal {

/// The configuration of a GGUF model (architecture `llama`). Throws sepal::Error naming the key
/// for a missing or bad value, and for other architectures.
ModelConfig gguf_model_config(const GgufFile& file);

/// Its tensors by Hugging Face name: F32, F16 and BF16 ones in place in the file's mapping, the
/// others (quantized, or the query and key rows to reorder) converted to f32 when first asked
/// for, so that a host reading a few blocks converts only those. Throws sepal::Error for a
/// tensor of an unexpected shape.
Checkpoint gguf_checkpoint(const GgufFile& file);

/// Its tokenizer: `llama` vocabularies (SentencePiece pieces with scores and types) through
/// SentencePiece itself, `gpt2` ones (byte-level BPE) through model/hf_tokenizer.cc. Throws
/// sepal::Error for other tokenizer models and pre-tokenizers, and malformed vocabularies.
std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufFile& file);

}  // namespace sepal

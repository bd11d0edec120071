#pragma once
// Reading safetensors checkpoints: one file, or shards listed by model.safetensors.index.json.
// Only the JSON headers are read when a checkpoint is opened; tensor bytes stay in the mapping
// until someone touches them.
//
// Thread-safety: a Checkpoint is immutable after open(); any thread may look tensors up.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "model/mapped_file.h"

namespace sepal {

/// One tensor of a checkpoint: its type, shape, and bytes inside a mapped file.
struct TensorRef {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  const std::byte* data = nullptr;
  std::size_t bytes = 0;
  std::shared_ptr<const void> storage;  ///< keeps `data` valid (the file's mapping, or converted values)
  bool mapped = false;  ///< `data` lies in a read-only file mapping (its pages may be dropped once copied)
  bool float8 = false;  ///< F8_E4M3 bytes (dtype kI8 until unpacked: model/fp8.h)
  /// 1, 4 or 8 for U8, I32 or I64 integers (packed weights and their parts:
  /// model/packed_integers.h, model/bnb4.h), else 0; such a tensor's dtype says nothing of its
  /// values, and loaders read none of them.
  int int_words = 0;

  /// Number of elements (product of the shape).
  std::int64_t elements() const;
  /// Shape as text, e.g. "[2048, 5632]".
  std::string shape_string() const;
};

/// Parses one safetensors file. Throws sepal::Error naming the file and the problem on a header
/// that is not valid JSON, an unsupported dtype, offsets past the end of the data, overlapping
/// tensors, or a byte count that disagrees with the shape.
std::map<std::string, TensorRef> read_safetensors(std::shared_ptr<const MappedFile> file);

/// A tensor to write: its safetensors dtype name ("F32", "I8", ...), shape and bytes.
struct TensorToWrite {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
};

/// Writes a single-file safetensors checkpoint. Throws sepal::Error on I/O failure.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors);

/// The causal LM name ("model.layers.0...", "lm_head.weight") of a multimodal model's language
/// model tensor ("language_model.model.layers.0...", "model.language_model.layers.0...",
/// "language_model.lm_head.weight"); nullopt for any other name.
std::optional<std::string> text_tower_tensor_name(const std::string& name);

/// All tensors of a model folder.
class Checkpoint {
 public:
  /// Opens `dir`/model.safetensors, or the shards named by `dir`/model.safetensors.index.json,
  /// or the folder's one .safetensors file under another name;
  /// or, when `dir` is a GGUF file, its tensors under Hugging Face names (model/gguf_model.h).
  /// MXFP4, FP8 and packed integer weights (model/mxfp4.h, model/fp8.h, model/packed_integers.h,
  /// model/bnb4.h; their settings from config.json's quantization_config, else AutoGPTQ's
  /// quantize_config.json or AutoAWQ's quant_config.json, or bitsandbytes' quant_state beside
  /// each weight) are unpacked when first asked for;
  /// other integer tensors (buffers such as position_ids) are left out. A
  /// multimodal checkpoint (Gemma3ForConditionalGeneration) is its language model alone, under
  /// a causal LM's names (text_tower_tensor_name); its vision tower is not read.
  static Checkpoint open(const std::filesystem::path& dir);

  /// The tensor called `name`, or nullopt.
  const TensorRef* find(const std::string& name) const;
  /// The tensor called `name`; throws naming the tensor and the folder when it is missing.
  const TensorRef& get(const std::string& name) const;
  /// Every tensor's name, type and shape. A tensor that is converted when first asked for (a
  /// quantized GGUF tensor) has no data here yet: read values through find() or get().
  const std::map<std::string, TensorRef>& tensors() const { return tensors_; }

  /// Drops the values of `t`, one of this checkpoint's own tensors (as find() and get() give
  /// them, not a copy or a part), when they were converted on first use (quantized GGUF tensors,
  /// MXFP4 and FP8 weights) and nothing outside the checkpoint shares them: a loader that has
  /// copied them says so, and a model's converted values are then not all in memory at once.
  /// They are converted again if asked for; `t` must not be read after.
  void release(const TensorRef& t) const;

  /// Fills in a tensor's values when it is first asked for (GGUF: dequantization).
  using Conversion = std::function<void(TensorRef&)>;
  /// A checkpoint of `tensors`, those named in `conversions` converted on first use.
  static Checkpoint from_tensors(std::filesystem::path source, std::map<std::string, TensorRef> tensors,
                                 std::map<std::string, Conversion> conversions);

 private:
  std::filesystem::path dir_;
  // Guarded by the mutex where conversions are pending (lookups convert); a shared_ptr keeps
  // Checkpoint movable.
  std::shared_ptr<std::mutex> mutex_ = std::make_shared<std::mutex>();
  mutable std::map<std::string, TensorRef> tensors_;
  mutable std::map<std::string, Conversion> conversions_;  // not yet converted
  std::map<std::string, Conversion> converters_;            // every conversion, for release()
};

}  // namespace sepal

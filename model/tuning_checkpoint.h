#pragma once
// Prompt-tuning checkpoints in HDF5: the settings of the run, the trainable parameters, AdamW's
// moments, the step, the data order and cursor, the shuffling generator's state, a fingerprint of
// the model and one of the data, and the sepal version (layout: docs/checkpoints.md; readable by
// h5dump and h5py). Datasets carry Fletcher-32 checksums and the file's metadata its own
// checksums, so a damaged file is refused rather than read as garbage. Writes go to a temporary
// file beside the target and are renamed over it, so a crash mid-write leaves the previous
// checkpoint intact.
//
// Thread-safety: HDF5 (Debian's serial build) is not thread-safe: one checkpoint call at a time
// per process.

#include <filesystem>
#include <string>

#include "model/model_config.h"
#include "model/prompt_trainer.h"
#include "model/safetensors.h"

namespace sepal {

/// A checkpoint's contents.
struct TuningCheckpoint {
  TuningSettings settings;
  TuningState state;
  std::string model_fingerprint;  ///< model_fingerprint() of the model it was trained on
  std::string data_fingerprint;   ///< examples_hash() of the training data
  std::string sepal_version;      ///< of the writer
};

/// A hex fingerprint of the model's architecture (its config's shape fields) and its tensors'
/// names and shapes (not their bytes, nor their stored type).
std::string model_fingerprint(const ModelConfig& config, const Checkpoint& checkpoint);

/// Writes `checkpoint` to `path` atomically. Throws sepal::Error naming the path on failure.
void save_tuning_checkpoint(const std::filesystem::path& path, const TuningCheckpoint& checkpoint);

/// Reads a checkpoint. Throws sepal::Error with one line naming the path and the problem for a
/// missing, truncated, damaged or foreign file, or one of another format version.
TuningCheckpoint load_tuning_checkpoint(const std::filesystem::path& path);

/// The sepal version this build writes.
std::string sepal_version();

}  // namespace sepal

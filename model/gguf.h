#pragma once
// Reading GGUF files (llama.cpp's format, versions 2 and 3): the metadata (typed key/values) and
// the tensor directory, over a mapping of the file; tensor bytes stay in the mapping until
// someone touches them. Every count, length and offset is checked against the file before it is
// used, so a malformed file gets one line naming the problem, never a crash or a huge
// allocation.
//
// Thread-safety: a GgufFile is immutable after parsing; any thread may read it.

#include <cstdint>
#include <map>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "model/mapped_file.h"

namespace sepal {

/// ggml's tensor types that sepal reads (values as in the file).
enum class GgmlType : std::uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kIq4_Nl = 20, kIq4_Xs = 23, kBF16 = 30, kMxfp4 = 39,
};

/// The type's name as llama.cpp writes it ("Q4_K"), or "type N" for one sepal does not read.
std::string ggml_type_name(std::uint32_t type);
/// Elements per block and bytes per block of a type sepal reads; false for any other.
bool ggml_block_layout(std::uint32_t type, std::int64_t* elements, std::int64_t* bytes);

/// One metadata value: a scalar, a string, or an array of one of those.
struct GgufValue {
  using Scalar = std::variant<std::uint64_t, std::int64_t, double, bool, std::string>;
  Scalar scalar;
  std::vector<Scalar> array;  ///< the elements when is_array
  bool is_array = false;
};

/// One tensor of a GGUF file: its shape (ggml order: dims[0] is the contiguous one), type, bytes.
struct GgufTensor {
  std::string name;
  std::vector<std::int64_t> dims;
  std::uint32_t type = 0;
  const std::byte* data = nullptr;
  std::size_t bytes = 0;
  std::int64_t elements() const;
};

class GgufFile {
 public:
  /// Parses the mapped file. Throws sepal::Error naming the file and the problem: bad magic, an
  /// unsupported version, counts or lengths that do not fit in the file, an unknown value type,
  /// a tensor of a type sepal does not read, of more than 4 dimensions or whose data lies past
  /// the end, misaligned, or overlapping another.
  static GgufFile parse(std::shared_ptr<const MappedFile> file);
  /// Opens and parses `path`.
  static GgufFile open(const std::filesystem::path& path);

  std::uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::map<std::string, GgufTensor>& tensors() const { return tensors_; }
  const std::shared_ptr<const MappedFile>& file() const { return file_; }
  std::string where() const { return file_->path().string(); }

  // Typed metadata lookups: nullopt when the key is absent; sepal::Error naming the key when it
  // holds another type (integers of any width and sign convert where the value fits).
  std::optional<std::int64_t> integer(const std::string& key) const;
  std::optional<double> number(const std::string& key) const;
  std::optional<std::string> string(const std::string& key) const;
  std::optional<bool> boolean(const std::string& key) const;
  /// An array of strings, numbers or integers; nullopt when absent.
  const std::vector<GgufValue::Scalar>* array(const std::string& key) const;

 private:
  std::shared_ptr<const MappedFile> file_;
  std::uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::map<std::string, GgufTensor> tensors_;
};

/// Whether `path` is a regular file that starts with GGUF's magic.
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace sepal

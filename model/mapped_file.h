#pragma once
// A read-only memory mapping of a whole file. Pages are read from disk only when touched, so a
// process that runs a few blocks of a checkpoint reads only those blocks' bytes.
//
// Thread-safety: immutable after construction; any thread may read the bytes.

#include <cstddef>
#include <filesystem>
#include <memory>
#include <vector>
#include <span>

namespace sepal {

/// A read-only mapped file. Movable, not copyable; unmaps on destruction.
class MappedFile {
 public:
  /// Maps `path`; throws sepal::Error naming the file when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  /// A file's bytes held in memory instead (fuzzers, tests): `name` stands for its path.
  static std::shared_ptr<const MappedFile> in_memory(std::vector<std::byte> bytes, const std::filesystem::path& name);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  /// The whole file.
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  /// The path it was opened with.
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile(std::filesystem::path path, const std::byte* data, std::size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::filesystem::path path_;
  const std::byte* data_;
  std::size_t size_;
  std::vector<std::byte> owned_;  ///< in_memory(): the bytes; empty for a mapping
};

}  // namespace sepal

#pragma once
// The swarm's shared secret and the challenge-response that proves knowledge of it without
// sending it: each side answers the other's random nonce with HMAC-SHA256(secret, purpose|nonces).
//
// Thread-safety: SwarmSecret is immutable; the functions are thread-safe.

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace sepal {

/// A 32-byte random challenge.
using Nonce = std::array<std::uint8_t, 32>;
/// An HMAC-SHA256 tag.
using Proof = std::array<std::uint8_t, 32>;

/// The secret that admits a process into a swarm.
class SwarmSecret {
 public:
  /// From text (at least 16 bytes; kInvalidArgument otherwise).
  static Result<SwarmSecret> from_text(const std::string& text);
  /// From a file's contents, trailing newline removed.
  static Result<SwarmSecret> from_file(const std::filesystem::path& path);
  /// From $SEPAL_SWARM_SECRET, else the file named by $SEPAL_SWARM_SECRET_FILE.
  static Result<SwarmSecret> from_environment();
  /// From `file` when it is not empty, else from_environment().
  static Result<SwarmSecret> from_file_or_environment(const std::string& file);

  /// HMAC-SHA256 over `purpose` and the two nonces.
  Proof prove(const std::string& purpose, const Nonce& first, const Nonce& second) const;
  /// Whether `proof` is what prove() gives, compared in constant time.
  bool verify(const Proof& proof, const std::string& purpose, const Nonce& first, const Nonce& second) const;

 private:
  std::vector<std::uint8_t> key_;
};

/// A fresh nonce from the system's cryptographic random source.
Nonce random_nonce();

}  // namespace sepal

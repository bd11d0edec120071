#include "runtime/swarm_secret.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace sepal {

Result<SwarmSecret> SwarmSecret::from_text(const std::string& text) {
  if (text.size() < 16) {
    return error(StatusCode::kInvalidArgument, "the swarm secret must be at least 16 bytes, got ", text.size());
  }
  SwarmSecret s;
  s.key_.assign(text.begin(), text.end());
  return s;
}

Result<SwarmSecret> SwarmSecret::from_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error(StatusCode::kNotFound, "cannot read the swarm secret file ", path.string());
  std::stringstream text;
  text << in.rdbuf();
  std::string secret = text.str();
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  return from_text(secret);
}

Result<SwarmSecret> SwarmSecret::from_environment() {
  if (const char* s = std::getenv("SEPAL_SWARM_SECRET")) return from_text(s);
  if (const char* f = std::getenv("SEPAL_SWARM_SECRET_FILE")) return from_file(f);
  return error(StatusCode::kNotFound, "no swarm secret: set SEPAL_SWARM_SECRET or SEPAL_SWARM_SECRET_FILE");
}

Result<SwarmSecret> SwarmSecret::from_file_or_environment(const std::string& file) {
  return file.empty() ? from_environment() : from_file(file);
}

Proof SwarmSecret::prove(const std::string& purpose, const Nonce& first, const Nonce& second) const {
  std::vector<std::uint8_t> message(purpose.begin(), purpose.end());
  message.push_back(0);
  message.insert(message.end(), first.begin(), first.end());
  message.insert(message.end(), second.begin(), second.end());
  Proof out{};
  unsigned length = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), message.data(), message.size(), out.data(), &length);
  return out;
}

bool SwarmSecret::verify(const Proof& proof, const std::string& purpose, const Nonce& first, const Nonce& second) const {
  const Proof expected = prove(purpose, first, second);
  return CRYPTO_memcmp(expected.data(), proof.data(), proof.size()) == 0;
}

Nonce random_nonce() {
  Nonce n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) std::abort();  // no entropy: cannot continue safely
  return n;
}

}  // namespace sepal

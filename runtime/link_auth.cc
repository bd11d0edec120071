#include "runtime/link_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

namespace sepal {

struct LinkMac::Context {
  EVP_CIPHER_CTX* header = nullptr;   // AES-256-GCM under the header key
  EVP_CIPHER_CTX* payload = nullptr;  // AES-256-GCM under the payload key
  ~Context() {
    EVP_CIPHER_CTX_free(header);
    EVP_CIPHER_CTX_free(payload);
  }
};

namespace {

// The GMAC nonce: sender (4 bytes), domain (1), sequence (low 7 bytes). Unique per key as long as
// a sender never reuses a sequence number, and the two ends of a link have different ids.
std::array<std::uint8_t, 12> nonce_of(std::uint32_t sender, TagDomain domain, std::uint64_t sequence) {
  std::array<std::uint8_t, 12> iv{};
  for (int i = 0; i < 4; ++i) iv[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(sender >> (8 * i));
  iv[4] = static_cast<std::uint8_t>(domain);
  for (int i = 0; i < 7; ++i) iv[static_cast<std::size_t>(5 + i)] = static_cast<std::uint8_t>(sequence >> (8 * i));
  return iv;
}

[[noreturn]] void crypto_failure(const char* call) {
  // OpenSSL failing on a fixed-size GCM operation means a broken library or no memory: nothing
  // sent or received can be trusted any more.
  std::fprintf(stderr, "sepal: %s failed in frame authentication\n", call);
  std::abort();
}

}  // namespace

namespace {

// An AEAD used over additional data only, keyed with HMAC(key, purpose): each primitive gets a key
// of its own.
EVP_CIPHER_CTX* keyed_aead(const EVP_CIPHER* cipher, const LinkKey& key, std::string_view purpose) {
  const LinkKey subkey = hmac_sha256(key, {reinterpret_cast<const std::uint8_t*>(purpose.data()), purpose.size()});
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  if (!c) crypto_failure("EVP_CIPHER_CTX_new");
  if (EVP_EncryptInit_ex(c, cipher, nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 12, nullptr) != 1 ||
      EVP_EncryptInit_ex(c, nullptr, nullptr, subkey.data(), nullptr) != 1) {
    crypto_failure("EVP_EncryptInit_ex");
  }
  return c;
}

}  // namespace

LinkMac::LinkMac(const LinkKey& key) : context_(std::make_unique<Context>()) {
  context_->header = keyed_aead(EVP_aes_256_gcm(), key, "sepal-mac-header");
  context_->payload = keyed_aead(EVP_aes_256_gcm(), key, "sepal-mac-payload");
}

LinkMac::~LinkMac() = default;

LinkTag LinkMac::tag(std::uint32_t sender, TagDomain domain, std::uint64_t sequence,
                     std::span<const ConstSegment> parts) {
  EVP_CIPHER_CTX* c = domain == TagDomain::kHeader ? context_->header : context_->payload;
  const auto iv = nonce_of(sender, domain, sequence);
  if (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, iv.data()) != 1) crypto_failure("EVP_EncryptInit_ex");
  constexpr std::size_t kStep = std::size_t{1} << 30;  // EVP takes int lengths
  for (const ConstSegment& part : parts) {
    for (std::size_t done = 0; done < part.size; done += kStep) {
      const int n = static_cast<int>(std::min(kStep, part.size - done));
      int out = 0;
      if (EVP_EncryptUpdate(c, nullptr, &out, reinterpret_cast<const unsigned char*>(part.data + done), n) != 1) {
        crypto_failure("EVP_EncryptUpdate");
      }
    }
  }
  unsigned char none[16];
  int out = 0;
  if (EVP_EncryptFinal_ex(c, none, &out) != 1) crypto_failure("EVP_EncryptFinal_ex");
  LinkTag t{};
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(t.size()), t.data()) != 1) {
    crypto_failure("EVP_CTRL_AEAD_GET_TAG");
  }
  return t;
}

bool LinkMac::verify(const LinkTag& expected, std::uint32_t sender, TagDomain domain, std::uint64_t sequence,
                     std::span<const ConstSegment> parts) {
  const LinkTag actual = tag(sender, domain, sequence, parts);
  return CRYPTO_memcmp(actual.data(), expected.data(), actual.size()) == 0;
}

struct KeyedHmac::Context {
  EVP_MAC* algorithm = nullptr;
  EVP_MAC_CTX* keyed = nullptr;
  ~Context() {
    EVP_MAC_CTX_free(keyed);
    EVP_MAC_free(algorithm);
  }
};

KeyedHmac::KeyedHmac(std::span<const std::uint8_t> key) : context_(std::make_unique<Context>()) {
  context_->algorithm = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!context_->algorithm) crypto_failure("EVP_MAC_fetch");
  context_->keyed = EVP_MAC_CTX_new(context_->algorithm);
  if (!context_->keyed) crypto_failure("EVP_MAC_CTX_new");
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  // A null key would mean "the key already set": an empty one needs a pointer all the same.
  static const std::uint8_t kEmpty = 0;
  if (EVP_MAC_init(context_->keyed, key.empty() ? &kEmpty : key.data(), key.size(), params) != 1) {
    crypto_failure("EVP_MAC_init");
  }
}

KeyedHmac::~KeyedHmac() = default;

LinkKey KeyedHmac::mac(std::span<const std::uint8_t> message) {
  // A null key restarts the MAC under the key given at construction.
  if (EVP_MAC_init(context_->keyed, nullptr, 0, nullptr) != 1) crypto_failure("EVP_MAC_init");
  if (EVP_MAC_update(context_->keyed, message.data(), message.size()) != 1) crypto_failure("EVP_MAC_update");
  LinkKey out{};
  std::size_t length = 0;
  if (EVP_MAC_final(context_->keyed, out.data(), &length, out.size()) != 1 || length != out.size()) {
    crypto_failure("EVP_MAC_final");
  }
  return out;
}

LinkKey hmac_sha256(std::span<const std::uint8_t> key, std::span<const std::uint8_t> message) {
  return KeyedHmac(key).mac(message);
}

LinkKey random_link_key() {
  LinkKey k{};
  if (RAND_bytes(k.data(), static_cast<int>(k.size())) != 1) crypto_failure("RAND_bytes");
  return k;
}

LinkKeyAuthority::LinkKeyAuthority() : master_(random_link_key()) {}

LinkKey LinkKeyAuthority::key_for(std::uint32_t a, std::uint32_t b) const {
  const std::uint32_t low = std::min(a, b), high = std::max(a, b);
  std::vector<std::uint8_t> message{'s', 'e', 'p', 'a', 'l', '-', 'l', 'i', 'n', 'k', 0};
  for (std::uint32_t v : {low, high}) {
    for (int i = 0; i < 4; ++i) message.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  return hmac_sha256(master_, message);
}

LinkKey wrap_link_key(const LinkKey& key, const LinkKey& wrapping, std::string_view context) {
  std::vector<std::uint8_t> message{'s', 'e', 'p', 'a', 'l', '-', 'w', 'r', 'a', 'p', 0};
  message.insert(message.end(), context.begin(), context.end());
  const LinkKey pad = hmac_sha256(wrapping, message);
  LinkKey out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = key[i] ^ pad[i];
  return out;
}

}  // namespace sepal

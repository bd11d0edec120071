#include "actors/push_grant.h"

#include <openssl/crypto.h>

namespace sepal {

LinkKey PushGrants::grant_of(const PushGrantScope& s, const LinkKey& key) {
  std::vector<std::uint8_t> message{'s', 'e', 'p', 'a', 'l', '-', 'p', 'u', 's', 'h', 0};
  auto put = [&](std::uint64_t v) {
    for (int i = 0; i < 8; ++i) message.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  };
  put(s.client.peer);
  put(s.client.id);
  put(s.request);
  put(s.session);
  put(static_cast<std::uint64_t>(s.position));
  put(s.tag);
  put(static_cast<std::uint64_t>(s.hop));
  put(s.next ? 1 : 0);
  if (s.next) {
    put(s.next->host.peer);
    put(s.next->host.id);
    put(s.next->session);
  }
  auto keyed = keyed_.find(key);
  if (keyed == keyed_.end()) {
    if (keyed_.size() >= kMaxKeys) keyed_.clear();
    keyed = keyed_.emplace(key, std::make_unique<KeyedHmac>(key)).first;
  }
  return keyed->second->mac(message);
}

std::vector<std::uint8_t> PushGrants::make(const PushGrantScope& scope, const LinkKey& key) {
  const LinkKey g = grant_of(scope, key);
  return {g.begin(), g.end()};
}

bool PushGrants::verify(const std::vector<std::uint8_t>& grant, const PushGrantScope& scope, const LinkKey& key) {
  const LinkKey expected = grant_of(scope, key);
  return grant.size() == expected.size() && CRYPTO_memcmp(grant.data(), expected.data(), expected.size()) == 0;
}

}  // namespace sepal

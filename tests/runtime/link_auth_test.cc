// The link authentication primitives: HMAC-SHA256 (one-shot and keyed once) against RFC 4231's
// test vectors and an empty key, and LinkMac's tags: a tag verifies only for the same sender, domain, sequence and
// bytes, however the bytes are split into segments.
#include "runtime/link_auth.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace sepal {
namespace {

std::span<const std::uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string hex(const LinkKey& k) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::uint8_t b : k) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

struct Rfc4231Case {
  std::vector<std::uint8_t> key;
  std::string data;
  std::string expected;
};

std::vector<Rfc4231Case> rfc4231() {
  return {
      {std::vector<std::uint8_t>(20, 0x0b), "Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {{'J', 'e', 'f', 'e'}, "what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      // A key longer than SHA-256's block is hashed first.
      {std::vector<std::uint8_t>(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      // Not in RFC 4231: an empty key (Python's hmac module gives the same).
      {{}, "abc", "fd7adb152c05ef80dccf50a1fa4c05d5a3ec6da95575fc312ae7c5d091836351"},
  };
}

TEST(LinkAuth, HmacSha256MatchesRfc4231) {
  for (const auto& c : rfc4231()) EXPECT_EQ(hex(hmac_sha256(c.key, bytes_of(c.data))), c.expected) << c.data;
}

TEST(LinkAuth, AKeyedHmacGivesTheSameMacOnEveryUse) {
  for (const auto& c : rfc4231()) {
    KeyedHmac keyed(c.key);
    EXPECT_EQ(hex(keyed.mac(bytes_of(c.data))), c.expected) << c.data;
    // Another message in between must not leave anything behind.
    EXPECT_EQ(keyed.mac(bytes_of("another message")), hmac_sha256(c.key, bytes_of("another message")));
    EXPECT_EQ(hex(keyed.mac(bytes_of(c.data))), c.expected) << c.data;
    EXPECT_EQ(keyed.mac({}), hmac_sha256(c.key, {}));
  }
}

TEST(LinkAuth, ATagVerifiesOnlyForItsSenderDomainSequenceAndBytes) {
  const LinkKey key = random_link_key();
  LinkMac sender(key), receiver(key), stranger(random_link_key());
  std::vector<std::byte> data(777);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 7 + 3);
  const ConstSegment whole{data.data(), data.size()};
  for (TagDomain domain : {TagDomain::kHeader, TagDomain::kPayload}) {
    const LinkTag t = sender.tag(5, domain, 42, {&whole, 1});
    EXPECT_TRUE(receiver.verify(t, 5, domain, 42, {&whole, 1}));
    // The same bytes in three segments.
    const ConstSegment parts[] = {{data.data(), 100}, {data.data() + 100, 0}, {data.data() + 100, data.size() - 100}};
    EXPECT_TRUE(receiver.verify(t, 5, domain, 42, parts));
    EXPECT_FALSE(receiver.verify(t, 6, domain, 42, {&whole, 1}));
    EXPECT_FALSE(receiver.verify(t, 5, domain, 43, {&whole, 1}));
    EXPECT_FALSE(receiver.verify(t, 5, domain == TagDomain::kHeader ? TagDomain::kPayload : TagDomain::kHeader, 42, {&whole, 1}));
    EXPECT_FALSE(stranger.verify(t, 5, domain, 42, {&whole, 1}));
    std::vector<std::byte> changed = data;
    changed[500] ^= std::byte{1};
    const ConstSegment other{changed.data(), changed.size()};
    EXPECT_FALSE(receiver.verify(t, 5, domain, 42, {&other, 1}));
    const ConstSegment shorter{data.data(), data.size() - 1};
    EXPECT_FALSE(receiver.verify(t, 5, domain, 42, {&shorter, 1}));
  }
}

}  // namespace
}  // namespace sepal

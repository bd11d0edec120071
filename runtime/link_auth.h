#pragma once
// Authentication of the frames between two members. Each pair of members shares a link key that
// only they and the coordinator know (LinkKeyAuthority derives it from a master key that never
// leaves the coordinator); every message on the link carries a 16-byte tag under that key, so the
// receiver knows which member sent it. The MAC was chosen by measurement (bench/link_mac_bench.cc):
// GMAC (AES-256-GCM over additional data only), for headers (48 bytes) and payloads alike, under
// a key of its own for each. On this machine's OpenSSL 3.0.19 (AES and carry-less multiplies on
// 512-bit vectors) it is the fastest at every size: 167 ns for a header, 391 ns for 4 KiB and
// 17.1 GB/s at 1 MiB, against 476 ns, 761 ns and 14.8 GB/s for ChaCha20-Poly1305 (which
// authenticated payloads until an earlier measurement, 12.7 against 8.1 GB/s, stopped holding)
// and 154 ns, 2259 ns and 1.9 GB/s for HMAC-SHA256. The nonce never repeats under a key:
// (sender id, domain, sequence number), each sender numbering its messages on a link from 1
// upwards.
//
// Keys travel wrapped (wrap_link_key) under a key the recipient already shares with the sender.
//
// Thread-safety: LinkKeyAuthority is immutable and thread-safe; a LinkMac is used by one thread
// at a time (the transport's progress thread).

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "runtime/buffer.h"
#include "runtime/status.h"

namespace sepal {

/// A 256-bit key shared by the two ends of a link.
using LinkKey = std::array<std::uint8_t, 32>;
/// A message's authentication tag.
using LinkTag = std::array<std::uint8_t, 16>;

/// What a tag covers, so a tag made for one purpose never verifies for another.
enum class TagDomain : std::uint8_t { kHeader = 1, kPayload = 2 };

/// Computes and checks GMAC tags under one link key.
class LinkMac {
 public:
  explicit LinkMac(const LinkKey& key);
  ~LinkMac();
  LinkMac(const LinkMac&) = delete;
  LinkMac& operator=(const LinkMac&) = delete;

  /// The tag of `parts` (concatenated) sent by `sender` as its message `sequence`.
  LinkTag tag(std::uint32_t sender, TagDomain domain, std::uint64_t sequence,
              std::span<const ConstSegment> parts);
  /// Whether `expected` is the tag of `parts`, compared in constant time.
  bool verify(const LinkTag& expected, std::uint32_t sender, TagDomain domain, std::uint64_t sequence,
              std::span<const ConstSegment> parts);

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

/// Derives every link key of a swarm from a random master key held by the coordinator.
class LinkKeyAuthority {
 public:
  /// A fresh master key from the system's cryptographic random source.
  LinkKeyAuthority();
  /// The key of the link between `a` and `b` (the same for (b, a)).
  LinkKey key_for(std::uint32_t a, std::uint32_t b) const;

 private:
  LinkKey master_{};
};

/// Encrypts `key` for a recipient that shares `wrapping` with the sender; `context` names the
/// use (which link the key is for), so a wrapped key cannot be replayed for another link.
LinkKey wrap_link_key(const LinkKey& key, const LinkKey& wrapping, std::string_view context);
/// Inverse of wrap_link_key.
inline LinkKey unwrap_link_key(const LinkKey& wrapped, const LinkKey& wrapping, std::string_view context) {
  return wrap_link_key(wrapped, wrapping, context);
}

/// HMAC-SHA256 under one key (any length, empty included), keyed once. OpenSSL 3's one-shot
/// HMAC() looks the algorithm up and keys it on every call: 1.1 µs here with warm caches and 11.9
/// after a 64 MiB sweep of them (as in an actor after a forward pass), where a keyed object takes
/// 0.2 and 4.8 µs a message (push grants, made and checked on every step of a swarm, use one per
/// link).
/// Thread-safety: one thread at a time.
class KeyedHmac {
 public:
  explicit KeyedHmac(std::span<const std::uint8_t> key);
  ~KeyedHmac();
  KeyedHmac(const KeyedHmac&) = delete;
  KeyedHmac& operator=(const KeyedHmac&) = delete;

  /// HMAC-SHA256 of `message` under the key.
  LinkKey mac(std::span<const std::uint8_t> message);

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

/// HMAC-SHA256 of `message` under `key`, once (key derivation; KeyedHmac for many messages).
LinkKey hmac_sha256(std::span<const std::uint8_t> key, std::span<const std::uint8_t> message);

/// A key made of fresh random bytes.
LinkKey random_link_key();

}  // namespace sepal

#pragma once
// A client's permission for one hop of a host-to-host push. A host that receives a PushStep from
// another host (not from the session's owner) runs it only with a grant that the owning client
// made under the key of its link to this host, over the hop's session, position, attempt, request
// and the one target it may forward to. So a member cannot push into another client's session,
// nor make a host forward anywhere the client did not name. Transports without link keys (one MPI
// job, in-process tests) carry no grants: their channel admits no outsider.
//
// Thread-safety: a PushGrants is used by one thread at a time (its actor's).

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "actors/protocol/block_host.h"
#include "runtime/link_auth.h"

namespace sepal {

/// What a grant covers: hop `hop` of push `request` at `position`, attempt `tag`, on the client's
/// `session` at the granted host, forwarding to `next` (nullopt: the last hop).
struct PushGrantScope {
  ActorAddress client;  ///< the client driver that receives the outputs
  std::uint64_t request = 0;
  std::uint64_t session = 0;
  std::int64_t position = 0;
  std::uint64_t tag = 0;
  std::int64_t hop = 0;
  std::optional<PushTarget> next;
};

/// Makes and checks grants (HMAC-SHA256 under the link key), each key's HMAC keyed once: a client
/// makes one grant per later hop of every step, and a host checks one per step pushed to it.
class PushGrants {
 public:
  /// The grant for `scope` under `key` (the client's link key with the granted host).
  std::vector<std::uint8_t> make(const PushGrantScope& scope, const LinkKey& key);
  /// Whether `grant` is the one make() gives for `scope` and `key` (constant-time comparison).
  bool verify(const std::vector<std::uint8_t>& grant, const PushGrantScope& scope, const LinkKey& key);

  /// The most keys kept keyed; past it, all are dropped and keyed again as used.
  static constexpr std::size_t kMaxKeys = 256;

 private:
  LinkKey grant_of(const PushGrantScope& scope, const LinkKey& key);
  std::map<LinkKey, std::unique_ptr<KeyedHmac>> keyed_;
};

}  // namespace sepal

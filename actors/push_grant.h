#pragma once
// A client's permission for one hop of a host-to-host push. A host that receives a PushStep from
// another host (not from the session's owner) runs it only with a grant that the owning client
// made under the key of its link to this host, over the hop's session, position, attempt, request
// and the one target it may forward to. So a member cannot push into another client's session,
// nor make a host forward anywhere the client did not name. Transports without link keys (one MPI
// job, in-process tests) carry no grants: their channel admits no outsider.
//
// Thread-safety: pure functions.

#include <cstdint>
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

/// The grant for `scope` under `key` (the client's link key with the granted host).
std::vector<std::uint8_t> make_push_grant(const PushGrantScope& scope, const LinkKey& key);
/// Whether `grant` is the one make_push_grant gives (constant-time comparison).
bool verify_push_grant(const std::vector<std::uint8_t>& grant, const PushGrantScope& scope, const LinkKey& key);

}  // namespace sepal

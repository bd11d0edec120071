#pragma once
// The join handshake's messages (runtime/swarm_join.h), sent over the join connection
// before the joiner is a member: everything in them is untrusted until the proofs check out.

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/membership.h"
#include "runtime/wire.h"

namespace sepal {

/// The join protocol's version, and with it the links' authentication: a joiner of another build
/// is refused here, where a member whose tags its peers cannot verify would only be dropped frame
/// by frame. 3: payload tags are GMAC (runtime/link_auth.h).
inline constexpr std::uint16_t kJoinVersion = 3;

/// Coordinator -> joiner: prove you know the secret (a fresh nonce).
struct JoinChallenge {
  static constexpr std::uint16_t kTypeId = 0x0210;
  std::uint16_t version = kJoinVersion;
  std::vector<std::uint8_t> nonce;
  SEPAL_FIELDS(version, nonce)
};
/// Joiner -> coordinator: its proof over the challenge, its own nonce, role and origin.
struct JoinRequest {
  static constexpr std::uint16_t kTypeId = 0x0211;
  std::vector<std::uint8_t> proof;
  std::vector<std::uint8_t> nonce;
  std::string role;
  std::string origin;
  SEPAL_FIELDS(proof, nonce, role, origin)
};
/// Coordinator -> joiner: admitted or not, its id, the members and the wrapped link keys.
struct JoinWelcome {
  static constexpr std::uint16_t kTypeId = 0x0212;
  bool admitted = false;
  std::string reason;
  std::vector<std::uint8_t> proof;  ///< over every other field (welcome_purpose)
  PeerId assigned = 0;
  std::vector<MemberInfo> members;
  /// For each member, the key of its link with the joiner, wrapped (wrap_context).
  std::vector<std::vector<std::uint8_t>> wrapped_keys;
  SEPAL_FIELDS(admitted, reason, proof, assigned, members, wrapped_keys)
};
/// Joiner -> coordinator: its transport address once it has its id.
struct JoinAddress {
  static constexpr std::uint16_t kTypeId = 0x0213;
  std::vector<std::uint8_t> address;
  SEPAL_FIELDS(address)
};

}  // namespace sepal

#include "runtime/swarm_join.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "runtime/join_messages.h"
#include "runtime/log.h"
#include "runtime/mpi_environment.h"

namespace sepal {
namespace {

template <typename T>
bool to_array(const std::vector<std::uint8_t>& v, std::array<std::uint8_t, 32>* out) {
  if (v.size() != out->size()) return false;
  std::copy(v.begin(), v.end(), out->begin());
  return true;
}

std::vector<std::uint8_t> to_vector(const std::array<std::uint8_t, 32>& a) { return {a.begin(), a.end()}; }

// Sends a handshake message, giving up after the timeout (a joiner that stops reading must not
// block the coordinator).
template <typename M>
Status send_message(JoinConnection& link, const M& message, std::chrono::milliseconds timeout) {
  return link.send(*encode(Envelope{}, message).flatten(), timeout);
}

// Receives and decodes one handshake message (untrusted: size-bounded and bounds-checked).
template <typename M>
Result<M> receive_message(JoinConnection& link, std::chrono::milliseconds timeout) {
  auto frame = link.receive(timeout);
  if (!frame.is_ok()) return frame.status();
  return decode_message<M>(std::move(frame).value());
}

// The purpose the welcome's proof is made for: it names a digest of the whole welcome (proof
// field empty), so the assigned id, the member list and the keys cannot be changed in transit.
std::string welcome_purpose(JoinWelcome welcome) {
  welcome.proof.clear();
  const auto bytes = encode(Envelope{}, welcome).flatten();
  const auto* data = reinterpret_cast<const std::uint8_t*>(bytes->data());
  static constexpr std::uint8_t kDigestKey[] = {'s', 'e', 'p', 'a', 'l'};
  const LinkKey digest = hmac_sha256(kDigestKey, {data, bytes->size()});
  std::string purpose = "sepal-welcome:";
  for (std::uint8_t b : digest) {
    static const char* kHex = "0123456789abcdef";
    purpose += kHex[b >> 4];
    purpose += kHex[b & 15];
  }
  return purpose;
}

// Both sides derive the key that wraps the link keys in the welcome from the secret and the two
// nonces: it never travels, and a different joining gives a different key.
LinkKey welcome_wrapping_key(const SwarmSecret& secret, const Nonce& coordinator, const Nonce& joiner) {
  return secret.prove("sepal-key-wrap", coordinator, joiner);
}

std::string wrap_context(PeerId joiner, PeerId member) {
  return "welcome:" + std::to_string(joiner) + ":" + std::to_string(member);
}

std::string this_origin() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + ":" + std::to_string(getpid());
}

}  // namespace

Result<MemberInfo> admit_joiner(JoinConnection& link, const SwarmSecret& secret, const LinkKeyAuthority& keys,
                                Membership& membership, const std::string& origin, JoinOptions options) {
  std::string who = origin;  // the joiner's own word for itself once it has answered
  auto refuse = [&](const std::string& reason, StatusCode code) -> Status {
    JoinWelcome no;
    no.admitted = false;
    no.reason = reason;
    (void)send_message(link, no, options.step_timeout);
    return error(code, "refused the join of ", who, ": ", reason);
  };
  auto failed = [&](const Status& why) -> Status {
    return error(why.code(), "the join of ", who, " failed: ", why.message());
  };
  const Nonce ours = random_nonce();
  if (Status s = send_message(link, JoinChallenge{kJoinVersion, to_vector(ours)}, options.step_timeout); !s.is_ok()) {
    return failed(s);
  }
  auto request = receive_message<JoinRequest>(link, options.step_timeout);
  if (!request.is_ok()) return refuse("no valid answer to the challenge (" + request.status().message() + ")",
                                      request.status().code());
  if (!request->origin.empty()) who = request->origin + " (" + origin + ")";
  Nonce theirs{};
  Proof proof{};
  if (!to_array<Nonce>(request->nonce, &theirs) || !to_array<Proof>(request->proof, &proof)) {
    return refuse("malformed challenge answer", StatusCode::kMalformed);
  }
  if (!secret.verify(proof, "sepal-join", ours, theirs)) {
    return refuse("wrong swarm secret (challenge answer did not verify)", StatusCode::kRefused);
  }
  JoinWelcome welcome;
  welcome.admitted = true;
  welcome.assigned = membership.allocate_peer_id();
  welcome.members = membership.alive();
  const LinkKey wrapping = welcome_wrapping_key(secret, ours, theirs);
  for (const MemberInfo& m : welcome.members) {
    const LinkKey wrapped = wrap_link_key(keys.key_for(welcome.assigned, m.peer), wrapping, wrap_context(welcome.assigned, m.peer));
    welcome.wrapped_keys.emplace_back(wrapped.begin(), wrapped.end());
  }
  welcome.proof = to_vector(secret.prove(welcome_purpose(welcome), theirs, ours));
  if (Status s = send_message(link, welcome, options.step_timeout); !s.is_ok()) return failed(s);
  auto address = receive_message<JoinAddress>(link, options.step_timeout);
  if (!address.is_ok()) return failed(address.status());
  const MemberInfo member{welcome.assigned, request->role, address->address};
  SEPAL_RETURN_IF_ERROR(membership.admit(member, keys));
  log(LogLevel::kInfo, "admitted ", who, " as member ", member.peer, " (", member.role, ")");
  return member;
}

Result<JoinResult> join_swarm(JoinConnection& link, const SwarmSecret& secret, const std::string& role,
                              const std::function<Result<std::vector<std::uint8_t>>(PeerId)>& make_address,
                              JoinOptions options) {
  auto challenge = receive_message<JoinChallenge>(link, options.step_timeout);
  if (!challenge.is_ok()) return challenge.status();
  Nonce theirs{};
  if (challenge->version != kJoinVersion || !to_array<Nonce>(challenge->nonce, &theirs)) {
    return error(StatusCode::kMalformed, "the swarm speaks join protocol version ", challenge->version,
                 ", this build speaks ", kJoinVersion);
  }
  const Nonce ours = random_nonce();
  JoinRequest request{to_vector(secret.prove("sepal-join", theirs, ours)), to_vector(ours), role, this_origin()};
  SEPAL_RETURN_IF_ERROR(send_message(link, request, options.step_timeout));
  auto welcome = receive_message<JoinWelcome>(link, options.step_timeout);
  if (!welcome.is_ok()) return welcome.status();
  if (!welcome->admitted) return error(StatusCode::kRefused, "refused: ", welcome->reason);
  Proof proof{};
  if (!to_array<Proof>(welcome->proof, &proof) || !secret.verify(proof, welcome_purpose(welcome.value()), ours, theirs)) {
    return error(StatusCode::kRefused, "the swarm could not prove that it knows the secret (or the welcome was altered)");
  }
  if (welcome->wrapped_keys.size() != welcome->members.size()) {
    return error(StatusCode::kMalformed, "the welcome holds ", welcome->wrapped_keys.size(), " link keys for ",
                 welcome->members.size(), " members");
  }
  std::vector<LinkKey> keys;
  const LinkKey wrapping = welcome_wrapping_key(secret, theirs, ours);
  for (std::size_t i = 0; i < welcome->members.size(); ++i) {
    LinkKey wrapped{};
    if (!to_array<LinkKey>(welcome->wrapped_keys[i], &wrapped)) {
      return error(StatusCode::kMalformed, "a link key in the welcome is not ", wrapped.size(), " bytes");
    }
    keys.push_back(unwrap_link_key(wrapped, wrapping, wrap_context(welcome->assigned, welcome->members[i].peer)));
  }
  auto address = make_address(welcome->assigned);
  if (!address.is_ok()) return address.status();
  SEPAL_RETURN_IF_ERROR(send_message(link, JoinAddress{address.value()}, options.step_timeout));
  JoinResult result{welcome->assigned, welcome->members, std::move(keys)};
  result.members.push_back(MemberInfo{welcome->assigned, role, address.value()});
  result.keys.push_back(LinkKey{});
  return result;
}

Result<std::vector<MemberInfo>> exchange_members(MPI_Comm comm, const std::string& role, const Transport& transport) {
  int rank = 0, size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const auto address = transport.address();
  MemberInfo self{static_cast<PeerId>(rank), role,
                  {reinterpret_cast<const std::uint8_t*>(address.data()),
                   reinterpret_cast<const std::uint8_t*>(address.data()) + address.size()}};
  const auto mine = encode(Envelope{}, JoinWelcome{true, "", {}, 0, {self}, {}}).flatten();
  auto records = mpi_allgather_bytes(comm, mine->bytes());
  if (!records.is_ok()) return records.status();
  std::vector<MemberInfo> members;
  for (int r = 0; r < size; ++r) {
    const auto& record = records.value()[static_cast<std::size_t>(r)];
    auto frame = Buffer::allocate(record.size());
    std::memcpy(frame->data(), record.data(), record.size());
    auto decoded = decode_message<JoinWelcome>(std::shared_ptr<const Buffer>(frame));
    if (!decoded.is_ok() || decoded->members.size() != 1) return error(StatusCode::kMalformed, "bad member record from rank ", r);
    members.push_back(decoded->members[0]);
  }
  return members;
}

}  // namespace sepal

#include "runtime/swarm_join.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>

#include "runtime/join_messages.h"
#include "runtime/log.h"
#include "runtime/mpi_environment.h"

namespace sepal {
namespace {

constexpr int kJoinTag = 7401;
constexpr std::size_t kMaxHandshakeBytes = 1 << 20;

template <typename T>
bool to_array(const std::vector<std::uint8_t>& v, std::array<std::uint8_t, 32>* out) {
  if (v.size() != out->size()) return false;
  std::copy(v.begin(), v.end(), out->begin());
  return true;
}

std::vector<std::uint8_t> to_vector(const std::array<std::uint8_t, 32>& a) { return {a.begin(), a.end()}; }

// Sends a handshake message, giving up after the deadline (a joiner that stops reading must not
// block the coordinator).
template <typename M>
Status send_message(MPI_Comm comm, const M& message, std::chrono::milliseconds timeout) {
  auto frame = encode(Envelope{}, message).flatten();
  MPI_Request request;
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Isend(frame->data(), static_cast<int>(frame->size()), MPI_BYTE, 0, kJoinTag, comm, &request));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int done = 0;
  while (!done) {
    SEPAL_MPI_RETURN_IF_ERROR(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) break;
    if (std::chrono::steady_clock::now() > deadline) {
      MPI_Cancel(&request);
      MPI_Request_free(&request);
      return error(StatusCode::kTimeout, "the other side did not take the handshake message in time");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return Status::ok();
}

// Receives and decodes one handshake message (untrusted: size-bounded and bounds-checked).
template <typename M>
Result<M> receive_message(MPI_Comm comm, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MPI_Status status;
  int flag = 0;
  while (true) {
    SEPAL_MPI_RETURN_IF_ERROR(MPI_Iprobe(0, kJoinTag, comm, &flag, &status));
    if (flag) break;
    if (std::chrono::steady_clock::now() > deadline) {
      return error(StatusCode::kTimeout, "no handshake message within ", timeout.count(), " ms");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  if (count < 0 || static_cast<std::size_t>(count) > kMaxHandshakeBytes) {
    std::vector<std::byte> sink(static_cast<std::size_t>(std::max(count, 0)));
    MPI_Recv(sink.data(), count, MPI_BYTE, 0, kJoinTag, comm, MPI_STATUS_IGNORE);
    return error(StatusCode::kMalformed, "handshake message of ", count, " bytes is too large");
  }
  auto frame = Buffer::allocate(static_cast<std::size_t>(count));
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Recv(frame->data(), count, MPI_BYTE, 0, kJoinTag, comm, MPI_STATUS_IGNORE));
  return decode_message<M>(std::shared_ptr<const Buffer>(frame));
}

// MPI_Comm_disconnect is collective: a joiner that stops cooperating would block us in it forever,
// so it runs on a thread of its own and is abandoned if the other side never comes.
void disconnect(MPI_Comm& comm) {
  if (comm == MPI_COMM_NULL) return;
  std::thread([c = comm]() mutable { MPI_Comm_disconnect(&c); }).detach();
  comm = MPI_COMM_NULL;
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

Result<MemberInfo> admit_joiner(MPI_Comm intercomm, const SwarmSecret& secret, const LinkKeyAuthority& keys,
                                Membership& membership, const std::string& origin, JoinOptions options) {
  MPI_Comm_set_errhandler(intercomm, MPI_ERRORS_RETURN);
  std::string who = origin;  // the joiner's own word for itself once it has answered
  auto refuse = [&](const std::string& reason, StatusCode code) -> Status {
    JoinWelcome no;
    no.admitted = false;
    no.reason = reason;
    (void)send_message(intercomm, no, options.step_timeout);
    disconnect(intercomm);
    return error(code, "refused the join of ", who, ": ", reason);
  };
  auto failed = [&](const Status& why) -> Status {
    disconnect(intercomm);
    return error(why.code(), "the join of ", who, " failed: ", why.message());
  };
  const Nonce ours = random_nonce();
  if (Status s = send_message(intercomm, JoinChallenge{kJoinVersion, to_vector(ours)}, options.step_timeout); !s.is_ok()) {
    return failed(s);
  }
  auto request = receive_message<JoinRequest>(intercomm, options.step_timeout);
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
  if (Status s = send_message(intercomm, welcome, options.step_timeout); !s.is_ok()) return failed(s);
  auto address = receive_message<JoinAddress>(intercomm, options.step_timeout);
  if (!address.is_ok()) return failed(address.status());
  disconnect(intercomm);
  const MemberInfo member{welcome.assigned, request->role, address->address};
  SEPAL_RETURN_IF_ERROR(membership.admit(member, keys));
  log(LogLevel::kInfo, "admitted ", who, " as member ", member.peer, " (", member.role, ")");
  return member;
}

Result<JoinResult> join_swarm(MPI_Comm intercomm, const SwarmSecret& secret, const std::string& role,
                              const std::function<Result<std::vector<std::uint8_t>>(PeerId)>& make_address,
                              JoinOptions options) {
  MPI_Comm_set_errhandler(intercomm, MPI_ERRORS_RETURN);
  auto challenge = receive_message<JoinChallenge>(intercomm, options.step_timeout);
  if (!challenge.is_ok()) {
    disconnect(intercomm);
    return challenge.status();
  }
  Nonce theirs{};
  if (challenge->version != kJoinVersion || !to_array<Nonce>(challenge->nonce, &theirs)) {
    disconnect(intercomm);
    return error(StatusCode::kMalformed, "the swarm speaks join protocol version ", challenge->version,
                 ", this build speaks ", kJoinVersion);
  }
  const Nonce ours = random_nonce();
  JoinRequest request{to_vector(secret.prove("sepal-join", theirs, ours)), to_vector(ours), role, this_origin()};
  if (Status s = send_message(intercomm, request, options.step_timeout); !s.is_ok()) {
    disconnect(intercomm);
    return s;
  }
  auto welcome = receive_message<JoinWelcome>(intercomm, options.step_timeout);
  if (!welcome.is_ok()) {
    disconnect(intercomm);
    return welcome.status();
  }
  if (!welcome->admitted) {
    disconnect(intercomm);
    return error(StatusCode::kRefused, "refused: ", welcome->reason);
  }
  Proof proof{};
  if (!to_array<Proof>(welcome->proof, &proof) || !secret.verify(proof, welcome_purpose(welcome.value()), ours, theirs)) {
    disconnect(intercomm);
    return error(StatusCode::kRefused, "the swarm could not prove that it knows the secret (or the welcome was altered)");
  }
  if (welcome->wrapped_keys.size() != welcome->members.size()) {
    disconnect(intercomm);
    return error(StatusCode::kMalformed, "the welcome holds ", welcome->wrapped_keys.size(), " link keys for ",
                 welcome->members.size(), " members");
  }
  std::vector<LinkKey> keys;
  const LinkKey wrapping = welcome_wrapping_key(secret, theirs, ours);
  for (std::size_t i = 0; i < welcome->members.size(); ++i) {
    LinkKey wrapped{};
    if (!to_array<LinkKey>(welcome->wrapped_keys[i], &wrapped)) {
      disconnect(intercomm);
      return error(StatusCode::kMalformed, "a link key in the welcome is not ", wrapped.size(), " bytes");
    }
    keys.push_back(unwrap_link_key(wrapped, wrapping, wrap_context(welcome->assigned, welcome->members[i].peer)));
  }
  auto address = make_address(welcome->assigned);
  if (!address.is_ok()) {
    disconnect(intercomm);
    return address.status();
  }
  Status sent = send_message(intercomm, JoinAddress{address.value()}, options.step_timeout);
  disconnect(intercomm);
  SEPAL_RETURN_IF_ERROR(sent);
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

Result<std::unique_ptr<JoinListener>> JoinListener::open(const std::string& port_file,
                                                         std::function<void(MPI_Comm)> on_connect) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  std::unique_ptr<JoinListener> listener(new JoinListener());
  char port[MPI_MAX_PORT_NAME] = {};
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Open_port(MPI_INFO_NULL, port));
  listener->port_ = port;
  listener->port_file_ = port_file;
  const std::string tmp = port_file + ".tmp";
  {
    std::ofstream out(tmp);
    out << port << "\n";
    if (!out) return error(StatusCode::kUnavailable, "cannot write the port file ", port_file);
  }
  std::filesystem::rename(tmp, port_file);  // readers never see a half-written name
  JoinListener* self = listener.get();
  listener->thread_ = std::thread([self, on_connect = std::move(on_connect)] {
    while (!self->closing_.load()) {
      MPI_Comm inter = MPI_COMM_NULL;
      const int rc = MPI_Comm_accept(self->port_.c_str(), MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter);
      if (self->closing_.load()) {
        if (rc == MPI_SUCCESS) disconnect(inter);
        return;
      }
      if (rc != MPI_SUCCESS) {
        log(LogLevel::kWarn, mpi_status(rc, "MPI_Comm_accept").to_string());
        continue;
      }
      on_connect(inter);
    }
  });
  return listener;
}

JoinListener::~JoinListener() {
  // MPI cannot interrupt MPI_Comm_accept (there is no non-blocking accept, and connecting to our
  // own port from this process hangs with Open MPI 4.1): the accepting thread is left blocked and
  // ends with the process; connections it accepts from now on are dropped.
  closing_ = true;
  if (thread_.joinable()) thread_.detach();
  std::error_code ec;
  std::filesystem::remove(port_file_, ec);
}

Result<MPI_Comm> connect_to_swarm(const std::string& port_file, std::chrono::milliseconds timeout) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string port;
  while (port.empty()) {
    std::ifstream in(port_file);
    if (in) std::getline(in, port);
    if (!port.empty()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      return error(StatusCode::kTimeout, "no swarm port in ", port_file, " after ", timeout.count(), " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Port names are the MPI library's own; any of them is one word of printable characters.
  const bool printable_word = std::all_of(port.begin(), port.end(), [](char c) { return c > ' ' && c < 127; });
  if (!printable_word || port.size() >= MPI_MAX_PORT_NAME) {
    return error(StatusCode::kInvalidArgument, port_file, " does not hold an MPI port name (its first line has ",
                 printable_word ? "too many characters" : "spaces or unprintable characters",
                 "): give the port file of a running swarm (sepal generate --listen, slurm/swarm.sbatch)");
  }
  auto promise = std::make_shared<std::promise<std::pair<int, MPI_Comm>>>();
  auto future = promise->get_future();
  std::thread([promise, port] {
    MPI_Comm inter = MPI_COMM_NULL;
    const int rc = MPI_Comm_connect(port.c_str(), MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter);
    promise->set_value({rc, inter});
  }).detach();
  const auto left = std::max(std::chrono::milliseconds(1000), std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
  if (future.wait_for(left) != std::future_status::ready) {
    return error(StatusCode::kTimeout, "MPI_Comm_connect to ", port_file, " did not complete (is ompi-server shared by both jobs?)");
  }
  const auto [rc, inter] = future.get();
  if (const Status failed = mpi_status(rc, "MPI_Comm_connect"); !failed.is_ok()) {
    return error(StatusCode::kInvalidArgument, failed.message(), " (does ", port_file,
                 " hold the port of a running swarm, and does this job use its ompi-server?)");
  }
  return inter;
}

}  // namespace sepal

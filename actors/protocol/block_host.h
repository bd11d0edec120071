#pragma once
// What a block host accepts and answers. A host serves blocks [first, last) of one model; a
// client opens an inference session (a KV cache on the host), steps hidden states through the
// host's blocks, may roll the session back (speculation), and closes it.
//
// Hidden states travel as f32 tensors [n, hidden_size]; positions are implicit: a step continues
// at the session's current length.

#include <cstdint>
#include <string>

#include "runtime/actor.h"
#include "runtime/tensor_payload.h"

namespace sepal {

/// Well-known actor id of the block host in a host process.
inline constexpr std::uint32_t kBlockHostActorId = 3;

struct HostInfoReply {
  static constexpr std::uint16_t kTypeId = 0x0401;
  std::string model;            ///< the model folder's name
  std::int64_t first = 0;       ///< first block served
  std::int64_t last = 0;        ///< one past the last block served
  std::int64_t hidden_size = 0;
  double tokens_per_second = 0;  ///< measured throughput of these blocks at batch 1
  std::int64_t sessions = 0;     ///< open sessions
  std::int64_t cache_bytes_free = 0;
  SEPAL_FIELDS(model, first, last, hidden_size, tokens_per_second, sessions, cache_bytes_free)
};
struct HostInfo {
  static constexpr std::uint16_t kTypeId = 0x0402;
  using Reply = HostInfoReply;
  SEPAL_FIELDS()
};

struct SessionOpened {
  static constexpr std::uint16_t kTypeId = 0x0403;
  std::uint64_t session = 0;
  std::int64_t cache_bytes = 0;
  SEPAL_FIELDS(session, cache_bytes)
};
/// Opens a session of up to `max_length` positions. Refused (kResourceExhausted) when its cache
/// would not fit in the host's budget.
struct OpenSession {
  static constexpr std::uint16_t kTypeId = 0x0404;
  using Reply = SessionOpened;
  std::uint64_t session = 0;  ///< chosen by the client; unique per client
  std::int64_t max_length = 0;
  SEPAL_FIELDS(session, max_length)
};

struct StepResult {
  static constexpr std::uint16_t kTypeId = 0x0405;
  std::int64_t length = 0;  ///< the session's length after the step
  TensorPayload hidden;     ///< f32 [n, hidden_size]
  SEPAL_FIELDS(length, hidden)
};
/// Runs hidden states for the next n positions through the host's blocks. `position` must equal
/// the session's current length (a client that lost track gets an error, not garbage).
struct Step {
  static constexpr std::uint16_t kTypeId = 0x0406;
  using Reply = StepResult;
  std::uint64_t session = 0;
  std::int64_t position = 0;
  TensorPayload hidden;  ///< f32 [n, hidden_size]
  SEPAL_FIELDS(session, position, hidden)
};

struct SessionState {
  static constexpr std::uint16_t kTypeId = 0x0407;
  std::uint64_t session = 0;
  std::int64_t length = 0;
  SEPAL_FIELDS(session, length)
};
/// Forgets positions from `length` on.
struct Rollback {
  static constexpr std::uint16_t kTypeId = 0x0408;
  using Reply = SessionState;
  std::uint64_t session = 0;
  std::int64_t length = 0;
  SEPAL_FIELDS(session, length)
};
/// Frees the session.
struct CloseSession {
  static constexpr std::uint16_t kTypeId = 0x0409;
  using Reply = SessionState;
  std::uint64_t session = 0;
  SEPAL_FIELDS(session)
};

/// One-way: the swarm is done; the host process may exit.
struct Shutdown {
  static constexpr std::uint16_t kTypeId = 0x040A;
  std::string reason;
  SEPAL_FIELDS(reason)
};

struct BlockHostProtocol {
  using accepts = Accepts<HostInfo, OpenSession, Step, Rollback, CloseSession, Shutdown>;
};

}  // namespace sepal

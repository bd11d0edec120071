#pragma once
// What a block host accepts and answers. A host serves blocks [first, last) of one model; a
// client opens an inference session (a KV cache on the host), steps hidden states through the
// host's blocks, may roll the session back (speculation), and closes it.
//
// Hidden states travel as f32 tensors [n, hidden_size]. A step names the position it starts at,
// which must be the session's current length.
//
// Token trees (speculative decoding): a step with `parents` runs its n rows as the nodes of a
// token tree after the session's sequence (node i attends to the sequence and to its ancestors;
// parents[i] is an earlier node, or -1 for a root); the session's length does not change and the
// host holds the tree until the next step. That step (of either kind) may name a path of it in
// `keep` (a root, then each node's child): the host first appends those nodes' keys and values to
// the sequence, in place, and forgets the rest of the tree. Its `position` is then the length
// after the keep. Rollback forgets a held tree too.
//
// Two ways to run a route of several hosts:
//   - client relay: the client sends Step to each host in turn and gets each result back;
//   - host-to-host push: the client sends PushStep to the first host, each host forwards its
//     output to the next one, and every host also sends its output to the client's receiver
//     (PushedOutput), so the client keeps each hop's inputs for replay after a failure.
// Steps and rollbacks carry the client's attempt tag: a host ignores a step from an attempt older
// than the newest it has seen for the session, so a retry cannot race with a stale push.

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/actor.h"
#include "runtime/tensor_payload.h"

namespace sepal {

/// Well-known actor id of the block host in a host process.
inline constexpr std::uint32_t kBlockHostActorId = 3;

struct HostInfoReply {
  static constexpr std::uint16_t kTypeId = 0x0401;
  std::string model;            ///< the model folder's name
  std::int64_t first = 0;       ///< first block served
  std::int64_t last = 0;        ///< one past the last block served (first == last: none yet)
  std::int64_t hidden_size = 0;
  double tokens_per_second = 0;  ///< measured throughput at batch 1, per block (tokens/s through one block)
  std::int64_t sessions = 0;     ///< open sessions
  std::int64_t cache_bytes_free = 0;
  bool leaving = false;          ///< the host is leaving and opens no more sessions
  std::string numerics;          ///< what decides its bits besides the model (model/weights.h: describe_numerics)
  SEPAL_FIELDS(model, first, last, hidden_size, tokens_per_second, sessions, cache_bytes_free, leaving, numerics)
};
struct HostInfo {
  static constexpr std::uint16_t kTypeId = 0x0402;
  using Reply = HostInfoReply;
  SEPAL_FIELDS()
};

/// Trainable adapters (model/block_adapters.h) on the projections of a message's blocks: PEQA
/// row offsets or LoRA factors, the client's, applied by the host. `values` f32 [blocks, values per
/// block] in that header's layout; shape {0} for none.
///
/// `held` (training passes only; 0: not held): the sender's key for these adapters of these
/// blocks. With values, the host keeps them under the key (a few per client, newest kept, freed
/// with the client, when idle, or when the host's blocks change); without values (the rest of the
/// fields are then ignored), the host applies what it keeps under the key, and answers
/// kFailedPrecondition when it keeps nothing there: the sender then sends the values again.
struct AdapterPayload {
  std::int64_t method = 0;            ///< 0: PEQA, 1: LoRA
  std::int64_t rank = 0;              ///< LoRA
  double alpha = 0;                   ///< LoRA
  std::vector<std::int64_t> targets;  ///< projections (q, k, v, o, gate, up, down = 0..6), increasing
  TensorPayload values;
  std::uint64_t held = 0;
  SEPAL_FIELDS(method, rank, alpha, targets, values, held)
};

struct SessionOpened {
  static constexpr std::uint16_t kTypeId = 0x0403;
  std::uint64_t session = 0;
  std::int64_t cache_bytes = 0;
  SEPAL_FIELDS(session, cache_bytes)
};
/// Opens a session of up to `max_length` positions through blocks [first, last), a part of the
/// host's range (first == last == 0: all of it). Refused (kResourceExhausted) when its cache would
/// not fit in the host's budget, kUnavailable while the host is leaving or loading other blocks.
/// `prompts`: a tuned prompt's deep prompts for these blocks, f32 [last - first, count,
/// hidden_size], added to each block's input at positions [prompt_offset, prompt_offset + count)
/// (model/prompt_tuning.h); shape {0} for none. `adapter`: adapters of these blocks, held for the
/// session.
struct OpenSession {
  static constexpr std::uint16_t kTypeId = 0x0404;
  using Reply = SessionOpened;
  std::uint64_t session = 0;  ///< chosen by the client; unique per client
  std::int64_t max_length = 0;
  std::int64_t first = 0;
  std::int64_t last = 0;
  TensorPayload prompts;
  std::int64_t prompt_offset = 0;
  AdapterPayload adapter;
  SEPAL_FIELDS(session, max_length, first, last, prompts, prompt_offset, adapter)
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
  std::uint64_t tag = 0;  ///< the client's attempt; 0: unchecked
  std::vector<std::int32_t> parents;  ///< a token tree's n parents; empty: the next n positions
  std::vector<std::int32_t> keep;     ///< a path of the held tree to keep first; empty: none
  SEPAL_FIELDS(session, position, hidden, tag, parents, keep)
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
  std::uint64_t tag = 0;  ///< from now on, steps of older attempts are ignored
  SEPAL_FIELDS(session, length, tag)
};
/// Frees the session.
struct CloseSession {
  static constexpr std::uint16_t kTypeId = 0x0409;
  using Reply = SessionState;
  std::uint64_t session = 0;
  SEPAL_FIELDS(session)
};

/// One-way: the swarm is done; the host process may exit. Taken from the coordinator alone.
struct Shutdown {
  static constexpr std::uint16_t kTypeId = 0x040A;
  std::string reason;
  SEPAL_FIELDS(reason)
};

/// A later hop of a pushed step: its host, the client's session there, and the client's grant
/// for that hop (actors/push_grant.h; empty where links carry no keys).
struct PushTarget {
  ActorAddress host;
  std::uint64_t session = 0;
  std::vector<std::uint8_t> grant;
  SEPAL_FIELDS(host, session, grant)
};

/// One-way, host-to-host push: runs the step on this host's `session` (owned by client.peer),
/// sends the output to the client's receiver, and forwards it as a PushStep to next[0] with
/// next[1:]. From any sender but the owning client it must carry the client's grant for this hop
/// (which also names the one target it may be forwarded to); without one it is dropped.
struct PushStep {
  static constexpr std::uint16_t kTypeId = 0x040B;
  ActorAddress client;  ///< the client driver (receives the outputs); client.peer owns the sessions
  std::uint64_t request = 0;  ///< the client's id for the whole pushed step (echoed in PushedOutput)
  std::uint64_t session = 0;
  std::int64_t position = 0;
  std::uint64_t tag = 0;
  std::int64_t hop = 0;  ///< this host's index in the route
  std::vector<PushTarget> next;
  TensorPayload hidden;
  std::vector<std::uint8_t> grant;  ///< the client's grant for this hop
  std::vector<std::int32_t> parents;  ///< as in Step
  std::vector<std::int32_t> keep;     ///< as in Step
  SEPAL_FIELDS(client, request, session, position, tag, hop, next, hidden, grant, parents, keep)
};

// ---- training passes: stateless, so any host serving the blocks can take any micro-batch ----

struct TrainForwardOutput {
  static constexpr std::uint16_t kTypeId = 0x040D;
  TensorPayload hidden;  ///< [T, hidden_size], as the input came (f32, or 8-bit blockwise)
  SEPAL_FIELDS(hidden)
};
/// A training forward through blocks [first, last) of the host's range, over whole sequences
/// packed one after another (`lengths`, summing to the rows of `hidden`), no cache. `prompts`:
/// deep prompts f32 [last - first, count, hidden_size] added to each block's input at positions
/// [prompt_offset, prompt_offset + count) of every sequence; shape {0} for none. `adapter`: the
/// adapters of these blocks, applied.
struct TrainForward {
  static constexpr std::uint16_t kTypeId = 0x040E;
  using Reply = TrainForwardOutput;
  std::int64_t first = 0;
  std::int64_t last = 0;
  std::vector<std::int64_t> lengths;
  TensorPayload hidden;   ///< f32 [T, hidden_size], or 8-bit blockwise (actors/hidden_codec.h)
  TensorPayload prompts;
  std::int64_t prompt_offset = 0;
  AdapterPayload adapter;
  SEPAL_FIELDS(first, last, lengths, hidden, prompts, prompt_offset, adapter)
};

struct TrainBackwardOutput {
  static constexpr std::uint16_t kTypeId = 0x040F;
  TensorPayload grad;          ///< f32 [T, hidden_size]: d loss / d input
  TensorPayload prompt_grads;  ///< f32 [last - first, count, hidden_size], or shape {0} without prompts
  TensorPayload adapter_grads;  ///< f32 [last - first, values per block], or shape {0} without adapters
  SEPAL_FIELDS(grad, prompt_grads, adapter_grads)
};
/// The backward of TrainForward: given the same input and d loss / d output, the gradients of the
/// input, of the deep prompts and of the adapters. The host recomputes the forward from `hidden`.
struct TrainBackward {
  static constexpr std::uint16_t kTypeId = 0x0410;
  using Reply = TrainBackwardOutput;
  std::int64_t first = 0;
  std::int64_t last = 0;
  std::vector<std::int64_t> lengths;
  TensorPayload hidden;  ///< the forward's input, as TrainForward took it
  TensorPayload grad;    ///< f32 [T, hidden_size]
  TensorPayload prompts;
  std::int64_t prompt_offset = 0;
  AdapterPayload adapter;
  SEPAL_FIELDS(first, last, lengths, hidden, grad, prompts, prompt_offset, adapter)
};

struct BlockHostProtocol {
  using accepts =
      Accepts<HostInfo, OpenSession, Step, Rollback, CloseSession, Shutdown, PushStep, TrainForward, TrainBackward>;
};

/// One-way, host to client (the client driver, actors/protocol/client_driver.h): the output of
/// hop `hop` of attempt `tag`, or why it failed (code != 0: a StatusCode; `host` is the peer that
/// failed or reported it).
struct PushedOutput {
  static constexpr std::uint16_t kTypeId = 0x040C;
  std::uint64_t request = 0;
  std::uint64_t tag = 0;
  std::int64_t hop = 0;
  std::uint32_t host = 0;
  std::int32_t code = 0;
  std::string message;
  TensorPayload hidden;
  SEPAL_FIELDS(request, tag, hop, host, code, message, hidden)
};

}  // namespace sepal

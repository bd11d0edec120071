#pragma once
// What the client driver accepts and answers. The driver is the client's actor: it holds the
// inference sessions of every generation running in its process (ids allocated by the driver,
// many open at once), routes them through the block hosts, and fails over when a host goes. The
// processes's own threads talk to it through the blocking facade (actors/blocking_facade.h);
// hosts talk to it only to push outputs (PushedOutput). Requests from any other process are
// refused.
//
// Hidden states in and out are tensors [n, hidden_size]: the caller sends f32; the answer is the
// last host's output as that host sent it (f32, or 8-bit blockwise: actors/hidden_codec.h).

#include <cstdint>
#include <vector>

#include "actors/protocol/balancer.h"
#include "actors/protocol/block_host.h"
#include "runtime/actor.h"
#include "runtime/tensor_payload.h"

namespace sepal {

/// Well-known actor id of the client driver; hosts push outputs to it.
inline constexpr std::uint32_t kClientDriverActorId = 5;

struct InferenceOpened {
  static constexpr std::uint16_t kTypeId = 0x0601;
  std::uint64_t session = 0;
  std::int64_t hidden_size = 0;
  SEPAL_FIELDS(session, hidden_size)
};
/// Opens an inference session of up to `max_length` positions through every block: a route is
/// planned and a session opened on each of its hosts.
/// `prompts`: a tuned prompt's deep prompts for every block, f32 [num_blocks, count,
/// hidden_size] at `prompt_offset` (each host gets its blocks' part); shape {0} for none.
struct OpenInference {
  static constexpr std::uint16_t kTypeId = 0x0602;
  using Reply = InferenceOpened;
  std::int64_t max_length = 0;
  TensorPayload prompts;
  std::int64_t prompt_offset = 0;
  AdapterPayload adapter;  ///< for every block; values shape {0}: none
  SEPAL_FIELDS(max_length, prompts, prompt_offset, adapter)
};

struct InferenceOutput {
  static constexpr std::uint16_t kTypeId = 0x0603;
  std::int64_t length = 0;  ///< the session's length after the step
  TensorPayload hidden;     ///< [n, hidden_size], f32 or compressed
  SEPAL_FIELDS(length, hidden)
};
/// Runs f32 hidden[n, hidden_size] through every block as the session's next n positions, or,
/// with `parents`, as the nodes of a token tree after them (the length does not change; the
/// hosts hold the tree until the next step). `keep`: a path of the tree the last step ran (a
/// root, then each node's child) to append to the session first. One step of a session at a
/// time; other sessions' steps run meanwhile.
struct InferenceStep {
  static constexpr std::uint16_t kTypeId = 0x0604;
  using Reply = InferenceOutput;
  std::uint64_t session = 0;
  TensorPayload hidden;
  std::vector<std::int32_t> parents;
  std::vector<std::int32_t> keep;
  SEPAL_FIELDS(session, hidden, parents, keep)
};

struct InferenceClosed {
  static constexpr std::uint16_t kTypeId = 0x0605;
  std::uint64_t session = 0;
  SEPAL_FIELDS(session)
};
/// Ends the session (a step under way fails with kCancelled) and frees its hosts' caches.
struct CloseInference {
  static constexpr std::uint16_t kTypeId = 0x0606;
  using Reply = InferenceClosed;
  std::uint64_t session = 0;
  SEPAL_FIELDS(session)
};

/// One hop of a session's route.
struct InferenceHop {
  std::uint32_t host = 0;
  std::int64_t first = 0;
  std::int64_t last = 0;
  SEPAL_FIELDS(host, first, last)
};
struct InferenceReport {
  static constexpr std::uint16_t kTypeId = 0x0607;
  std::vector<InferenceHop> route;
  std::int64_t length = 0;
  std::int64_t failovers = 0;         ///< times a hop moved to other hosts
  std::int64_t received_bytes = 0;    ///< hidden-state bytes the hops sent back
  std::int64_t received_token_hops = 0;  ///< tokens times hops those bytes covered
  bool push = false;                  ///< host-to-host push (else relay through the client)
  bool wire_compression = false;
  SEPAL_FIELDS(route, length, failovers, received_bytes, received_token_hops, push, wire_compression)
};
/// The session's route and counters.
struct DescribeInference {
  static constexpr std::uint16_t kTypeId = 0x0608;
  using Reply = InferenceReport;
  std::uint64_t session = 0;
  SEPAL_FIELDS(session)
};

/// Answers once the swarm can serve: every block has a host, at least `min_hosts` hosts have
/// measured their throughput, and no move the balancer ordered is under way; kTimeout, naming
/// what is missing, after `timeout_ms`.
struct AwaitSwarmReady {
  static constexpr std::uint16_t kTypeId = 0x0609;
  using Reply = BlockMapReply;
  std::int64_t min_hosts = 0;
  std::int64_t timeout_ms = 0;
  SEPAL_FIELDS(min_hosts, timeout_ms)
};

struct TrainingPassDone {
  static constexpr std::uint16_t kTypeId = 0x060A;
  TensorPayload hidden;        ///< forward: the output f32 [T, hidden_size]; backward: d loss / d input
  TensorPayload prompt_grads;  ///< backward with deep prompts: f32 [num_blocks, count, hidden_size]
  TensorPayload adapter_grads;  ///< backward with adapters: f32 [num_blocks, values per block]
  std::int64_t hops = 0;       ///< host requests the pass made
  std::int64_t failovers = 0;  ///< of them, the ones that replaced a failed host
  std::int64_t tensor_bytes = 0;  ///< tensor bytes of those requests and their replies
  SEPAL_FIELDS(hidden, prompt_grads, adapter_grads, hops, failovers, tensor_bytes)
};
/// A training pass of one micro-batch through every block (hosts' TrainForward, TrainBackward):
/// whole sequences packed in `hidden`, with deep prompts f32 [num_blocks, count, hidden_size]
/// (shape {0}: none) at `prompt_offset`. A forward with `keep` saves each hop's input under
/// `pass` (an id the caller picks) for the backward that names it; the backward takes
/// d loss / d output as `hidden` and ends the pass. Hosts that fail are replaced (stateless: a
/// replica recomputes the micro-batch). Many passes may be under way at once.
struct TrainingPass {
  static constexpr std::uint16_t kTypeId = 0x060B;
  using Reply = TrainingPassDone;
  std::uint64_t pass = 0;
  bool backward = false;
  bool keep = false;
  std::vector<std::int64_t> lengths;
  TensorPayload hidden;
  TensorPayload prompts;
  std::int64_t prompt_offset = 0;
  AdapterPayload adapter;  ///< for every block (forward; a backward uses its kept forward's)
  SEPAL_FIELDS(pass, backward, keep, lengths, hidden, prompts, prompt_offset, adapter)
};

struct ClientDriverProtocol {
  using accepts =
      Accepts<OpenInference, InferenceStep, CloseInference, DescribeInference, AwaitSwarmReady, PushedOutput, TrainingPass>;
};

}  // namespace sepal

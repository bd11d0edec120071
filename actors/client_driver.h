#pragma once
// The client driver: the actor that runs a client's inference sessions through the block hosts
// (actors/protocol/client_driver.h). It owns the sessions (ids it allocates; many at once), their
// routes, the push inbox, failover and replay; the route planner it is given owns the view of the
// swarm and the avoid-list. Nothing here blocks: every wait is a request or a timer whose answer
// comes back in the driver's turn (ActorSystem::request_in_turn).
//
// A step runs in one of two modes:
//   - relay: the driver steps each hop in turn and gets each hop's output back;
//   - push: the driver sends the step to the first host, the hosts forward it along the route,
//     and each also pushes its output here (kept for replay); a push that fails part-way goes on
//     by relay from the first hop without an output.
// When a host fails (transport failure, timeout, or it left or moved and its session vanished),
// the planner is told (it avoids the host for a while) and plans a new route for that hop's
// blocks; the inputs the hop has seen are replayed there, step by step in the shapes decoding
// used (pipelined), so every kernel sees the batch it saw before (int8 outlier columns and float
// summation orders depend on the batch): the rebuilt cache is the one decoding built, bit for
// bit, and the output does not change.
//
// Thread-safety: an actor; use it through messages (or actors/blocking_facade.h).

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "actors/protocol/client_driver.h"
#include "actors/push_grant.h"
#include "actors/route_planner.h"
#include "runtime/actor_system.h"

namespace sepal {

struct ClientDriverOptions {
  std::int64_t num_blocks = 0;               ///< the model's blocks; every session runs all of them
  std::chrono::milliseconds timeout{60000};  ///< per request to a host, and per pushed step
  bool push = true;                          ///< host-to-host push (else relay)
  bool wire_compression = true;              ///< hidden states 8-bit blockwise (actors/hidden_codec.h)
  int max_failovers = 16;                    ///< per step (and per open), before giving up
};

class ClientDriver final : public TypedActor<ClientDriver, ClientDriverProtocol> {
 public:
  /// The driver of `system`, to be added there under `id` (its continuations run in that actor's
  /// turn). `planner` must answer in that turn too.
  ClientDriver(ActorSystem& system, std::uint32_t id, std::unique_ptr<RoutePlanner> planner, ClientDriverOptions options);
  ~ClientDriver() override;

  std::string name() const override { return "client driver"; }
  Result<InferenceOpened> handle(ActorContext& ctx, const OpenInference& m);
  Result<InferenceOutput> handle(ActorContext& ctx, const InferenceStep& m);
  Result<InferenceClosed> handle(ActorContext& ctx, const CloseInference& m);
  Result<InferenceReport> handle(ActorContext& ctx, const DescribeInference& m);
  Result<BlockMapReply> handle(ActorContext& ctx, const AwaitSwarmReady& m);
  void handle(ActorContext& ctx, const PushedOutput& m);
  Result<TrainingPassDone> handle(ActorContext& ctx, const TrainingPass& m);
  void on_peer_failed(ActorSystem& system, PeerId peer, const Status& why) override;

 private:
  struct Hop {
    RouteHop at;
    std::uint64_t session = 0;           ///< the host's session id
    std::vector<TensorPayload> inputs;   ///< every input of a completed step, for replay
  };
  // The outputs of a pushed step as they arrive (hop order), or why it broke off.
  struct PushAttempt {
    std::uint64_t tag = 0;
    std::vector<PeerId> peers;
    std::vector<std::optional<TensorPayload>> outputs;
    std::optional<std::pair<PeerId, Status>> failure;
    bool settled() const;
  };
  struct Session;
  using Continue = std::function<void(Session&)>;
  using Failed = std::function<void(Session&, Status)>;

  // The session `id` if it still runs operation `op` (a continuation of an ended one finds none).
  Session* live(std::uint64_t id, std::uint64_t op);
  // Ends the session's operation with `status` (an error) and answers its caller.
  void fail_operation(Session& s, const Status& status);
  // Runs `body` on the live session, failing its operation if `body` throws.
  void resume(std::uint64_t id, std::uint64_t op, const std::function<void(Session&)>& body);

  // Opening: hops i.. of the route, each checked and given a host session.
  void open_hops(Session& s, std::size_t i);
  // Asks `hop`'s host what it serves and opens a session there; `done` gets the host's session id.
  void open_on(Session& s, const RouteHop& hop, std::function<void(Session&, Result<std::uint64_t>)> done);

  // Stepping.
  void start_push(Session& s);
  void finish_push(Session& s);
  // Steps hops i.. by relay from `input` (`rollback`: first reset each to the session's length).
  void relay_from(Session& s, std::size_t i, TensorPayload input, bool rollback);
  void step_hop(Session& s, std::size_t i, TensorPayload input, bool rollback);
  void hop_lost(Session& s, std::size_t i, TensorPayload input, const Status& why);
  void complete_step(Session& s, TensorPayload output);
  // Checks a hop's output for n tokens (decoding it) and counts its bytes.
  Status accept_output(Session& s, const TensorPayload& t, std::int64_t n);

  // Failover: a new route for hop i's blocks, its inputs replayed there, trying other routes while
  // their hosts fail (up to max_failovers for the operation). `done` gets how many hops replaced
  // hop i. `moved`: hop i's host is alive and serves other blocks now (the balancer moved it), a
  // planned change that is logged at info, not as a warning.
  void failover(Session& s, std::size_t i, bool moved, std::function<void(Session&, Result<std::size_t>)> done);
  // One try of it; `retryable` is false when there was no route at all (the planner waited).
  void replace_hop(Session& s, std::size_t i, bool moved,
                   std::function<void(Session&, Result<std::size_t>, bool retryable)> done);
  struct Replacement;
  void rebuild(Session& s, std::shared_ptr<Replacement> r);
  // Sends `steps` to `hop` in order (a few in flight), from position 0; `done` gets its outputs.
  void replay(Session& s, const Hop& hop, std::vector<TensorPayload> steps,
              std::function<void(Session&, Result<std::vector<TensorPayload>>)> done);

  // ---- training passes (actors/client_driver_training.cc) ----
  struct Segment {
    RouteHop at;
    TensorPayload input;  ///< what the hop's host took (as TrainForward's hidden)
  };
  // One training pass under way.
  struct Training {
    std::uint64_t op = 0;
    std::uint64_t pass = 0;
    bool keep = false;
    std::int64_t hidden = 0;  ///< hidden size
    std::vector<std::int64_t> lengths;
    std::int64_t tokens = 0;
    TensorPayload prompts;  ///< [num_blocks, count, hidden] or empty
    std::int64_t count = 0;
    std::int64_t prompt_offset = 0;
    AdapterPayload adapter;  ///< adapters of every block, or none
    std::uint64_t adapter_key = 0;  ///< what hosts keep `adapter` under (AdapterPayload::held); 0: none
    std::int64_t hops = 0;
    std::int64_t failovers = 0;
    std::int64_t tensor_bytes = 0;  ///< of the host requests and replies
    std::vector<float> prompt_grads;   ///< backward: [num_blocks, count, hidden]
    std::vector<float> adapter_grads;  ///< backward: [num_blocks, values per block]
    ReplyHandle<TrainingPassDone> reply;
  };
  using SegmentsDone = std::function<void(Training&, std::vector<Segment>, TensorPayload output)>;
  using GradDone = std::function<void(Training&, TensorPayload grad)>;
  // Logs, for each hop of `replacement` over `failed`'s blocks whose host announces other
  // numerics than `failed`'s did, that `what` (the text, the losses) may change from here.
  static void warn_numerics_change(const RouteHop& failed, const std::vector<RouteHop>& replacement, const char* what);
  // Runs `input` forward through blocks [first, last) over a planned route, replacing hosts that
  // fail; `done` gets each hop with its input, and the output (none when !need_output: the last
  // hop is then planned but not run).
  // `numerics`: preferred hosts' numerics (a failed hop's; empty: any), as RoutePlanner::route.
  void forward_blocks(Training& t, std::int64_t first, std::int64_t last, const std::string& numerics,
                      TensorPayload input, bool need_output, SegmentsDone done);
  void forward_hops(Training& t, std::vector<Segment> done_hops, std::vector<RouteHop> todo, std::int64_t last,
                    TensorPayload input, bool need_output, SegmentsDone done);
  // The backward of `segments` (in reverse) from d loss / d their output.
  void backward_segments(Training& t, std::vector<Segment> segments, TensorPayload grad, GradDone done);
  // The backward of one hop; a host that fails is replaced by a new route for its blocks.
  void backward_one(Training& t, Segment segment, TensorPayload grad, GradDone done);
  // A host of a training pass failed with `why`: counts it against max_failovers; false (and the
  // pass answered with the error) when the pass must give up.
  bool training_failover(Training& t, const RouteHop& at, const Status& why);
  // The deep prompts of blocks [first, last), as a host takes them.
  TensorPayload prompt_slice(const Training& t, std::int64_t first, std::int64_t last) const;
  void fail_training(Training& t, const Status& why);
  // Sends a training request to `host` with the pass's adapters for m.first..m.last: by key alone
  // where the host keeps them already, else in full (once more in full, if the host answers that it
  // keeps nothing under the key).
  template <typename M>
  void ask_training(Training& t, const ActorRef<BlockHostProtocol>& host, M m,
                    std::function<void(Training&, Result<typename M::Reply>)> done);
  // The adapters of blocks [first, last) for a request to `host`: the key alone when the host
  // keeps them (as far as the driver knows), else the values (and the host is taken to keep them).
  AdapterPayload hop_adapter(const Training& t, PeerId host, std::int64_t first, std::int64_t last, bool full);
  // The key for training adapters `a` (0 for none): the last key while they are unchanged.
  std::uint64_t adapter_key(const AdapterPayload& a);
  std::map<std::uint64_t, std::unique_ptr<Training>> training_;  ///< passes under way, by op
  /// kInvalidArgument unless `a` is empty or f32 [num_blocks, values per block].
  Status check_adapter(const AdapterPayload& a) const;

  struct KeptPass {
    std::vector<std::int64_t> lengths;
    TensorPayload prompts;
    std::int64_t prompt_offset = 0;
    AdapterPayload adapter;
    std::uint64_t adapter_key = 0;
    std::vector<Segment> segments;
  };
  // Adapters a host keeps for this driver (as far as it knows), newest last; at most
  // kHeldAdaptersPerHost per host, as the host keeps.
  struct HeldAdapter {
    PeerId host = 0;
    std::uint64_t key = 0;
    std::int64_t first = 0, last = 0;
    bool operator==(const HeldAdapter&) const = default;
  };
  static constexpr std::size_t kHeldAdaptersPerHost = 4;
  std::vector<HeldAdapter> held_adapters_;
  AdapterPayload last_adapter_;  ///< the newest training adapters (a copy), under last_adapter_key_
  std::uint64_t last_adapter_key_ = 0;
  std::map<std::uint64_t, KeptPass> kept_;  ///< forwards awaiting their backward, by the caller's pass id
  std::uint64_t next_training_op_ = 0;

  // A request to a host whose answer continues operation `op` of session `id`.
  template <typename M>
  void ask(Session& s, const ActorRef<BlockHostProtocol>& host, const M& m,
           std::function<void(Session&, Result<typename M::Reply>)> done);

  ActorSystem& system_;
  const std::uint32_t id_;
  std::unique_ptr<RoutePlanner> planner_;
  const ClientDriverOptions options_;
  std::int64_t hidden_size_ = 0;  ///< learnt from the first host; every host must agree
  std::uint64_t next_session_ = 0;
  std::uint64_t next_op_ = 0;
  std::map<std::uint64_t, std::unique_ptr<Session>> sessions_;
  std::set<PeerId> failed_peers_;
  std::set<PeerId> off_route_logged_;  ///< peers whose pushed output for a route they are not on was logged
  PushGrants grants_;  ///< makes the grants of each push's later hops
};

}  // namespace sepal

namespace sepal {

/// Adds a client driver to `system` under kClientDriverActorId (where hosts push outputs);
/// `planner` must answer in that actor's turn (built with kClientDriverActorId).
ActorRef<ClientDriverProtocol> add_client_driver(ActorSystem& system, std::unique_ptr<RoutePlanner> planner,
                                                 ClientDriverOptions options);

}  // namespace sepal

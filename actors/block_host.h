#pragma once
// The block host actor: serves blocks [first, last) of a model to clients' inference sessions.
// Each session owns a KV cache for the blocks it runs (all of the host's or a contiguous part);
// the caches together stay within a memory budget, and a session idle for longer than the idle
// timeout is freed. Every request that is wrong (unknown session, wrong shape or type, positions
// out of order or past the session's length, a session over budget) is answered with an error
// and the host goes on serving the others.
//
// The blocks can change while the host runs (the balancer moved it: set_blocks) and the host can
// start leaving (set_leaving); both end its sessions, whose clients then re-route.
//
// Thread-safety: an actor; its handlers run one at a time. set_blocks, set_leaving and info may
// be called from any thread.

#include <chrono>
#include <functional>
#include <deque>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "actors/protocol/block_host.h"
#include "actors/push_grant.h"
#include "model/block_adapters.h"
#include "model/block_stack.h"
#include "runtime/actor_system.h"

namespace sepal {

/// How a block host runs.
struct BlockHostOptions {
  /// KV caches plus the working memory of the step being run (BlockStack::step_working_bytes).
  std::int64_t cache_budget_bytes = std::int64_t{2} << 30;
  /// Per client (sending process): sessions open at once, and bytes of KV cache held (0: half
  /// of the budget), so that one client cannot take the host from the others.
  std::int64_t max_sessions_per_client = 64;
  std::int64_t max_cache_bytes_per_client = 0;
  /// Tokens in one step.
  std::int64_t max_step_tokens = 4096;
  /// Tokens in one training pass (TrainForward, TrainBackward).
  std::int64_t max_training_tokens = 16384;
  /// Batch the steps of different sessions (up to kStreamingMaxTokens rows each, no token tree)
  /// that wait for the host together: one forward for all (BlockStack::forward_batch), each
  /// session's states exactly as alone.
  bool batch_steps = true;
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
  std::string model_name;
  /// What decides the host's bits besides the model (model/weights.h: describe_numerics), answered
  /// in HostInfo and announced.
  std::string numerics;
  /// The swarm's coordinator: the only peer whose Shutdown the host obeys.
  PeerId coordinator = 0;
  /// Called (on the actor's thread) when a Shutdown message arrives from the coordinator.
  std::function<void(const std::string& reason)> on_shutdown;
};

/// Tokens/s through one block at batch 1, measured by decoding a few positions through `blocks`.
double measure_block_throughput(const BlockStack& blocks);

/// Serves a BlockStack.
class BlockHost final : public TypedActor<BlockHost, BlockHostProtocol> {
 public:
  /// `blocks` may be null: the host serves nothing until set_blocks.
  BlockHost(std::shared_ptr<const BlockStack> blocks, BlockHostOptions options);
  std::string name() const override { return "block host"; }

  /// Serves `blocks` from now on (null: nothing); open sessions end. `tokens_per_second` is the
  /// measured per-block throughput (0: keep the current estimate).
  void set_blocks(std::shared_ptr<const BlockStack> blocks, double tokens_per_second);
  /// Refuses new sessions and steps from now on (graceful leave); open sessions end.
  void set_leaving();
  /// What HostInfo answers.
  HostInfoReply info();
  /// Lowers the budget of caches and working memory to `bytes` when that is less (a GPU host: what
  /// its device has free once the weights are loaded).
  void limit_cache_budget(std::int64_t bytes);

  Result<HostInfoReply> handle(ActorContext& ctx, const HostInfo& m);
  Result<SessionOpened> handle(ActorContext& ctx, const OpenSession& m);
  Result<StepResult> handle(ActorContext& ctx, const Step& m);
  Result<SessionState> handle(ActorContext& ctx, const Rollback& m);
  Result<SessionState> handle(ActorContext& ctx, const CloseSession& m);
  void handle(ActorContext& ctx, const Shutdown& m);
  void handle(ActorContext& ctx, const PushStep& m);
  Result<TrainForwardOutput> handle(ActorContext& ctx, const TrainForward& m);
  Result<TrainBackwardOutput> handle(ActorContext& ctx, const TrainBackward& m);
  void on_peer_failed(ActorSystem& system, PeerId peer, const Status& why) override;
  /// Runs the steps gathered since the last batch (the host's mailbox is empty).
  void on_mailbox_empty(ActorSystem& system) override;
  /// Batches run and the steps they held (for tests and benchmarks).
  std::pair<std::int64_t, std::int64_t> batches() {
    std::lock_guard lock(mutex_);
    return {batches_run_, batched_steps_run_};
  }
  /// Inference forwards run (a batch counts once) and the seconds their blocks took, from the
  /// forward's start to its output (what a step spends on this host besides waiting and the wire),
  /// all of them and those of a single row (one session's decode step).
  struct Forwards {
    std::int64_t count = 0, single_row = 0;
    double seconds = 0, single_row_seconds = 0;
  };
  Forwards forwards() {
    std::lock_guard lock(mutex_);
    return forwards_;
  }

 private:
  // Sessions are keyed by the client's process and its session id, so clients cannot collide.
  using SessionKey = std::pair<PeerId, std::uint64_t>;
  struct Session {
    KvCache cache;
    std::int64_t first = 0;  ///< the session's first block
    std::uint64_t tag = 0;   ///< newest attempt seen
    Scheduler::Clock::time_point last_used;
    std::vector<float> prompts;  ///< deep prompts of the session's blocks, [blocks, count, hidden]
    std::int64_t prompt_count = 0, prompt_offset = 0;
    std::vector<std::int32_t> tree;  ///< the parents of the token tree held after the sequence; empty: none
    std::optional<AdapterShape> adapter_shape;  ///< the session's adapters (model/block_adapters.h), if any
    std::vector<float> adapter_values;          ///< [blocks, values per block]
    /// Memory the session holds here: its cache and its adapters.
    std::int64_t bytes() const { return cache.bytes() + static_cast<std::int64_t>(adapter_values.size() * sizeof(float)); }
    /// The adapters as the blocks take them; none without.
    std::optional<BlockAdapters> adapters() const {
      if (!adapter_shape) return std::nullopt;
      return BlockAdapters{*adapter_shape, first, cache.blocks(), adapter_values.data()};
    }
  };

  Result<Session*> find(SessionKey key, Scheduler::Clock::time_point now);
  // Whether the sender of `m` may push into the session it names (logs a refusal once per peer).
  bool push_allowed(ActorContext& ctx, const PushStep& m);
  // A step (Step or PushStep) checked against its session, its rows decoded: what is left is to
  // run it (keep `keep` of the held tree, then the rows as the next positions or as a token tree).
  struct ReadyStep {
    SessionKey key;
    std::int64_t n = 0;
    std::vector<float> rows;
    bool compressed = false;  ///< the answer takes the request's form
    std::vector<std::int32_t> parents, keep;
  };
  // What becomes of a step's output (or error) and the session's length after it.
  using StepDone = std::function<void(Result<TensorPayload>, std::int64_t length)>;
  struct PendingStep {
    ReadyStep step;
    StepDone done;
  };
  Result<ReadyStep> prepare_step(SessionKey key, std::int64_t position, std::uint64_t tag, const TensorPayload& hidden,
                                 const std::vector<std::int32_t>& parents, const std::vector<std::int32_t>& keep,
                                 Scheduler::Clock::time_point now);
  bool batchable(const ReadyStep& step) const;
  // Before a step of session `key` is checked: its step waiting in the batch, if any, runs.
  void before_step(SessionKey key, Scheduler::Clock::time_point now);
  // Runs `step` now, or gathers it into the batch (which runs when the mailbox empties, or first
  // when this step's session already waits in it).
  void take_step(ReadyStep step, StepDone done, Scheduler::Clock::time_point now);
  Result<TensorPayload> run_alone(ReadyStep& step, Scheduler::Clock::time_point now);
  // Runs the gathered steps, one forward per block range, and answers each.
  void run_batch(Scheduler::Clock::time_point now);
  // When the gathered steps may run: now (time_point::min()) when every session of the last round
  // that is still open and has not run in this round has its step here, else once they have waited
  // for the rest (steps a client sends together reach the host a little apart) twice as long as
  // the last round's steps took to arrive, at least a quarter of the last batch's running time and
  // at most all of it.
  Scheduler::Clock::time_point gathered_by() const;
  // Runs the batch at `by` unless it ran before (a timer in this actor's turn).
  void run_batch_at(ActorSystem& system, Scheduler::Clock::time_point by);
  Result<TensorPayload> output_of(const ReadyStep& step, const Session& s);
  void measured(double tokens_per_second);
  void count_forward(double seconds, bool single_row);  // forwards_
  // A pushed step's output goes to the next host and to the client (or its error to the client).
  static void push_onward(ActorSystem& system, ActorAddress self, const PushStep& m, Result<TensorPayload> out);
  // The checks every training pass shares; the decoded input and the deep prompts when they pass.
  struct TrainingInput {
    std::vector<float> hidden;
    std::optional<DeepPrompts> prompts;
  };
  Result<TrainingInput> check_training(std::int64_t first, std::int64_t last, const std::vector<std::int64_t>& lengths,
                                       const TensorPayload& hidden, const TensorPayload& prompts,
                                       std::int64_t prompt_offset);
  // The adapters a training pass from `client` applies to blocks [first, last): those of `p`, or
  // (p.held without values) those the client left here under that key; `p`'s values are kept
  // under p.held when it has one. The view points into `p` or into the kept copy.
  Result<std::optional<BlockAdapters>> training_adapters(PeerId client, const AdapterPayload& p, std::int64_t first,
                                                         std::int64_t last, Scheduler::Clock::time_point now);
  void expire_idle(Scheduler::Clock::time_point now);
  std::int64_t cache_bytes_used() const;
  std::int64_t client_cache_bytes(PeerId client, std::int64_t* sessions) const;
  HostInfoReply info_locked() const;

  std::mutex mutex_;  // guards everything below; held through each handler
  std::shared_ptr<const BlockStack> blocks_;
  BlockHostOptions options_;
  bool leaving_ = false;
  std::map<SessionKey, Session> sessions_;
  // Sessions ended by the last moves (set_blocks), the oldest forgotten past kMaxMovedSessions:
  // a client that steps one of them learns that the host moved, not that it failed.
  static constexpr std::size_t kMaxMovedSessions = 4096;
  std::set<SessionKey> moved_sessions_;
  std::deque<SessionKey> moved_order_;
  static constexpr std::int64_t kMaxBatchRows = 64;  // a batch this big runs without waiting for the mailbox
  std::vector<PendingStep> batch_;  // steps gathered for the next batch
  std::int64_t batched_rows_ = 0;   // their rows (counted in a new step's working memory)
  std::int64_t batches_run_ = 0, batched_steps_run_ = 0;
  Forwards forwards_;
  double last_batch_seconds_ = 0;                       // how long it ran
  Scheduler::Clock::time_point gathering_since_{};      // when batch_ took its first step
  Scheduler::Clock::time_point last_arrival_{};         // and its latest
  double last_spread_seconds_ = 0;                      // from the first to the last of the last batch
  bool gather_timer_ = false;                           // a run_batch_at is armed
  // A round: the sessions batched since the last time one of them came again (a client's
  // sessions in lock-step each step once a round, whether their steps ran in one batch or more).
  std::set<SessionKey> round_;                          // this round's sessions so far
  std::set<SessionKey> expected_;                       // the previous round's
  Scheduler::Clock::time_point round_since_{}, round_last_arrival_{};  // this round's first and last arrival
  double round_spread_seconds_ = 0;                     // from the first to the last arrival of the previous round
  std::uint32_t self_id_ = 0;                           // this actor's id (for its timers)
  // Training adapters clients left here (AdapterPayload::held), at most kHeldAdaptersPerClient
  // per client; counted with the caches against the budget.
  struct HeldAdapter {
    PeerId client = 0;
    std::uint64_t key = 0;
    std::int64_t first = 0, last = 0;
    AdapterPayload adapter;  ///< owns its values
    Scheduler::Clock::time_point last_used;
  };
  static constexpr std::size_t kHeldAdaptersPerClient = 4;
  std::vector<HeldAdapter> held_adapters_;
  double tokens_per_second_ = 0;  // per block; exponential average of measured decode steps
  std::set<PeerId> refused_logged_;  // peers whose refused messages were logged
  PushGrants grants_;  // checks the grants of pushes from other hosts
};

}  // namespace sepal

#pragma once
// The actors of one process, the transport that connects it to the swarm, and the scheduler they
// run on. Routes frames to actors and replies to waiting requests; requests have timeouts, and a
// request to a peer that fails is answered with kPeerFailed at once, so nothing waits forever.
//
// Each actor's mailbox keeps one queue per sending peer and serves the senders in turn, one
// message each, so a peer that floods an actor delays every other peer by at most one of its
// messages per message of theirs. Each queue is bounded (MailboxLimits): past the bound a request
// is refused at once with kResourceExhausted naming the limit (backpressure: the sender retries
// later), and a one-way message is dropped and logged.
//
// Thread-safety: send, request, spawn and after may be called from any thread. request_sync
// blocks the calling thread and must not be called from a handler.

#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "runtime/actor.h"
#include "runtime/scheduler.h"
#include "runtime/transport.h"

namespace sepal {

/// Bounds of one actor's queue of messages from one peer (an empty queue takes any one message).
struct MailboxLimits {
  std::size_t max_messages = 4096;
  std::size_t max_bytes = std::size_t{256} << 20;
};

/// The actors of one process.
class ActorSystem final : private TransportHandler {
 public:
  /// The system does not own the transport or the scheduler; both must outlive it.
  ActorSystem(Transport& transport, Scheduler& scheduler, MailboxLimits limits = {});
  ~ActorSystem() override;
  ActorSystem(const ActorSystem&) = delete;
  ActorSystem& operator=(const ActorSystem&) = delete;

  /// Starts receiving.
  Status start();
  /// Stops the transport; pending requests fail with kCancelled.
  void stop();

  PeerId self() const { return transport_.self(); }
  Transport& transport() { return transport_; }
  Scheduler& scheduler() { return scheduler_; }

  /// Creates a local actor with the next free id (ids below 16 are reserved for well-known actors).
  template <typename A, typename... Args>
  ActorRef<typename A::protocol> spawn(Args&&... args) {
    return {add_actor(0, std::make_unique<A>(std::forward<Args>(args)...))};
  }
  /// Creates a local actor with a well-known id (1 to 15), e.g. the balancer.
  template <typename A, typename... Args>
  ActorRef<typename A::protocol> spawn_with_id(std::uint32_t id, Args&&... args) {
    return {add_actor(id, std::make_unique<A>(std::forward<Args>(args)...))};
  }
  /// Adds an actor built by the caller under a well-known id. The caller may keep a pointer to it
  /// for the thread-safe methods the actor offers, valid until the actor is removed or the
  /// system destroyed.
  template <typename A>
  ActorRef<typename A::protocol> adopt_with_id(std::uint32_t id, std::unique_ptr<A> actor) {
    return {add_actor(id, std::move(actor))};
  }
  /// Removes a local actor; frames for it are then answered with kNotFound.
  void remove(ActorAddress address);

  /// A one-way message. Compiles only for a message the protocol accepts.
  template <typename P, AcceptedBy<P> M>
  Status send(const ActorRef<P>& to, const M& message, std::uint32_t from_actor = 0) {
    return send_frame(to.address.peer, encode(Envelope{0, from_actor, to.address.id, 0, FrameKind::kOneWay}, message));
  }

  /// A request; `done` gets the reply or the error (kTimeout, kPeerFailed, the handler's error)
  /// exactly once, on the scheduler.
  template <typename P, AcceptedBy<P> M>
    requires RequestMessage<M>
  void request(const ActorRef<P>& to, const M& message, std::chrono::milliseconds timeout,
               std::function<void(Result<typename M::Reply>)> done, std::uint32_t from_actor = 0) {
    using Reply = typename M::Reply;
    send_request(to, message, timeout, from_actor, Delivery::kOnScheduler,
                 [done = std::move(done)](const Envelope& reply, std::shared_ptr<const Buffer> frame, Status status) {
                   done(decode_reply<Reply>(reply, std::move(frame), status));
                 });
  }

  /// A request from a thread that can wait (a driver, a test, a tool): blocks until the reply,
  /// an error or the timeout. The reply wakes the waiting thread directly, which decodes it.
  template <typename P, AcceptedBy<P> M>
    requires RequestMessage<M>
  Result<typename M::Reply> request_sync(const ActorRef<P>& to, const M& message, std::chrono::milliseconds timeout) {
    using Reply = typename M::Reply;
    struct Raw {
      Envelope reply;
      std::shared_ptr<const Buffer> frame;
      Status status;
    };
    auto promise = std::make_shared<std::promise<Raw>>();
    auto future = promise->get_future();
    send_request(to, message, timeout, 0, Delivery::kWhereItArrives,
                 [promise](const Envelope& reply, std::shared_ptr<const Buffer> frame, Status status) {
                   promise->set_value(Raw{reply, std::move(frame), std::move(status)});
                 });
    Raw raw = future.get();
    return decode_reply<Reply>(raw.reply, std::move(raw.frame), raw.status);
  }

  /// Runs `task` in the turn of local actor `actor`: never at the same time as its handlers, so
  /// the task may touch the actor's state (how an actor goes on after a reply or a timer, as a
  /// CAF actor's continuation does). False, and `task` dropped, when no such actor exists.
  bool run_in_turn(std::uint32_t actor, Scheduler::Task task);

  /// A request made by local actor `self` whose `done` runs in that actor's turn (dropped if the
  /// actor is gone by then).
  template <typename P, AcceptedBy<P> M>
    requires RequestMessage<M>
  void request_in_turn(std::uint32_t self, const ActorRef<P>& to, const M& message, std::chrono::milliseconds timeout,
                       std::function<void(Result<typename M::Reply>)> done) {
    using Reply = typename M::Reply;
    // The reply goes straight into the actor's mailbox, and is decoded in its turn.
    send_request(to, message, timeout, self, Delivery::kWhereItArrives,
                 [this, self, done = std::move(done)](const Envelope& reply, std::shared_ptr<const Buffer> frame,
                                                      Status status) {
                   run_in_turn(self, [done, reply, frame = std::move(frame), status = std::move(status)]() mutable {
                     done(decode_reply<Reply>(reply, std::move(frame), status));
                   });
                 });
  }

  /// Runs `task` in the turn of local actor `actor` after `delay` (a timer of that actor).
  void after_in_turn(std::uint32_t actor, std::chrono::milliseconds delay, Scheduler::Task task) {
    after(delay, [this, actor, task = std::move(task)]() mutable { run_in_turn(actor, std::move(task)); });
  }

  /// Runs `task` on the scheduler after `delay`.
  void after(std::chrono::milliseconds delay, Scheduler::Task task);
  /// Calls `watcher` (on the scheduler) whenever a peer fails; for membership.
  void watch_peer_failures(std::function<void(PeerId, const Status&)> watcher);
  /// Treats `peer` as failed, as when the transport reports it: its pending requests fail and
  /// every actor and watcher hears of it. Used by failure detectors above the transport
  /// (membership heartbeats).
  void declare_peer_failed(PeerId peer, const Status& why) { on_peer_failed(peer, why); }

  /// For a peer that left gracefully: it will answer nothing more, yet it did not fail. Its
  /// pending requests, and any made later, fail with `why` at once; actors are not told (peer
  /// ids are not reused: the membership gives every newcomer a new one).
  void declare_peer_departed(PeerId peer, const Status& why);

  /// Sends an encoded frame (local delivery when `to` is this process). Used by replies.
  Status send_frame(PeerId to, OutgoingFrame frame);

 private:
  struct Cell;
  using Completion = std::function<void(const Envelope&, std::shared_ptr<const Buffer>, Status)>;
  // Where a reply's completion runs: in a task of its own on the scheduler (a caller's callback,
  // which may do anything), or at once on the thread the reply arrives on (a completion that only
  // hands the frame on: into an actor's mailbox, or to a waiting thread). The second saves a
  // thread wake-up per reply on the critical path of every pipeline hop.
  enum class Delivery { kOnScheduler, kWhereItArrives };
  struct Pending {
    PeerId peer;
    Completion complete;
    Delivery delivery = Delivery::kOnScheduler;
    Scheduler::Timer timeout;  ///< cancelled when the request completes otherwise
  };

  template <typename Reply>
  static Result<Reply> decode_reply(const Envelope& reply, std::shared_ptr<const Buffer> frame, const Status& status) {
    if (!status.is_ok()) return status;
    if (reply.kind == FrameKind::kErrorReply) return decode_error(std::move(frame));
    return decode_message<Reply>(std::move(frame));
  }
  template <typename P, typename M>
  void send_request(const ActorRef<P>& to, const M& message, std::chrono::milliseconds timeout, std::uint32_t from_actor,
                    Delivery delivery, Completion complete) {
    const std::uint64_t id = next_request_id();
    Envelope e{0, from_actor, to.address.id, id, FrameKind::kRequest};
    add_pending(id, to.address.peer, timeout, delivery, std::move(complete));
    if (Status s = send_frame(to.address.peer, encode(e, message)); !s.is_ok()) fail_pending(id, s);
  }

  ActorAddress add_actor(std::uint32_t id, std::unique_ptr<Actor> actor);
  std::uint64_t next_request_id();
  void add_pending(std::uint64_t id, PeerId peer, std::chrono::milliseconds timeout, Delivery delivery,
                   Completion complete);
  void fail_pending(std::uint64_t id, const Status& why);
  void fail_requests_to(PeerId peer, const Status& why);
  void deliver(PeerId from, std::shared_ptr<const Buffer> frame);
  void drain(const std::shared_ptr<Cell>& cell);
  // Queues `item` in `cell` (from `from`, or as a system item when `from` is empty) and schedules
  // the cell's drain if needed; kResourceExhausted when `from`'s queue is full.
  Status enqueue(const std::shared_ptr<Cell>& cell, std::optional<PeerId> from, std::size_t bytes, std::function<void()> item);

  void on_frame(PeerId from, std::shared_ptr<const Buffer> frame) override;
  void on_peer_failed(PeerId peer, const Status& why) override;
  void begin_delivery() override;
  void end_delivery() override;
  // Posts `task`, or holds it until end_delivery() when this thread is inside a delivery pass.
  void post_or_hold(Scheduler::Task task);

  Transport& transport_;
  Scheduler& scheduler_;
  const MailboxLimits limits_;
  std::mutex mutex_;
  std::map<std::uint32_t, std::shared_ptr<Cell>> cells_;
  std::map<std::uint64_t, Pending> pending_;
  std::map<PeerId, Status> departed_;
  std::vector<std::function<void(PeerId, const Status&)>> failure_watchers_;
  std::uint32_t next_actor_id_ = 16;
  std::uint64_t next_request_id_ = 1;
  bool stopped_ = false;
};

}  // namespace sepal

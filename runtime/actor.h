#pragma once
// Typed actors. An actor's protocol is a type that lists the messages it accepts:
//
//   struct EchoProtocol { using accepts = Accepts<Echo, Shutdown>; };
//
// A request message names its answer (`using Reply = EchoReply;`); other messages are one-way.
// Sending a message the protocol does not list fails to compile (see ActorSystem::send). An actor
// derives from TypedActor<Self, Protocol> and defines, for each accepted message M,
//
//   Result<M::Reply> handle(ActorContext&, const M&);   // requests
//   void handle(ActorContext&, const M&);               // one-way messages
//
// An actor handles one message at a time. Every handler runs inside a boundary that turns an
// escaped exception into an error reply, so a bad message cannot take the actor down.
//
// Thread-safety: an actor's handlers never run concurrently with each other. ReplyHandle may be
// used from any thread.

#include <atomic>
#include <memory>
#include <string>
#include <type_traits>

#include "runtime/log.h"
#include "runtime/status.h"
#include "runtime/transport.h"
#include "runtime/wire.h"

namespace sepal {

/// Where an actor lives: its process and its id there.
struct ActorAddress {
  PeerId peer = 0;
  std::uint32_t id = 0;
  bool operator==(const ActorAddress&) const = default;
  SEPAL_FIELDS(peer, id)
};

/// The messages a protocol accepts.
template <typename... Messages>
struct Accepts {};

template <typename List, typename M>
struct ListContains : std::false_type {};
template <typename... Ms, typename M>
struct ListContains<Accepts<Ms...>, M> : std::bool_constant<(std::is_same_v<Ms, M> || ...)> {};

/// `M` is one of the messages `Protocol` accepts (written `AcceptedBy<Protocol> M` in templates).
template <typename M, typename Protocol>
concept AcceptedBy = ListContains<typename Protocol::accepts, M>::value;

/// `M` expects an answer of type M::Reply.
template <typename M>
concept RequestMessage = WireMessage<M> && requires { typename M::Reply; };

/// A typed reference to an actor that speaks `Protocol`.
template <typename Protocol>
struct ActorRef {
  ActorAddress address;
  bool operator==(const ActorRef&) const = default;
};

class ActorSystem;

/// Sends the answer to a request later, from any thread, exactly once.
template <typename Reply>
class ReplyHandle {
 public:
  ReplyHandle() = default;
  /// Sends `result` (a Reply or an error) to the requester; later calls do nothing.
  void reply(const Result<Reply>& result) const;
  explicit operator bool() const { return system_ != nullptr; }

 private:
  friend class ActorContext;
  ActorSystem* system_ = nullptr;
  PeerId peer_ = 0;
  Envelope request_{};
  std::shared_ptr<std::atomic<bool>> done_;
};

/// What a handler knows about the message it handles.
class ActorContext {
 public:
  ActorContext(ActorSystem& system, ActorAddress self, PeerId from, const Envelope& envelope)
      : system_(system), self_(self), from_(from), envelope_(envelope) {}

  ActorSystem& system() const { return system_; }
  ActorAddress self() const { return self_; }
  /// The sending actor (id 0 when the sender was not an actor).
  ActorAddress sender() const { return {from_, envelope_.src_actor}; }
  const Envelope& envelope() const { return envelope_; }

  /// Takes over answering the current request: the handler's return value is then ignored and
  /// the answer goes through the handle, later.
  template <typename Reply>
  ReplyHandle<Reply> defer_reply() {
    deferred_ = true;
    ReplyHandle<Reply> h;
    h.system_ = &system_;
    h.peer_ = from_;
    h.request_ = envelope_;
    h.done_ = std::make_shared<std::atomic<bool>>(false);
    return h;
  }
  bool deferred() const { return deferred_; }

 private:
  ActorSystem& system_;
  ActorAddress self_;
  PeerId from_;
  Envelope envelope_;
  bool deferred_ = false;
};

/// Base of every actor; the system calls it one message at a time.
class Actor {
 public:
  virtual ~Actor() = default;
  /// A frame addressed to this actor.
  virtual void receive(ActorContext& ctx, std::shared_ptr<const Buffer> frame) = 0;
  /// A peer process failed or left. Default: ignored.
  virtual void on_peer_failed(ActorSystem& system, PeerId peer, const Status& why) {}
  /// In the actor's turn, once it has handled every message that was waiting for it (its mailbox
  /// is empty), after it handled at least one: an actor that gathers work from several messages
  /// (a block host batching its sessions' steps) runs it here. Default: nothing.
  virtual void on_mailbox_empty(ActorSystem& system) {}
  /// Name for logs.
  virtual std::string name() const = 0;
};

namespace actor_detail {
/// Sends a reply or an error reply for a request (defined in actor_system.cc).
void send_reply(ActorSystem& system, PeerId to, const Envelope& request, OutgoingFrame frame);
Envelope reply_envelope(const Envelope& request, FrameKind kind);
}  // namespace actor_detail

/// Dispatches the messages of `Protocol` to `Derived::handle` overloads.
template <typename Derived, typename Protocol>
class TypedActor : public Actor {
 public:
  using protocol = Protocol;

  void receive(ActorContext& ctx, std::shared_ptr<const Buffer> frame) final {
    if (!dispatch(ctx, frame, typename Protocol::accepts{})) {
      reject(ctx, error(StatusCode::kInvalidArgument, name(), " does not accept message type ", ctx.envelope().type_id));
    }
  }

 private:
  template <typename... Ms>
  bool dispatch(ActorContext& ctx, const std::shared_ptr<const Buffer>& frame, Accepts<Ms...>) {
    return (try_message<Ms>(ctx, frame) || ...);
  }

  template <typename M>
  bool try_message(ActorContext& ctx, const std::shared_ptr<const Buffer>& frame) {
    if (ctx.envelope().type_id != M::kTypeId) return false;
    auto message = decode_message<M>(frame);
    if (!message.is_ok()) {
      reject(ctx, message.status());
      return true;
    }
    if constexpr (RequestMessage<M>) {
      using Reply = typename M::Reply;
      Result<Reply> result = Status(StatusCode::kInternal, "no result");
      try {
        result = static_cast<Derived*>(this)->handle(ctx, message.value());
      } catch (const std::exception& e) {
        result = error(StatusCode::kInternal, name(), " failed on message ", M::kTypeId, ": ", e.what());
      }
      if (!ctx.deferred() && ctx.envelope().kind == FrameKind::kRequest) respond(ctx, result);
    } else {
      try {
        static_cast<Derived*>(this)->handle(ctx, message.value());
      } catch (const std::exception& e) {
        reject(ctx, error(StatusCode::kInternal, name(), " failed on message ", M::kTypeId, ": ", e.what()));
      }
    }
    return true;
  }

  template <typename Reply>
  void respond(ActorContext& ctx, const Result<Reply>& result) {
    const Envelope& e = ctx.envelope();
    if (result.is_ok()) {
      actor_detail::send_reply(ctx.system(), ctx.sender().peer, e,
                               encode(actor_detail::reply_envelope(e, FrameKind::kReply), result.value()));
    } else {
      actor_detail::send_reply(ctx.system(), ctx.sender().peer, e,
                               encode_error(actor_detail::reply_envelope(e, FrameKind::kErrorReply), result.status()));
    }
  }

  void reject(ActorContext& ctx, const Status& why);
};

template <typename Derived, typename Protocol>
void TypedActor<Derived, Protocol>::reject(ActorContext& ctx, const Status& why) {
  const Envelope& e = ctx.envelope();
  if (e.kind == FrameKind::kRequest) {
    actor_detail::send_reply(ctx.system(), ctx.sender().peer, e,
                             encode_error(actor_detail::reply_envelope(e, FrameKind::kErrorReply), why));
  } else {
    log(LogLevel::kWarn, name(), ": dropped a message from peer ", ctx.sender().peer, ": ", why.to_string());
  }
}

template <typename Reply>
void ReplyHandle<Reply>::reply(const Result<Reply>& result) const {
  if (!system_ || done_->exchange(true)) return;
  if (result.is_ok()) {
    actor_detail::send_reply(*system_, peer_, request_,
                             encode(actor_detail::reply_envelope(request_, FrameKind::kReply), result.value()));
  } else {
    actor_detail::send_reply(*system_, peer_, request_,
                             encode_error(actor_detail::reply_envelope(request_, FrameKind::kErrorReply), result.status()));
  }
}

}  // namespace sepal

#include "runtime/actor_system.h"

#include <deque>
#include <vector>

#include "runtime/log.h"

namespace sepal {

namespace actor_detail {

void send_reply(ActorSystem& system, PeerId to, const Envelope& request, OutgoingFrame frame) {
  if (request.kind != FrameKind::kRequest) return;
  if (Status s = system.send_frame(to, std::move(frame)); !s.is_ok()) {
    log(LogLevel::kInfo, "reply to peer ", to, " for request ", request.request_id, " not sent: ", s.to_string());
  }
}

Envelope reply_envelope(const Envelope& request, FrameKind kind) {
  return Envelope{0, request.dst_actor, request.src_actor, request.request_id, kind};
}

}  // namespace actor_detail

namespace {

// The tasks a delivery pass on this thread holds back (TransportHandler::begin_delivery), and
// the system they are for; inactive outside a pass.
struct HeldTasks {
  const ActorSystem* system = nullptr;
  std::vector<Scheduler::Task> tasks;
};
thread_local HeldTasks t_held;

}  // namespace

// An actor and its mailbox: system items (peer failures, continuations) first, then one queue per sending peer,
// served in turn. `scheduled` is true while a drain task is queued or running, so an actor never
// runs on two threads at once.
struct ActorSystem::Cell {
  struct Queue {
    std::deque<std::pair<std::size_t, std::function<void()>>> items;  // (bytes, item)
    std::size_t bytes = 0;
  };
  struct Refusals {
    std::uint64_t count = 0;  // messages refused, ever
    std::chrono::steady_clock::time_point logged{};
  };
  std::uint32_t id;
  std::unique_ptr<Actor> actor;
  std::mutex mutex;
  std::deque<std::function<void()>> system;
  std::map<PeerId, Queue> queues;
  std::deque<PeerId> turn;  // senders with queued messages, in the order they are served
  std::map<PeerId, Refusals> refusals;
  bool scheduled = false;
  bool handled_since_empty = false;  // touched by the draining thread only (scheduled is true)
};

ActorSystem::ActorSystem(Transport& transport, Scheduler& scheduler, MailboxLimits limits)
    : transport_(transport), scheduler_(scheduler), limits_(limits) {}

ActorSystem::~ActorSystem() {
  stop();
  // The actors go while the system is whole: an actor's destructor may wait for a thread that
  // still posts to the system (run_in_turn then finds no actor and drops the task).
  std::map<std::uint32_t, std::shared_ptr<Cell>> cells;
  {
    std::lock_guard lock(mutex_);
    cells.swap(cells_);
  }
  cells.clear();
}

Status ActorSystem::start() { return transport_.start(this); }

void ActorSystem::stop() {
  std::map<std::uint64_t, Pending> pending;
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    pending.swap(pending_);
  }
  transport_.stop();
  for (auto& [id, p] : pending) p.complete(Envelope{}, nullptr, error(StatusCode::kCancelled, "actor system stopped"));
}

ActorAddress ActorSystem::add_actor(std::uint32_t id, std::unique_ptr<Actor> actor) {
  auto cell = std::make_shared<Cell>();
  cell->actor = std::move(actor);
  std::lock_guard lock(mutex_);
  if (id == 0) id = next_actor_id_++;
  cell->id = id;
  cells_[id] = std::move(cell);
  return {transport_.self(), id};
}

void ActorSystem::remove(ActorAddress address) {
  std::shared_ptr<Cell> gone;  // destroyed outside the lock: an actor's destructor may wait on a thread that posts here
  std::lock_guard lock(mutex_);
  if (address.peer != transport_.self()) return;
  if (auto it = cells_.find(address.id); it != cells_.end()) {
    gone = std::move(it->second);
    cells_.erase(it);
  }
}

std::uint64_t ActorSystem::next_request_id() {
  std::lock_guard lock(mutex_);
  return next_request_id_++;
}

void ActorSystem::add_pending(std::uint64_t id, PeerId peer, std::chrono::milliseconds timeout, Delivery delivery,
                              Completion complete) {
  std::lock_guard lock(mutex_);
  Pending& pending = pending_[id] = Pending{peer, std::move(complete), delivery, {}};
  if (auto gone = departed_.find(peer); gone != departed_.end()) {
    const Status why = gone->second;
    scheduler_.post([this, id, why] { fail_pending(id, why); });
    return;
  }
  // Armed under the lock, so that a reply that comes at once finds the timer to cancel.
  pending.timeout = scheduler_.post_at(scheduler_.now() + timeout, [this, id, timeout] {
    fail_pending(id, error(StatusCode::kTimeout, "no reply within ", timeout.count(), " ms"));
  });
}

void ActorSystem::fail_pending(std::uint64_t id, const Status& why) {
  Completion complete;
  Scheduler::Timer timeout;
  {
    std::lock_guard lock(mutex_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    complete = std::move(it->second.complete);
    timeout = it->second.timeout;
    pending_.erase(it);
  }
  scheduler_.cancel(timeout);  // none left when this is the timeout
  scheduler_.post([complete = std::move(complete), why] { complete(Envelope{}, nullptr, why); });
}

Status ActorSystem::send_frame(PeerId to, OutgoingFrame frame) {
  SEPAL_RETURN_IF_ERROR(frame.status());
  if (to == transport_.self()) {
    auto buffer = frame.flatten();
    if (!buffer) return error(StatusCode::kResourceExhausted, "no memory for a local frame");
    deliver(to, std::move(buffer));
    return Status::ok();
  }
  return transport_.send(to, std::move(frame));
}

bool ActorSystem::run_in_turn(std::uint32_t actor, Scheduler::Task task) {
  std::shared_ptr<Cell> cell;
  {
    std::lock_guard lock(mutex_);
    if (auto it = cells_.find(actor); it != cells_.end()) cell = it->second;
  }
  if (!cell) return false;
  return enqueue(cell, std::nullopt, 0, std::move(task)).is_ok();
}

void ActorSystem::after(std::chrono::milliseconds delay, Scheduler::Task task) {
  scheduler_.post_at(scheduler_.now() + delay, std::move(task));
}

void ActorSystem::watch_peer_failures(std::function<void(PeerId, const Status&)> watcher) {
  std::lock_guard lock(mutex_);
  failure_watchers_.push_back(std::move(watcher));
}

void ActorSystem::on_frame(PeerId from, std::shared_ptr<const Buffer> frame) { deliver(from, std::move(frame)); }

void ActorSystem::begin_delivery() { t_held.system = this; }

void ActorSystem::end_delivery() {
  std::vector<Scheduler::Task> tasks = std::move(t_held.tasks);
  t_held.tasks.clear();
  t_held.system = nullptr;
  for (Scheduler::Task& task : tasks) scheduler_.post(std::move(task));
}

void ActorSystem::post_or_hold(Scheduler::Task task) {
  if (t_held.system == this) t_held.tasks.push_back(std::move(task));
  else scheduler_.post(std::move(task));
}

void ActorSystem::deliver(PeerId from, std::shared_ptr<const Buffer> frame) {
  auto envelope = decode_envelope(*frame);
  if (!envelope.is_ok()) {
    log(LogLevel::kWarn, "dropped a frame from peer ", from, ": ", envelope.status().to_string());
    return;
  }
  const Envelope e = envelope.value();
  if (e.kind == FrameKind::kReply || e.kind == FrameKind::kErrorReply) {
    Completion complete;
    Scheduler::Timer timeout;
    Delivery delivery;
    {
      std::lock_guard lock(mutex_);
      auto it = pending_.find(e.request_id);
      if (it == pending_.end() || it->second.peer != from) return;  // late (timed out) or forged
      complete = std::move(it->second.complete);
      timeout = it->second.timeout;
      delivery = it->second.delivery;
      pending_.erase(it);
    }
    scheduler_.cancel(timeout);
    if (delivery == Delivery::kWhereItArrives) return complete(e, std::move(frame), Status::ok());
    post_or_hold([complete = std::move(complete), e, frame = std::move(frame)]() mutable {
      complete(e, std::move(frame), Status::ok());
    });
    return;
  }
  std::shared_ptr<Cell> cell;
  {
    std::lock_guard lock(mutex_);
    if (auto it = cells_.find(e.dst_actor); it != cells_.end()) cell = it->second;
  }
  if (!cell) {
    if (e.kind == FrameKind::kRequest) {
      actor_detail::send_reply(*this, from, e,
                               encode_error(actor_detail::reply_envelope(e, FrameKind::kErrorReply),
                                            error(StatusCode::kNotFound, "no actor ", e.dst_actor, " on peer ", self())));
    }
    return;
  }
  const std::size_t bytes = frame->size();
  Status queued = enqueue(cell, from, bytes, [this, cell, from, e, frame = std::move(frame)]() mutable {
    ActorContext ctx(*this, {self(), cell->id}, from, e);
    cell->actor->receive(ctx, std::move(frame));
  });
  if (!queued.is_ok() && e.kind == FrameKind::kRequest) {
    actor_detail::send_reply(*this, from, e, encode_error(actor_detail::reply_envelope(e, FrameKind::kErrorReply), queued));
  }
}

Status ActorSystem::enqueue(const std::shared_ptr<Cell>& cell, std::optional<PeerId> from, std::size_t bytes,
                          std::function<void()> item) {
  bool schedule = false;
  std::uint64_t refused = 0;
  bool log_refusal = false;
  std::size_t queued = 0, queued_bytes = 0;
  {
    std::lock_guard lock(cell->mutex);
    if (!from) {
      cell->system.push_back(std::move(item));
    } else {
      Cell::Queue& q = cell->queues[*from];
      // An empty queue takes any one message (the transport bounds frames), so a frame larger than
      // the byte bound is not refused for ever.
      if (!q.items.empty() && (q.items.size() >= limits_.max_messages || q.bytes + bytes > limits_.max_bytes)) {
        Cell::Refusals& r = cell->refusals[*from];
        refused = ++r.count;
        const auto now = std::chrono::steady_clock::now();
        if (now - r.logged > std::chrono::seconds(10)) {  // logged at most every 10 s per sender
          r.logged = now;
          log_refusal = true;
        }
        queued = q.items.size();
        queued_bytes = q.bytes;
      } else {
        if (q.items.empty()) cell->turn.push_back(*from);
        q.items.emplace_back(bytes, std::move(item));
        q.bytes += bytes;
      }
    }
    if (refused == 0) {
      schedule = !cell->scheduled;
      cell->scheduled = true;
    }
  }
  if (refused > 0) {
    if (log_refusal) {
      log(LogLevel::kWarn, "actor ", cell->id, ": peer ", *from, " has ", queued, " messages (", queued_bytes,
          " bytes) waiting, its limit; refusing its messages until they drain (", refused, " refused so far)");
    }
    return error(StatusCode::kResourceExhausted, "peer ", *from, " has ", queued, " messages (", queued_bytes,
                 " bytes) waiting at actor ", cell->id, " of peer ", self(), ", the limit per sender (",
                 limits_.max_messages, " messages, ", limits_.max_bytes, " bytes); retry later");
  }
  if (schedule) post_or_hold([this, cell] { drain(cell); });
  return Status::ok();
}

void ActorSystem::drain(const std::shared_ptr<Cell>& cell) {
  // A bounded batch, then yield the thread to other actors.
  for (int i = 0; i < 16; ++i) {
    std::function<void()> item;
    bool emptied = false;
    {
      std::lock_guard lock(cell->mutex);
      if (!cell->system.empty()) {
        item = std::move(cell->system.front());
        cell->system.pop_front();
      } else if (!cell->turn.empty()) {
        // One message of the sender whose turn it is; it goes to the back if it has more.
        const PeerId sender = cell->turn.front();
        cell->turn.pop_front();
        Cell::Queue& q = cell->queues[sender];
        item = std::move(q.items.front().second);
        q.bytes -= q.items.front().first;
        q.items.pop_front();
        if (!q.items.empty()) cell->turn.push_back(sender);
        else cell->queues.erase(sender);
      } else if (cell->handled_since_empty) {
        cell->handled_since_empty = false;
        emptied = true;
      } else {
        cell->scheduled = false;
        return;
      }
    }
    if (emptied) {
      cell->actor->on_mailbox_empty(*this);
      continue;
    }
    cell->handled_since_empty = true;
    item();
  }
  scheduler_.post([this, cell] { drain(cell); });
}

void ActorSystem::declare_peer_departed(PeerId peer, const Status& why) {
  {
    std::lock_guard lock(mutex_);
    departed_[peer] = why;
  }
  fail_requests_to(peer, why);
}

void ActorSystem::fail_requests_to(PeerId peer, const Status& why) {
  std::vector<std::uint64_t> affected;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, p] : pending_) {
      if (p.peer == peer) affected.push_back(id);
    }
  }
  for (auto id : affected) fail_pending(id, why);
}

void ActorSystem::on_peer_failed(PeerId peer, const Status& why) {
  fail_requests_to(peer, why);
  std::vector<std::shared_ptr<Cell>> cells;
  std::vector<std::function<void(PeerId, const Status&)>> watchers;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, c] : cells_) cells.push_back(c);
    watchers = failure_watchers_;
  }
  for (auto& cell : cells) {
    (void)enqueue(cell, std::nullopt, 0, [this, cell, peer, why] { cell->actor->on_peer_failed(*this, peer, why); });
  }
  for (auto& w : watchers) scheduler_.post([w, peer, why] { w(peer, why); });
}

}  // namespace sepal

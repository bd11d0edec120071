#include "runtime/inproc_transport.h"

#include <condition_variable>
#include <deque>
#include <map>
#include <thread>
#include <variant>

namespace sepal {

namespace {

struct FrameEvent {
  PeerId from;
  std::shared_ptr<const Buffer> frame;
};
struct FailureEvent {
  PeerId peer;
  Status why;
};
using Event = std::variant<FrameEvent, FailureEvent>;

// The receiving side of one endpoint: a queue and the thread that drains it.
struct Mailbox {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Event> events;
  TransportHandler* handler = nullptr;
  bool started = false, stopping = false, dead = false;
  std::thread thread;

  void push(Event e) {
    {
      std::lock_guard lock(mutex);
      if (dead || stopping) return;
      events.push_back(std::move(e));
    }
    ready.notify_one();
  }

  void run() {
    std::unique_lock lock(mutex);
    while (true) {
      ready.wait(lock, [&] { return stopping || !events.empty(); });
      if (stopping) return;
      Event e = std::move(events.front());
      events.pop_front();
      lock.unlock();
      if (auto* f = std::get_if<FrameEvent>(&e)) handler->on_frame(f->from, std::move(f->frame));
      else {
        auto& failure = std::get<FailureEvent>(e);
        handler->on_peer_failed(failure.peer, failure.why);
      }
      lock.lock();
    }
  }

  void stop() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    ready.notify_all();
    if (thread.joinable() && thread.get_id() != std::this_thread::get_id()) thread.join();
    else if (thread.joinable()) thread.detach();
  }
};

}  // namespace

struct InprocHub::State {
  std::mutex mutex;
  std::map<PeerId, std::shared_ptr<Mailbox>> mailboxes;
  std::map<PeerId, bool> alive;
  PeerId next_id = 0;
  std::chrono::milliseconds failure_delay{50};
  std::vector<std::thread> notifiers;

  ~State() {
    for (auto& t : notifiers) t.join();
  }
};

std::shared_ptr<InprocHub> InprocHub::create(std::chrono::milliseconds failure_delay) {
  auto hub = std::shared_ptr<InprocHub>(new InprocHub());
  hub->state_ = std::make_shared<State>();
  hub->state_->failure_delay = failure_delay;
  return hub;
}

std::unique_ptr<InprocTransport> InprocHub::endpoint() {
  std::lock_guard lock(state_->mutex);
  const PeerId id = state_->next_id++;
  state_->mailboxes[id] = std::make_shared<Mailbox>();
  state_->alive[id] = true;
  return std::unique_ptr<InprocTransport>(new InprocTransport(state_, id));
}

void InprocHub::kill(PeerId id) {
  std::vector<std::shared_ptr<Mailbox>> survivors;
  std::shared_ptr<Mailbox> victim;
  {
    std::lock_guard lock(state_->mutex);
    if (!state_->alive.count(id) || !state_->alive[id]) return;
    state_->alive[id] = false;
    victim = state_->mailboxes[id];
    for (auto& [peer, box] : state_->mailboxes) {
      if (peer != id && state_->alive[peer]) survivors.push_back(box);
    }
  }
  {
    std::lock_guard lock(victim->mutex);
    victim->dead = true;
    victim->events.clear();
  }
  // Survivors notice after the failure delay, as a failure detector would.
  std::lock_guard lock(state_->mutex);
  state_->notifiers.emplace_back([survivors, id, delay = state_->failure_delay] {
    std::this_thread::sleep_for(delay);
    for (auto& box : survivors) box->push(FailureEvent{id, error(StatusCode::kPeerFailed, "peer ", id, " was killed")});
  });
}

InprocTransport::~InprocTransport() { stop(); }

std::vector<PeerId> InprocTransport::peers() const {
  std::lock_guard lock(hub_->mutex);
  std::vector<PeerId> out;
  for (const auto& [peer, alive] : hub_->alive) {
    if (peer != id_ && alive) out.push_back(peer);
  }
  return out;
}

Status InprocTransport::start(TransportHandler* handler) {
  std::shared_ptr<Mailbox> box;
  {
    std::lock_guard lock(hub_->mutex);
    box = hub_->mailboxes[id_];
  }
  std::lock_guard lock(box->mutex);
  if (box->started) return error(StatusCode::kInvalidArgument, "transport already started");
  box->handler = handler;
  box->started = true;
  box->thread = std::thread([box] { box->run(); });
  return Status::ok();
}

Status InprocTransport::send(PeerId to, OutgoingFrame frame) {
  SEPAL_RETURN_IF_ERROR(frame.status());
  std::shared_ptr<Mailbox> box;
  {
    std::lock_guard lock(hub_->mutex);
    if (!hub_->alive.count(id_) || !hub_->alive[id_]) return error(StatusCode::kCancelled, "this endpoint was killed");
    const auto it = hub_->alive.find(to);
    if (it == hub_->alive.end()) return error(StatusCode::kNotFound, "no peer ", to);
    if (!it->second) return error(StatusCode::kPeerFailed, "peer ", to, " has failed");
    box = hub_->mailboxes[to];
  }
  auto buffer = frame.flatten();
  if (!buffer) return error(StatusCode::kResourceExhausted, "no memory for a frame of ", frame.size(), " bytes");
  box->push(FrameEvent{id_, std::move(buffer)});
  return Status::ok();
}

void InprocTransport::stop() {
  std::shared_ptr<Mailbox> box;
  {
    std::lock_guard lock(hub_->mutex);
    box = hub_->mailboxes[id_];
  }
  box->stop();
}

}  // namespace sepal

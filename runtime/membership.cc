#include "runtime/membership.h"

#include <condition_variable>

#include "runtime/log.h"

namespace sepal {

const char* member_state_name(MemberState state) {
  switch (state) {
    case MemberState::kAlive: return "alive";
    case MemberState::kLeft: return "left";
    case MemberState::kFailed: return "failed";
  }
  return "?";
}

namespace {
// What a wrapped key in a MemberJoined is for: the link between `joiner` and `recipient`.
std::string announcement_context(PeerId joiner, PeerId recipient) {
  return "member-joined:" + std::to_string(joiner) + ":" + std::to_string(recipient);
}
}  // namespace

struct Membership::State {
  ActorSystem* system = nullptr;
  PeerId self = 0;
  MembershipOptions options;
  mutable std::mutex mutex;
  mutable std::condition_variable changed;
  struct Entry {
    MemberInfo info;
    MemberState state = MemberState::kAlive;
    Scheduler::Clock::time_point last_heard;
    bool heard = false;  // a heartbeat arrived: the member knows us and can reach us
  };
  std::map<PeerId, Entry> members;
  std::vector<std::function<void(const MembershipEvent&)>> listeners;
  PeerId highest_id = 0;
  std::uint64_t generation = 0;  // bumped on every membership change
  Scheduler::Clock::time_point last_tick{};  // when tick() last looked
  // The last time this process did not run for longer than the failure timeout: how long, and
  // when it ran again.
  Scheduler::Clock::duration last_pause{};
  Scheduler::Clock::time_point last_pause_end{};
  bool stopped = false;

  // Records a transition (only out of kAlive) and tells the listeners.
  void transition(PeerId peer, MemberState to, const std::string& reason) {
    MembershipEvent event;
    std::vector<std::function<void(const MembershipEvent&)>> notify;
    {
      std::lock_guard lock(mutex);
      auto it = members.find(peer);
      if (it == members.end() || it->second.state != MemberState::kAlive || peer == self) return;
      it->second.state = to;
      ++generation;
      event = MembershipEvent{peer, to, it->second.info.role, reason};
      notify = listeners;
    }
    changed.notify_all();
    log(to == MemberState::kFailed ? LogLevel::kWarn : LogLevel::kInfo, "member ", peer, " (", event.role, ") ",
        member_state_name(to), reason.empty() ? "" : ": ", reason);
    for (auto& l : notify) l(event);
  }

  // Adds a member that joined (connecting the transport to it first, with the link's key).
  void add(const MemberInfo& info, const LinkKey& key) {
    if (info.peer == self) return;
    {
      std::lock_guard lock(mutex);
      if (members.count(info.peer)) return;
    }
    if (!info.address.empty()) {
      const auto* bytes = reinterpret_cast<const std::byte*>(info.address.data());
      Status s = system->transport().connect(info.peer, {bytes, info.address.size()}, key);
      if (!s.is_ok() && s.code() != StatusCode::kInvalidArgument) {
        log(LogLevel::kWarn, "cannot connect to joining member ", info.peer, ": ", s.to_string());
        return;
      }
    }
    std::vector<std::function<void(const MembershipEvent&)>> notify;
    {
      std::lock_guard lock(mutex);
      members[info.peer] = Entry{info, MemberState::kAlive, system->scheduler().now()};
      highest_id = std::max(highest_id, info.peer);
      ++generation;
      notify = listeners;
    }
    changed.notify_all();
    log(LogLevel::kInfo, "member ", info.peer, " (", info.role, ") joined");
    for (auto& l : notify) l(MembershipEvent{info.peer, MemberState::kAlive, info.role, "joined"});
  }

  std::vector<PeerId> others_alive() const {
    std::lock_guard lock(mutex);
    std::vector<PeerId> out;
    for (const auto& [id, e] : members) {
      if (id != self && e.state == MemberState::kAlive) out.push_back(id);
    }
    return out;
  }

  // One heartbeat round: send to everyone alive, then declare the silent ones failed.
  void tick() {
    {
      std::lock_guard lock(mutex);
      if (stopped) return;
    }
    const auto peers = others_alive();
    log(LogLevel::kDebug, "heartbeat round to ", peers.size(), " members");
    for (PeerId peer : peers) {
      (void)system->send(ActorRef<MembershipProtocol>{{peer, kMembershipActorId}}, Heartbeat{self}, kMembershipActorId);
    }
    const auto now = system->scheduler().now();
    std::vector<std::pair<PeerId, Scheduler::Clock::duration>> silent;
    {
      std::lock_guard lock(mutex);
      // A tick much later than its period means this process did not run (paused, or starved on
      // a loaded machine): the members are not blamed for that time (as PeerLiveness does).
      if (last_tick != Scheduler::Clock::time_point{} && now - last_tick > options.heartbeat_period + options.failure_timeout / 4) {
        const auto away = now - last_tick - options.heartbeat_period;
        for (auto& [id, e] : members) e.last_heard = std::min(now, e.last_heard + away);
        if (away > options.failure_timeout) {
          last_pause = away;
          last_pause_end = now;
        }
        log(LogLevel::kInfo, "membership: this process did not run for ",
            std::chrono::duration_cast<std::chrono::milliseconds>(away).count(), " ms; members not blamed for it");
      }
      last_tick = now;
      for (const auto& [id, e] : members) {
        if (id != self && e.state == MemberState::kAlive && now - e.last_heard > options.failure_timeout) {
          silent.emplace_back(id, now - e.last_heard);
        }
      }
    }
    for (const auto& [p, quiet] : silent) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(quiet).count();
      transition(p, MemberState::kFailed, "no heartbeat for " + std::to_string(ms) + " ms (longer than the failure timeout)");
      // The whole process reacts, as to a transport failure: pending requests fail now.
      system->declare_peer_failed(p, error(StatusCode::kPeerFailed, "peer ", p, " sent no heartbeat for ", ms,
                                           " ms (longer than the failure timeout)"));
    }
    auto self_ptr = this;
    system->after(options.heartbeat_period, [self_ptr, keep = keep_alive] { self_ptr->tick(); });
  }

  std::shared_ptr<void> keep_alive;  // set to the owning shared_ptr so timers keep the state alive
};

class Membership::Actor final : public TypedActor<Membership::Actor, MembershipProtocol> {
 public:
  explicit Actor(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::string name() const override { return "membership"; }

  void handle(ActorContext& ctx, const Heartbeat& m) {
    {
      std::lock_guard lock(state_->mutex);
      auto it = state_->members.find(ctx.sender().peer);
      if (it == state_->members.end() || m.from != ctx.sender().peer) return;
      it->second.last_heard = state_->system->scheduler().now();
      if (it->second.heard) return;
      it->second.heard = true;
      ++state_->generation;
    }
    state_->changed.notify_all();
  }
  void handle(ActorContext& ctx, const MemberJoined& m) {
    if (ctx.sender().peer != state_->options.coordinator || !from_member(ctx)) {
      log(LogLevel::kWarn, "ignored an announcement of member ", m.member.peer, " from ", ctx.sender().peer,
          ", which is not the coordinator");
      return;
    }
    LinkKey key{};
    if (const auto kek = ctx.system().transport().link_key(ctx.sender().peer)) {
      if (m.wrapped_key.size() != key.size()) {
        log(LogLevel::kWarn, "ignored an announcement of member ", m.member.peer, " without its link key");
        return;
      }
      std::copy(m.wrapped_key.begin(), m.wrapped_key.end(), key.begin());
      key = unwrap_link_key(key, *kek, announcement_context(m.member.peer, state_->self));
    }
    state_->add(m.member, key);
  }
  Result<LeaveAck> handle(ActorContext& ctx, const MemberLeaving& m) {
    if (m.peer != ctx.sender().peer) return error(StatusCode::kRefused, "a member can only announce its own leave");
    // Acknowledge before recording the change: whoever waits for the change may end this
    // process, and the leaver must not lose its acknowledgement.
    ctx.defer_reply<LeaveAck>().reply(LeaveAck{state_->self});
    state_->transition(m.peer, MemberState::kLeft, "left gracefully");
    // Nothing sent to it will be answered now: its requests fail at once rather than at their
    // timeouts.
    ctx.system().declare_peer_departed(m.peer, error(StatusCode::kPeerFailed, "peer ", m.peer, " left"));
    return LeaveAck{state_->self};  // not sent: the reply went out above
  }
  void on_peer_failed(ActorSystem&, PeerId peer, const Status& why) override {
    state_->transition(peer, MemberState::kFailed, why.message());
  }

 private:
  // The coordinator must still be a member for its announcements to count.
  bool from_member(const ActorContext& ctx) {
    std::lock_guard lock(state_->mutex);
    auto it = state_->members.find(ctx.sender().peer);
    return it != state_->members.end() && it->second.state == MemberState::kAlive;
  }
  std::shared_ptr<State> state_;
};

Membership::Membership(ActorSystem& system, MemberInfo self, std::vector<MemberInfo> initial, MembershipOptions options)
    : system_(system), self_(std::move(self)), state_(std::make_shared<State>()) {
  state_->system = &system;
  state_->self = self_.peer;
  state_->options = options;
  state_->keep_alive = state_;
  const auto now = system.scheduler().now();
  state_->members[self_.peer] = State::Entry{self_, MemberState::kAlive, now};
  state_->highest_id = self_.peer;
  for (const auto& m : initial) {
    if (m.peer == self_.peer) continue;
    state_->members[m.peer] = State::Entry{m, MemberState::kAlive, now};
    state_->highest_id = std::max(state_->highest_id, m.peer);
  }
}

Membership::~Membership() {
  std::lock_guard lock(state_->mutex);
  state_->stopped = true;
  state_->keep_alive.reset();
}

Status Membership::start() {
  system_.spawn_with_id<Actor>(kMembershipActorId, state_);
  state_->tick();
  return Status::ok();
}

std::optional<std::chrono::milliseconds> Membership::recent_pause() const {
  std::lock_guard lock(state_->mutex);
  const auto now = state_->system->scheduler().now();
  const auto& options = state_->options;
  // A pause ending now: the process runs again and its tick has not looked yet. A caller that
  // learns of a failure first (the other members closed their links to it while it was stopped,
  // and the transport reports those at once) still finds the pause.
  if (state_->last_tick != Scheduler::Clock::time_point{} &&
      now - state_->last_tick > options.heartbeat_period + options.failure_timeout / 4) {
    const auto away = now - state_->last_tick - options.heartbeat_period;
    if (away > options.failure_timeout) return std::chrono::duration_cast<std::chrono::milliseconds>(away);
  }
  if (state_->last_pause_end == Scheduler::Clock::time_point{} || now - state_->last_pause_end > 3 * options.failure_timeout) {
    return std::nullopt;
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(state_->last_pause);
}

std::vector<MemberInfo> Membership::alive() const {
  std::lock_guard lock(state_->mutex);
  std::vector<MemberInfo> out;
  for (const auto& [id, e] : state_->members) {
    if (e.state == MemberState::kAlive) out.push_back(e.info);
  }
  return out;
}

std::optional<MemberState> Membership::state(PeerId peer) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->members.find(peer);
  if (it == state_->members.end()) return std::nullopt;
  return it->second.state;
}

void Membership::subscribe(std::function<void(const MembershipEvent&)> listener) {
  std::lock_guard lock(state_->mutex);
  state_->listeners.push_back(std::move(listener));
}

bool Membership::wait_until(const std::function<bool(const std::vector<MemberInfo>&)>& predicate,
                            std::chrono::milliseconds timeout) const {
  // The predicate runs without the lock (it may call state() or alive()); the generation counter
  // makes sure no change between two evaluations goes unnoticed.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    std::uint64_t seen;
    {
      std::lock_guard lock(state_->mutex);
      seen = state_->generation;
    }
    if (predicate(alive())) return true;
    std::unique_lock lock(state_->mutex);
    if (!state_->changed.wait_until(lock, deadline, [&] { return state_->generation != seen; })) {
      lock.unlock();
      return predicate(alive());
    }
  }
}

bool Membership::wait_until_heard_from_all(std::chrono::milliseconds timeout) const {
  return wait_until([this](const std::vector<MemberInfo>&) {
    std::lock_guard lock(state_->mutex);
    for (const auto& [id, e] : state_->members) {
      if (id != state_->self && e.state == MemberState::kAlive && !e.heard) return false;
    }
    return true;
  }, timeout);
}

PeerId Membership::allocate_peer_id() {
  std::lock_guard lock(state_->mutex);
  return ++state_->highest_id;
}

Status Membership::admit(const MemberInfo& member, const LinkKeyAuthority& keys) {
  state_->add(member, keys.key_for(self_.peer, member.peer));
  if (state(member.peer) != MemberState::kAlive) {
    return error(StatusCode::kUnavailable, "could not connect to joining member ", member.peer);
  }
  // Tell every other member about the joiner (it learnt of them, with their keys, when admitted).
  for (const auto& m : alive()) {
    if (m.peer == self_.peer || m.peer == member.peer) continue;
    MemberJoined announcement{member, {}};
    if (system_.transport().link_key(m.peer)) {
      const LinkKey wrapped = wrap_link_key(keys.key_for(m.peer, member.peer), keys.key_for(self_.peer, m.peer),
                                            announcement_context(member.peer, m.peer));
      announcement.wrapped_key.assign(wrapped.begin(), wrapped.end());
    }
    (void)system_.send(ActorRef<MembershipProtocol>{{m.peer, kMembershipActorId}}, announcement, kMembershipActorId);
  }
  return Status::ok();
}

void Membership::leave_async(std::chrono::milliseconds timeout, std::function<void(Status)> done) {
  const auto others = state_->others_alive();
  {
    std::lock_guard lock(state_->mutex);
    state_->stopped = true;  // no more heartbeats from a member on its way out
  }
  if (others.empty()) return done(Status::ok());
  struct Tally {
    std::mutex mutex;
    std::size_t left;
    Status first_error;
    std::function<void(Status)> done;
  };
  auto tally = std::make_shared<Tally>();
  tally->left = others.size();
  tally->done = std::move(done);
  for (PeerId p : others) {
    system_.request(ActorRef<MembershipProtocol>{{p, kMembershipActorId}}, MemberLeaving{self_.peer}, timeout,
                    [tally](Result<LeaveAck> r) {
                      std::unique_lock lock(tally->mutex);
                      if (!r.is_ok() && tally->first_error.is_ok()) tally->first_error = r.status();
                      if (--tally->left > 0) return;
                      const Status result = tally->first_error;
                      lock.unlock();
                      tally->done(result);
                    },
                    kMembershipActorId);
  }
}

Status Membership::leave(std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  leave_async(timeout, [promise](Status s) { promise->set_value(std::move(s)); });
  return future.get();
}

}  // namespace sepal

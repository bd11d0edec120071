#include "actors/client_driver.h"

#include "actors/adapter_payload.h"
#include "actors/hidden_codec.h"
#include "actors/push_grant.h"
#include "actors/tree_step.h"
#include "runtime/log.h"

namespace sepal {
namespace {

// Replays keep this many steps in flight: the round trips overlap, and the host handles a
// session's steps in order and refuses one whose position is not its length, so order cannot
// silently go wrong.
constexpr std::size_t kReplayInFlight = 32;

// Errors after which the hop must move: the host is gone, unreachable, leaving, or lost the
// session (it moved to other blocks or restarted).
bool host_lost(StatusCode code) {
  return code == StatusCode::kPeerFailed || code == StatusCode::kTimeout || code == StatusCode::kNotFound ||
         code == StatusCode::kCancelled || code == StatusCode::kUnavailable;
}

// The host answered, alive, that it holds no such session: it moved to other blocks (or dropped an
// idle session). Its blocks go elsewhere, but it has not failed.
bool host_moved(StatusCode code) { return code == StatusCode::kNotFound; }

}  // namespace

Status ClientDriver::check_adapter(const AdapterPayload& a) const {
  if (!has_adapter(a)) return Status::ok();
  const TensorPayload& v = a.values;
  if (v.type != ElementType::kF32 || v.shape.size() != 2 || v.shape[0] != options_.num_blocks || v.shape[1] < 1 ||
      v.bytes != static_cast<std::size_t>(v.elements()) * sizeof(float)) {
    return error(StatusCode::kInvalidArgument, "adapter values must be f32 [", options_.num_blocks, ", values per block]");
  }
  return Status::ok();
}

struct ClientDriver::Session {
  // A step's token-tree fields (InferenceStep).
  struct Shape {
    std::vector<std::int32_t> parents, keep;
  };
  std::uint64_t id = 0;
  std::int64_t capacity = 0;
  TensorPayload prompts;  ///< deep prompts of every block, or empty
  std::int64_t prompt_offset = 0;
  AdapterPayload adapter;  ///< adapters of every block, or none
  std::int64_t length = 0;
  std::vector<std::int32_t> tree;  ///< parents of the token tree the hosts hold (the last step's), or empty
  std::int64_t steps = 0;  ///< steps completed
  std::vector<Shape> shapes;  ///< each completed step's tree fields, for replay
  std::uint64_t tag = 0;   ///< the current attempt (hosts ignore older ones)
  std::uint64_t next_hop_session = 0;
  std::int64_t failovers = 0;
  std::int64_t received_bytes = 0;
  std::int64_t received_token_hops = 0;
  std::vector<Hop> route;
  bool dirty = false;  ///< a step failed part-way: hosts may be ahead of `length`

  // The operation under way (op == 0: none), and its caller.
  std::uint64_t op = 0;
  ReplyHandle<InferenceOpened> opening;
  ReplyHandle<InferenceOutput> stepping;
  int failover_attempts = 0;
  // The step under way.
  std::int64_t n = 0;
  Shape shape;
  // Where the step's rows go: after the kept path.
  std::int64_t position() const { return length + static_cast<std::int64_t>(shape.keep.size()); }
  bool rollback_rest = false;
  std::optional<PushAttempt> push;
  TensorPayload push_input;
};

struct ClientDriver::Replacement {
  std::size_t i = 0;
  RouteHop old;
  std::vector<Hop> hops;
  std::size_t j = 0;                ///< the new hop being rebuilt
  std::vector<TensorPayload> x;     ///< its inputs: the old hop's, then each new hop's outputs
  std::function<void(Session&, Result<std::size_t>, bool)> done;
  bool moved = false;  ///< the old host moved rather than failed
};

bool ClientDriver::PushAttempt::settled() const {
  return failure.has_value() || std::all_of(outputs.begin(), outputs.end(), [](const auto& o) { return o.has_value(); });
}

ClientDriver::ClientDriver(ActorSystem& system, std::uint32_t id, std::unique_ptr<RoutePlanner> planner,
                           ClientDriverOptions options)
    : system_(system), id_(id), planner_(std::move(planner)), options_(options) {}

ClientDriver::~ClientDriver() = default;

// ---- operations and continuations ----

ClientDriver::Session* ClientDriver::live(std::uint64_t id, std::uint64_t op) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->op != op || op == 0) return nullptr;
  return it->second.get();
}

void ClientDriver::resume(std::uint64_t id, std::uint64_t op, const std::function<void(Session&)>& body) {
  Session* s = live(id, op);
  if (!s) return;  // the operation ended (closed, failed, cancelled): a late answer
  try {
    body(*s);
  } catch (const std::exception& e) {
    if (Session* again = live(id, op)) fail_operation(*again, error(StatusCode::kInternal, "client driver: ", e.what()));
  }
}

template <typename M>
void ClientDriver::ask(Session& s, const ActorRef<BlockHostProtocol>& host, const M& m,
                       std::function<void(Session&, Result<typename M::Reply>)> done) {
  const std::uint64_t id = s.id, op = s.op;
  system_.request_in_turn(id_, host, m, options_.timeout, [this, id, op, done = std::move(done)](Result<typename M::Reply> r) {
    resume(id, op, [&](Session& s) { done(s, std::move(r)); });
  });
}

void ClientDriver::fail_operation(Session& s, const Status& status) {
  s.op = 0;
  s.push.reset();
  if (s.opening) {
    s.opening.reply(status);
    s.opening = {};
    // The session never opened: free what its hops hold, and forget it.
    for (const Hop& hop : s.route) {
      if (hop.session) system_.request(hop.at.host, CloseSession{hop.session}, options_.timeout, [](Result<SessionState>) {});
    }
    sessions_.erase(s.id);
    return;
  }
  // Replay must stay consistent with the steps that completed; hosts may be ahead of them.
  for (Hop& hop : s.route) hop.inputs.resize(static_cast<std::size_t>(s.steps));
  s.dirty = true;
  s.stepping.reply(status);
  s.stepping = {};
}

// ---- handlers ----

Result<InferenceOpened> ClientDriver::handle(ActorContext& ctx, const OpenInference& m) {
  if (ctx.sender().peer != system_.self()) {
    return error(StatusCode::kRefused, "the client driver takes requests from its own process only");
  }
  if (m.max_length <= 0 || m.max_length > (std::int64_t{1} << 31)) {
    return error(StatusCode::kInvalidArgument, "a session needs between 1 and 2^31 positions, not ", m.max_length);
  }
  const TensorPayload& p = m.prompts;
  if (p.elements() > 0 && (p.type != ElementType::kF32 || p.shape.size() != 3 || p.shape[0] != options_.num_blocks ||
                           p.shape[1] < 1 || p.shape[2] < 1 ||
                           p.bytes != static_cast<std::size_t>(p.elements()) * sizeof(float))) {
    return error(StatusCode::kInvalidArgument, "deep prompts must be f32 [", options_.num_blocks, ", count, hidden]");
  }
  if (Status bad = check_adapter(m.adapter); !bad.is_ok()) return bad;
  auto owned = std::make_unique<Session>();
  Session& s = *owned;
  s.id = ++next_session_;
  s.capacity = m.max_length;
  s.prompts = m.prompts;
  s.prompt_offset = m.prompt_offset;
  s.adapter = m.adapter;
  s.op = ++next_op_;
  s.opening = ctx.defer_reply<InferenceOpened>();
  sessions_[s.id] = std::move(owned);
  const std::uint64_t id = s.id, op = s.op;
  planner_->route(0, options_.num_blocks, {}, [this, id, op](Result<std::vector<RouteHop>> route) {
    resume(id, op, [&](Session& s) {
      if (!route.is_ok()) {
        return fail_operation(s, error(route.status().code(), "no route through the swarm: ", route.status().message()));
      }
      for (const RouteHop& hop : route.value()) s.route.push_back(Hop{hop, 0, {}});
      open_hops(s, 0);
    });
  });
  return InferenceOpened{};  // answered later, through the deferred reply
}

Result<InferenceOutput> ClientDriver::handle(ActorContext& ctx, const InferenceStep& m) {
  if (ctx.sender().peer != system_.self()) {
    return error(StatusCode::kRefused, "the client driver takes requests from its own process only");
  }
  auto it = sessions_.find(m.session);
  if (it == sessions_.end()) return error(StatusCode::kNotFound, "no inference session ", m.session);
  Session& s = *it->second;
  if (s.op != 0) return error(StatusCode::kInvalidArgument, "session ", m.session, " has an operation under way");
  const TensorPayload& t = m.hidden;
  if (t.type != ElementType::kF32 || t.shape.size() != 2 || t.shape[1] != hidden_size_ || t.shape[0] < 1) {
    return error(StatusCode::kInvalidArgument, "a step takes f32 hidden states [n >= 1, ", hidden_size_, "]");
  }
  const std::int64_t n = t.shape[0];
  if (!m.keep.empty()) {
    if (std::string why = tree_path_error(m.keep, s.tree); !why.empty()) {
      return error(StatusCode::kInvalidArgument, "session ", m.session, ": ", why);
    }
  }
  if (!m.parents.empty()) {
    if (std::string why = token_tree_error(m.parents, n); !why.empty()) {
      return error(StatusCode::kInvalidArgument, "session ", m.session, ": ", why);
    }
  }
  const std::int64_t used = s.length + static_cast<std::int64_t>(m.keep.size());
  if (n > s.capacity - used) {
    return error(StatusCode::kInvalidArgument, "session ", m.session, " holds ", s.capacity, " positions; ", used,
                 " are used and the step has ", n);
  }
  if (t.bytes != static_cast<std::size_t>(n * hidden_size_) * sizeof(float)) {  // n is at most the capacity here
    return error(StatusCode::kInvalidArgument, "a step of ", n, " tokens has ", t.bytes, " bytes of hidden states");
  }
  // Encoded before the reply is deferred: a throw here (NaN in compressed form) answers at once.
  TensorPayload input = encode_hidden(t.as<float>(), n, hidden_size_, options_.wire_compression);
  s.op = ++next_op_;
  s.stepping = ctx.defer_reply<InferenceOutput>();
  s.failover_attempts = 0;
  s.n = n;
  s.shape = Session::Shape{m.parents, m.keep};
  ++s.tag;
  if (options_.push && s.route.size() > 1 && !s.dirty) {
    s.push_input = std::move(input);
    start_push(s);
  } else {
    relay_from(s, 0, std::move(input), s.dirty);
  }
  return InferenceOutput{};
}

Result<InferenceClosed> ClientDriver::handle(ActorContext& ctx, const CloseInference& m) {
  if (ctx.sender().peer != system_.self()) {
    return error(StatusCode::kRefused, "the client driver takes requests from its own process only");
  }
  auto it = sessions_.find(m.session);
  if (it == sessions_.end()) return error(StatusCode::kNotFound, "no inference session ", m.session);
  Session& s = *it->second;
  if (s.op != 0) {
    const bool opening = static_cast<bool>(s.opening);
    fail_operation(s, error(StatusCode::kCancelled, "session ", m.session, " was closed"));
    if (opening) return InferenceClosed{m.session};  // already forgotten, its hosts told
  }
  for (const Hop& hop : s.route) {
    system_.request(hop.at.host, CloseSession{hop.session}, options_.timeout, [](Result<SessionState>) {});
  }
  sessions_.erase(it);
  return InferenceClosed{m.session};
}

Result<InferenceReport> ClientDriver::handle(ActorContext& ctx, const DescribeInference& m) {
  if (ctx.sender().peer != system_.self()) {
    return error(StatusCode::kRefused, "the client driver takes requests from its own process only");
  }
  auto it = sessions_.find(m.session);
  if (it == sessions_.end()) return error(StatusCode::kNotFound, "no inference session ", m.session);
  const Session& s = *it->second;
  InferenceReport report;
  for (const Hop& hop : s.route) report.route.push_back({hop.at.host.address.peer, hop.at.first, hop.at.last});
  report.length = s.length;
  report.failovers = s.failovers;
  report.received_bytes = s.received_bytes;
  report.received_token_hops = s.received_token_hops;
  report.push = options_.push;
  report.wire_compression = options_.wire_compression;
  return report;
}

Result<BlockMapReply> ClientDriver::handle(ActorContext& ctx, const AwaitSwarmReady& m) {
  if (ctx.sender().peer != system_.self()) {
    return error(StatusCode::kRefused, "the client driver takes requests from its own process only");
  }
  if (m.timeout_ms < 0 || m.timeout_ms > 86400000 || m.min_hosts < 0) {
    return error(StatusCode::kInvalidArgument, "AwaitSwarmReady needs min_hosts >= 0 and a timeout of at most a day");
  }
  auto reply = ctx.defer_reply<BlockMapReply>();
  planner_->await_ready(m.min_hosts, std::chrono::milliseconds(m.timeout_ms),
                        [reply](Result<BlockMapReply> map) { reply.reply(map); });
  return BlockMapReply{};
}

// ---- opening ----

void ClientDriver::open_on(Session& s, const RouteHop& hop, std::function<void(Session&, Result<std::uint64_t>)> done) {
  ask(s, hop.host, HostInfo{}, [this, hop, done](Session& s, Result<HostInfoReply> info) {
    const PeerId peer = hop.host.address.peer;
    if (!info.is_ok()) {
      return done(s, error(info.status().code(), "host ", peer, " did not answer: ", info.status().to_string()));
    }
    if (hop.first < info->first || hop.last > info->last || hop.first >= hop.last) {
      return done(s, error(StatusCode::kUnavailable, "host ", peer, " serves blocks [", info->first, ", ", info->last,
                           "), not [", hop.first, ", ", hop.last, ")"));
    }
    if (info->hidden_size <= 0 || (hidden_size_ != 0 && info->hidden_size != hidden_size_)) {
      return done(s, error(StatusCode::kInvalidArgument, "host ", peer, " has hidden size ", info->hidden_size,
                           ", the swarm ", hidden_size_));
    }
    hidden_size_ = info->hidden_size;
    const std::uint64_t session = (s.id << 20) + ++s.next_hop_session;
    TensorPayload prompts;
    if (s.prompts.elements() > 0) {  // this hop's blocks' part
      const std::int64_t row = s.prompts.shape[1] * s.prompts.shape[2];
      prompts = TensorPayload::copy_of(ElementType::kF32, {hop.last - hop.first, s.prompts.shape[1], s.prompts.shape[2]},
                                       s.prompts.as<float>() + hop.first * row,
                                       static_cast<std::size_t>((hop.last - hop.first) * row));
    }
    ask(s, hop.host,
        OpenSession{session, s.capacity, hop.first, hop.last, prompts, s.prompt_offset,
                    slice_adapter(s.adapter, hop.first, hop.last)},
        [peer, session, done](Session& s, Result<SessionOpened> opened) {
          if (!opened.is_ok()) {
            return done(s, error(opened.status().code(), "host ", peer, " refused the session: ", opened.status().to_string()));
          }
          done(s, session);
        });
  });
}

void ClientDriver::open_hops(Session& s, std::size_t i) {
  if (i == s.route.size()) {
    std::string text;
    for (const Hop& hop : s.route) text += (text.empty() ? "" : " -> ") + describe_hop(hop.at);
    log(LogLevel::kInfo, "session ", s.id, " route: ", text);
    s.op = 0;
    s.opening.reply(InferenceOpened{s.id, hidden_size_});
    s.opening = {};
    return;
  }
  open_on(s, s.route[i].at, [this, i](Session& s, Result<std::uint64_t> opened) {
    if (opened.is_ok()) {
      s.route[i].session = opened.value();
      return open_hops(s, i + 1);
    }
    if (!host_lost(opened.status().code()) || ++s.failover_attempts > options_.max_failovers) {
      return fail_operation(s, opened.status());
    }
    log(LogLevel::kWarn, describe_hop(s.route[i].at), " unusable (", opened.status().to_string(), "); routing around it");
    planner_->report_failure(s.route[i].at.host.address.peer);
    failover(s, i, /*moved=*/false, [this, i](Session& s, Result<std::size_t> count) {
      if (!count.is_ok()) return fail_operation(s, count.status());
      open_hops(s, i + count.value());  // the new hops are open already
    });
  });
}

// ---- stepping ----

void ClientDriver::start_push(Session& s) {
  std::vector<PeerId> peers;
  std::vector<PushTarget> next;
  const ActorAddress receiver{system_.self(), id_};
  for (std::size_t i = 0; i < s.route.size(); ++i) {
    peers.push_back(s.route[i].at.host.address.peer);
    if (i > 0) next.push_back({s.route[i].at.host.address, s.route[i].session, {}});
  }
  // Each later hop gets this client's grant, naming the one target it may forward to.
  for (std::size_t i = 0; i < next.size(); ++i) {
    const auto key = system_.transport().link_key(next[i].host.peer);
    if (!key) continue;
    PushGrantScope scope{receiver, s.id, next[i].session, s.position(), s.tag, static_cast<std::int64_t>(i + 1), std::nullopt};
    if (i + 1 < next.size()) scope.next = next[i + 1];
    next[i].grant = grants_.make(scope, *key);
  }
  PushAttempt attempt;
  attempt.tag = s.tag;
  attempt.outputs.resize(peers.size());
  attempt.peers = peers;
  for (PeerId peer : peers) {
    if (failed_peers_.count(peer)) {
      attempt.failure = {peer, error(StatusCode::kPeerFailed, "host ", peer, " has failed")};
      break;
    }
  }
  s.push = std::move(attempt);
  if (!s.push->failure) {
    const PushStep step{receiver, s.id, s.route[0].session, s.position(), s.tag, 0, next, s.push_input, {},
                        s.shape.parents, s.shape.keep};
    if (Status sent = system_.send(s.route[0].at.host, step, id_); !sent.is_ok()) s.push->failure = {peers[0], sent};
  }
  if (s.push->settled()) return finish_push(s);
  const std::uint64_t id = s.id, op = s.op, tag = s.tag;
  system_.after_in_turn(id_, options_.timeout, [this, id, op, tag] {
    Session* s = live(id, op);
    if (!s || !s->push || s->push->tag != tag) return;
    std::size_t k = 0;
    while (k < s->push->outputs.size() && s->push->outputs[k]) ++k;
    const PeerId culprit = s->push->peers[std::min(k, s->push->peers.size() - 1)];
    s->push->failure = {culprit, error(StatusCode::kTimeout, "no output from hop ", k, " (host ", culprit, ") within ",
                                       options_.timeout.count(), " ms")};
    finish_push(*s);
  });
}

void ClientDriver::handle(ActorContext& ctx, const PushedOutput& m) {
  auto it = sessions_.find(m.request);
  if (it == sessions_.end() || !it->second->push || it->second->push->tag != m.tag) return;  // a stale attempt
  Session& s = *it->second;
  PushAttempt& a = *s.push;
  if (m.hop < 0 || m.hop >= static_cast<std::int64_t>(a.outputs.size())) return;
  const PeerId from = ctx.sender().peer;
  if (std::find(a.peers.begin(), a.peers.end(), from) == a.peers.end()) {
    if (off_route_logged_.insert(from).second) {  // once per peer: a sender must not flood the log
      log(LogLevel::kWarn, "client driver: dropped a pushed output for session ", m.request, " from peer ", from,
          ", which is not on its route (logged once per peer)");
    }
    return;
  }
  if (m.code != 0) {
    const bool known = m.code > 0 && m.code <= static_cast<std::int32_t>(kLastStatusCode);
    const StatusCode code = known ? static_cast<StatusCode>(m.code) : StatusCode::kInternal;
    if (!a.failure) a.failure = {m.host, Status(code, "host " + std::to_string(m.host) + ": " + m.message)};
  } else if (a.peers[static_cast<std::size_t>(m.hop)] == from) {
    a.outputs[static_cast<std::size_t>(m.hop)] = m.hidden;
  }
  if (a.settled()) {
    const std::uint64_t id = s.id, op = s.op;
    resume(id, op, [&](Session& s) { finish_push(s); });
  }
}

void ClientDriver::on_peer_failed(ActorSystem&, PeerId peer, const Status&) {
  failed_peers_.insert(peer);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> affected;
  for (auto& [id, s] : sessions_) {
    if (!s->push || s->push->failure) continue;
    const auto& peers = s->push->peers;
    if (std::find(peers.begin(), peers.end(), peer) == peers.end()) continue;
    s->push->failure = {peer, error(StatusCode::kPeerFailed, "host ", peer, " failed")};
    affected.emplace_back(id, s->op);
  }
  for (const auto& [id, op] : affected) resume(id, op, [&](Session& s) { finish_push(s); });
}

void ClientDriver::finish_push(Session& s) {
  PushAttempt attempt = std::move(*s.push);
  s.push.reset();
  // The hops whose outputs arrived are done; their inputs are kept for replay.
  TensorPayload current = std::move(s.push_input);
  std::size_t resume_at = 0;
  for (const auto& out : attempt.outputs) {
    if (!out) break;
    if (Status ok = accept_output(s, *out, s.n); !ok.is_ok()) return fail_operation(s, ok);
    s.route[resume_at].inputs.push_back(current);
    current = *out;
    ++resume_at;
  }
  if (resume_at == s.route.size()) return complete_step(s, std::move(current));
  const Status why = attempt.failure ? attempt.failure->second : error(StatusCode::kInternal, "push ended early");
  log(host_moved(why.code()) ? LogLevel::kInfo : LogLevel::kWarn, "session ", s.id, ": push failed at hop ", resume_at,
      " (", why.to_string(), "); relaying from there");
  ++s.tag;  // a new attempt: the failed push's stragglers are ignored
  relay_from(s, resume_at, std::move(current), /*rollback=*/true);  // later hops may have advanced
}

void ClientDriver::relay_from(Session& s, std::size_t i, TensorPayload input, bool rollback) {
  s.rollback_rest = rollback;
  // The route may grow while stepping: a failed hop replaced by several runs only the first of
  // them in step_hop, and the others follow here. So the bound is read again at every hop.
  if (i >= s.route.size()) return complete_step(s, std::move(input));
  step_hop(s, i, std::move(input), rollback);
}

void ClientDriver::step_hop(Session& s, std::size_t i, TensorPayload input, bool rollback) {
  const Hop& hop = s.route[i];
  const auto host = hop.at.host;
  auto step = [this, i, input, host](Session& s) {
    const Step m{s.route[i].session, s.position(), input, s.tag, s.shape.parents, s.shape.keep};
    ask(s, host, m, [this, i, input](Session& s, Result<StepResult> r) {
      if (!r.is_ok()) return hop_lost(s, i, input, r.status());
      if (Status ok = accept_output(s, r->hidden, s.n); !ok.is_ok()) return fail_operation(s, ok);
      s.route[i].inputs.push_back(input);
      relay_from(s, i + 1, r->hidden, s.rollback_rest);
    });
  };
  if (!rollback) return step(s);
  // The host may be past the session (it ran this step, or part of it): back to the length, and
  // the token tree the last step left there is run again (its output is known already).
  ask(s, host, Rollback{hop.session, s.length, s.tag}, [this, i, input, step, host](Session& s, Result<SessionState> r) {
    if (!r.is_ok()) return hop_lost(s, i, input, r.status());
    if (s.tree.empty()) return step(s);
    const Step again{s.route[i].session, s.length, s.route[i].inputs.back(), s.tag, s.tree, {}};
    ask(s, host, again, [i, input, step, this](Session& s, Result<StepResult> r) {
      if (!r.is_ok()) return hop_lost(s, i, input, r.status());
      step(s);
    });
  });
}

void ClientDriver::hop_lost(Session& s, std::size_t i, TensorPayload input, const Status& why) {
  const RouteHop hop = s.route[i].at;
  if (!host_lost(why.code())) {
    return fail_operation(s, error(why.code(), "step on ", describe_hop(hop), " failed: ", why.to_string()));
  }
  if (++s.failover_attempts > options_.max_failovers) {
    return fail_operation(s, error(StatusCode::kUnavailable, "gave up on blocks [", hop.first, ", ", hop.last, ") after ",
                                   options_.max_failovers, " failovers (last: ", why.to_string(), ")"));
  }
  const bool moved = host_moved(why.code());
  if (moved) {
    log(LogLevel::kInfo, "session ", s.id, ": ", describe_hop(hop), " no longer holds it: ", why.message());
  } else {
    log(LogLevel::kWarn, "session ", s.id, ": ", describe_hop(hop), " lost: ", why.to_string());
    planner_->report_failure(hop.host.address.peer);
  }
  failover(s, i, moved, [this, i, input](Session& s, Result<std::size_t> count) {
    if (!count.is_ok()) return fail_operation(s, count.status());
    step_hop(s, i, input, /*rollback=*/false);  // fresh sessions are at the length already
  });
}

void ClientDriver::complete_step(Session& s, TensorPayload output) {
  s.length = s.position() + (s.shape.parents.empty() ? s.n : 0);
  s.tree = s.shape.parents;
  s.shapes.push_back(std::move(s.shape));
  s.shape = {};
  ++s.steps;
  s.dirty = false;
  s.op = 0;
  s.stepping.reply(InferenceOutput{s.length, std::move(output)});
  s.stepping = {};
}

Status ClientDriver::accept_output(Session& s, const TensorPayload& t, std::int64_t n) {
  // A malformed answer stops here, not at the next host.
  auto decoded = decode_hidden(t, hidden_size_);
  if (!decoded.is_ok()) return error(StatusCode::kInvalidArgument, "a host returned malformed hidden states: ", decoded.status().message());
  if (hidden_tokens(t) != n) {
    return error(StatusCode::kInvalidArgument, "a host returned hidden states for ", hidden_tokens(t), " tokens instead of ", n);
  }
  s.received_bytes += static_cast<std::int64_t>(t.bytes);
  s.received_token_hops += n;
  return Status::ok();
}

// ---- failover ----

void ClientDriver::failover(Session& s, std::size_t i, bool moved, std::function<void(Session&, Result<std::size_t>)> done) {
  // A new route for the hop's blocks; a failure there moves on to yet another route.
  replace_hop(s, i, moved, [this, i, done](Session& s, Result<std::size_t> count, bool retryable) {
    if (!count.is_ok() && retryable && host_lost(count.status().code()) &&
        ++s.failover_attempts <= options_.max_failovers) {
      log(LogLevel::kWarn, "session ", s.id, ": re-routing blocks [", s.route[i].at.first, ", ", s.route[i].at.last,
          ") failed: ", count.status().to_string());
      return failover(s, i, /*moved=*/false, done);
    }
    done(s, std::move(count));
  });
}

void ClientDriver::warn_numerics_change(const RouteHop& failed, const std::vector<RouteHop>& replacement,
                                       const char* what) {
  auto quoted = [](const std::string& numerics) {
    return numerics.empty() ? std::string("unannounced numerics") : "'" + numerics + "'";
  };
  for (const RouteHop& hop : replacement) {
    if (hop.last <= failed.first || hop.first >= failed.last || hop.numerics == failed.numerics) continue;
    // No replica like the failed host was left: its replacement computes other bits.
    log(LogLevel::kWarn, describe_hop(hop), " runs ", quoted(hop.numerics), ", not ", quoted(failed.numerics),
        " as host ", failed.host.address.peer, " did: ", what, " may change from here");
  }
}

void ClientDriver::replace_hop(Session& s, std::size_t i, bool moved,
                               std::function<void(Session&, Result<std::size_t>, bool)> done) {
  auto r = std::make_shared<Replacement>();
  r->moved = moved;
  r->i = i;
  r->old = s.route[i].at;
  r->done = std::move(done);
  const std::uint64_t id = s.id, op = s.op;
  planner_->route(r->old.first, r->old.last, r->old.numerics, [this, id, op, r](Result<std::vector<RouteHop>> planned) {
    resume(id, op, [&](Session& s) {
      if (!planned.is_ok()) {
        return r->done(s, error(planned.status().code(), "blocks [", r->old.first, ", ", r->old.last, ") have no host left: ",
                                planned.status().message()), false);
      }
      for (const RouteHop& hop : planned.value()) r->hops.push_back(Hop{hop, 0, {}});
      r->x = s.route[r->i].inputs;  // rebuild the new hosts' caches from what the old hop has seen
      rebuild(s, r);
    });
  });
}

void ClientDriver::rebuild(Session& s, std::shared_ptr<Replacement> r) {
  if (r->j == r->hops.size()) {
    std::string text;
    for (const Hop& hop : r->hops) text += (text.empty() ? "" : " -> ") + describe_hop(hop.at);
    log(r->moved ? LogLevel::kInfo : LogLevel::kWarn, "session ", s.id, ": blocks [", r->old.first, ", ", r->old.last, ") move from host ",
        r->old.host.address.peer, " to ", text,
        s.length > 0 ? " (replayed " + std::to_string(s.length) + " positions)" : std::string());
    std::vector<RouteHop> replacement;
    for (const Hop& hop : r->hops) replacement.push_back(hop.at);
    warn_numerics_change(r->old, replacement, "the text");
    const auto at = s.route.begin() + static_cast<std::ptrdiff_t>(r->i);
    s.route.insert(s.route.erase(at), r->hops.begin(), r->hops.end());
    ++s.failovers;
    return r->done(s, r->hops.size(), true);
  }
  open_on(s, r->hops[r->j].at, [this, r](Session& s, Result<std::uint64_t> opened) {
    if (!opened.is_ok()) {
      const StatusCode code = opened.status().code();
      if (host_lost(code) && !host_moved(code)) planner_->report_failure(r->hops[r->j].at.host.address.peer);
      return r->done(s, opened.status(), true);
    }
    Hop& hop = r->hops[r->j];
    hop.session = opened.value();
    hop.inputs = r->x;
    if (r->x.empty()) {
      ++r->j;
      return rebuild(s, r);
    }
    replay(s, hop, r->x, [this, r](Session& s, Result<std::vector<TensorPayload>> outputs) {
      const RouteHop& at = r->hops[r->j].at;
      if (!outputs.is_ok()) {
        // A host that moved to other blocks meanwhile answered: it has not failed.
        if (!host_moved(outputs.status().code())) planner_->report_failure(at.host.address.peer);
        return r->done(s, error(outputs.status().code(), "replay on ", describe_hop(at), " failed: ", outputs.status().to_string()),
                       true);
      }
      r->x = std::move(outputs).value();
      ++r->j;
      rebuild(s, r);
    });
  });
}

void ClientDriver::replay(Session& s, const Hop& hop, std::vector<TensorPayload> steps,
                          std::function<void(Session&, Result<std::vector<TensorPayload>>)> done) {
  struct Replay {
    ActorRef<BlockHostProtocol> host;
    std::uint64_t session = 0;
    std::vector<TensorPayload> steps;
    std::vector<std::optional<TensorPayload>> answers;
    std::vector<TensorPayload> outputs;  // in order, checked
    std::size_t sent = 0;
    std::int64_t position = 0;
    bool over = false;
    std::function<void(Session&, Result<std::vector<TensorPayload>>)> done;
  };
  auto r = std::make_shared<Replay>();
  r->host = hop.at.host;
  r->session = hop.session;
  r->steps = std::move(steps);
  r->answers.resize(r->steps.size());
  r->done = std::move(done);
  auto pump = std::make_shared<std::function<void(Session&)>>();
  *pump = [this, r, weak = std::weak_ptr<std::function<void(Session&)>>(pump)](Session& s) {
    while (r->sent < r->steps.size() && r->sent < r->outputs.size() + kReplayInFlight) {
      const std::size_t k = r->sent++;
      const TensorPayload& step = r->steps[k];
      const Session::Shape& shape = s.shapes.at(k);  // the steps replayed are completed ones
      r->position += static_cast<std::int64_t>(shape.keep.size());
      auto again = weak.lock();
      const Step m{r->session, r->position, step, s.tag, shape.parents, shape.keep};
      ask(s, r->host, m, [this, r, k, again](Session& s, Result<StepResult> answer) {
        if (r->over) return;
        if (!answer.is_ok()) {
          r->over = true;
          return r->done(s, answer.status());
        }
        r->answers[k] = answer->hidden;
        while (r->outputs.size() < r->steps.size() && r->answers[r->outputs.size()]) {
          const std::size_t next = r->outputs.size();
          if (Status ok = accept_output(s, *r->answers[next], hidden_tokens(r->steps[next])); !ok.is_ok()) {
            r->over = true;
            return r->done(s, ok);
          }
          r->outputs.push_back(std::move(*r->answers[next]));
          r->answers[next].reset();
        }
        if (r->outputs.size() == r->steps.size()) {
          r->over = true;
          return r->done(s, std::move(r->outputs));
        }
        if (again) (*again)(s);
      });
      if (shape.parents.empty()) r->position += hidden_tokens(step);
    }
  };
  (*pump)(s);
}

}  // namespace sepal

namespace sepal {

ActorRef<ClientDriverProtocol> add_client_driver(ActorSystem& system, std::unique_ptr<RoutePlanner> planner,
                                                 ClientDriverOptions options) {
  return system.adopt_with_id(kClientDriverActorId,
                              std::make_unique<ClientDriver>(system, kClientDriverActorId, std::move(planner), options));
}

}  // namespace sepal

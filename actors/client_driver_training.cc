// The client driver's training passes (actors/protocol/client_driver.h, TrainingPass): a
// micro-batch forward through a planned route of hosts, each hop's input kept for the backward,
// and the backward in reverse. Hosts are stateless for training, so a failed hop is recomputed
// on whatever route now covers its blocks: with f32 on the wire the gradients do not change.
#include <algorithm>
#include <cstring>

#include "actors/adapter_payload.h"
#include "actors/client_driver.h"
#include "actors/hidden_codec.h"
#include "runtime/log.h"

namespace sepal {
namespace {

// Forwards kept for their backward, at most (a caller that never runs them is refused past it).
constexpr std::size_t kMaxKeptPasses = 4096;

// Errors after which the pass moves to other hosts: the host is gone, unreachable or leaving, or
// no longer serves the blocks (it moved: kNotFound).
bool host_gone(StatusCode code) {
  return code == StatusCode::kPeerFailed || code == StatusCode::kTimeout || code == StatusCode::kCancelled ||
         code == StatusCode::kUnavailable || code == StatusCode::kNotFound;
}

// Tensor bytes of a training request or reply (what the wire spends on the pass).
std::int64_t tensor_bytes(const TrainForward& m) { return static_cast<std::int64_t>(m.hidden.bytes + m.prompts.bytes + m.adapter.values.bytes); }
std::int64_t tensor_bytes(const TrainBackward& m) {
  return static_cast<std::int64_t>(m.hidden.bytes + m.grad.bytes + m.prompts.bytes + m.adapter.values.bytes);
}
std::int64_t tensor_bytes(const TrainForwardOutput& r) { return static_cast<std::int64_t>(r.hidden.bytes); }
std::int64_t tensor_bytes(const TrainBackwardOutput& r) {
  return static_cast<std::int64_t>(r.grad.bytes + r.prompt_grads.bytes + r.adapter_grads.bytes);
}

}  // namespace


Result<TrainingPassDone> ClientDriver::handle(ActorContext& ctx, const TrainingPass& m) {
  if (ctx.sender().peer != system_.self()) {
    return error(StatusCode::kRefused, "the client driver takes requests from its own process only");
  }
  auto t = std::make_unique<Training>();
  // The swarm's hidden size, or (before any host said it) the pass's own: the hosts check it.
  t->hidden = hidden_size_ != 0 ? hidden_size_ : m.hidden.shape.size() == 2 ? m.hidden.shape[1] : 0;
  const std::int64_t h = t->hidden, blocks = options_.num_blocks;
  if (h <= 0) return error(StatusCode::kInvalidArgument, "a training pass takes f32 [tokens, hidden_size]");
  t->op = ++next_training_op_;
  t->pass = m.pass;
  t->keep = m.keep;
  std::vector<Segment> segments;
  if (m.backward) {
    auto kept = kept_.find(m.pass);
    if (kept == kept_.end()) return error(StatusCode::kNotFound, "no kept forward for training pass ", m.pass);
    t->lengths = kept->second.lengths;  // the kept pass ends only once the request is accepted
    t->prompts = kept->second.prompts;
    t->prompt_offset = kept->second.prompt_offset;
    t->adapter = kept->second.adapter;
    t->adapter_key = kept->second.adapter_key;
  } else {
    if (m.keep && kept_.count(m.pass)) return error(StatusCode::kInvalidArgument, "training pass ", m.pass, " is kept already");
    if (m.keep && kept_.size() >= kMaxKeptPasses) {
      return error(StatusCode::kResourceExhausted, kMaxKeptPasses, " forwards await their backward already");
    }
    t->lengths = m.lengths;
    t->prompts = m.prompts;
    t->prompt_offset = m.prompt_offset;
    if (Status bad = check_adapter(m.adapter); !bad.is_ok()) return bad;
    t->adapter = m.adapter;
    t->adapter_key = adapter_key(m.adapter);
  }
  for (std::int64_t n : t->lengths) {
    if (n < 1) return error(StatusCode::kInvalidArgument, "a sequence of ", n, " tokens");
    t->tokens += n;
  }
  if (t->lengths.empty()) return error(StatusCode::kInvalidArgument, "a training pass needs at least one sequence");
  const TensorPayload& x = m.hidden;
  if (x.type != ElementType::kF32 || x.shape != std::vector<std::int64_t>{t->tokens, h} ||
      x.bytes != static_cast<std::size_t>(t->tokens * h) * sizeof(float)) {
    return error(StatusCode::kInvalidArgument, "a training pass takes f32 [", t->tokens, ", ", h, "]");
  }
  if (t->prompts.elements() > 0) {
    const TensorPayload& p = t->prompts;
    if (p.type != ElementType::kF32 || p.shape.size() != 3 || p.shape[0] != blocks || p.shape[2] != h ||
        p.shape[1] < 1 || p.bytes != static_cast<std::size_t>(p.elements()) * sizeof(float)) {
      return error(StatusCode::kInvalidArgument, "deep prompts must be f32 [", blocks, ", count, ", h, "]");
    }
    t->count = p.shape[1];
  }
  // Encoded before the reply is deferred: a throw here (NaN in compressed form) answers at once.
  TensorPayload input;
  if (!m.backward) {
    try {
      input = encode_hidden(x.as<float>(), t->tokens, h, options_.wire_compression);
    } catch (const std::exception& e) {
      return error(StatusCode::kInvalidArgument, "training pass ", m.pass, ": ", e.what());
    }
  }
  if (m.backward) {
    segments = std::move(kept_.at(m.pass).segments);
    kept_.erase(m.pass);
  }
  t->reply = ctx.defer_reply<TrainingPassDone>();
  Training& pass = *t;
  training_[t->op] = std::move(t);
  if (m.backward) {
    pass.prompt_grads.assign(static_cast<std::size_t>(blocks * pass.count * h), 0.0f);
    if (has_adapter(pass.adapter)) pass.adapter_grads.assign(static_cast<std::size_t>(pass.adapter.values.elements()), 0.0f);
    TensorPayload grad = TensorPayload::copy_of(ElementType::kF32, {pass.tokens, h}, x.as<float>(),
                                                static_cast<std::size_t>(pass.tokens * h));
    backward_segments(pass, std::move(segments), std::move(grad), [this](Training& t, TensorPayload grad) {
      TrainingPassDone done{std::move(grad), {}, {}, t.hops, t.failovers, t.tensor_bytes};
      if (t.count > 0) {
        done.prompt_grads = TensorPayload::copy_of(ElementType::kF32, {options_.num_blocks, t.count, t.hidden},
                                                   t.prompt_grads.data(), t.prompt_grads.size());
      }
      if (has_adapter(t.adapter)) {
        done.adapter_grads = TensorPayload::copy_of(ElementType::kF32, t.adapter.values.shape, t.adapter_grads.data(),
                                                    t.adapter_grads.size());
      }
      t.reply.reply(std::move(done));
      training_.erase(t.op);
    });
  } else {
    forward_blocks(pass, 0, blocks, {}, std::move(input), true,
                   [this](Training& t, std::vector<Segment> segments, TensorPayload output) {
                     auto decoded = decode_hidden(output, t.hidden);
                     if (!decoded.is_ok()) return fail_training(t, decoded.status());
                     const std::vector<float>& out = decoded.value();
                     t.reply.reply(TrainingPassDone{TensorPayload::copy_of(ElementType::kF32, {t.tokens, t.hidden},
                                                                           out.data(), out.size()),
                                                    {}, {}, t.hops, t.failovers, t.tensor_bytes});
                     hidden_size_ = t.hidden;
                     if (t.keep) {
                       kept_[t.pass] = KeptPass{t.lengths, t.prompts, t.prompt_offset, t.adapter, t.adapter_key,
                                                         std::move(segments)};
                     }
                     training_.erase(t.op);
                   });
  }
  return TrainingPassDone{};  // answered later, through the deferred reply
}

std::uint64_t ClientDriver::adapter_key(const AdapterPayload& a) {
  if (!has_adapter(a)) return 0;
  const AdapterPayload& b = last_adapter_;
  const bool same = has_adapter(b) && a.method == b.method && a.rank == b.rank && a.alpha == b.alpha &&
                    a.targets == b.targets && a.values.type == b.values.type && a.values.shape == b.values.shape &&
                    a.values.bytes == b.values.bytes && std::memcmp(a.values.data, b.values.data, a.values.bytes) == 0;
  if (!same) {
    last_adapter_ = a;
    last_adapter_.values = TensorPayload::copy_of(ElementType::kF32, a.values.shape, a.values.as<float>(),
                                                  static_cast<std::size_t>(a.values.elements()));
    ++last_adapter_key_;
  }
  return last_adapter_key_;
}

AdapterPayload ClientDriver::hop_adapter(const Training& t, PeerId host, std::int64_t first, std::int64_t last,
                                         bool full) {
  if (!has_adapter(t.adapter)) return {};
  const HeldAdapter held{host, t.adapter_key, first, last};
  auto it = std::find(held_adapters_.begin(), held_adapters_.end(), held);
  if (!full && it != held_adapters_.end()) {
    AdapterPayload key_only;
    key_only.held = t.adapter_key;
    return key_only;
  }
  if (it != held_adapters_.end()) held_adapters_.erase(it);
  // As the host does: its oldest goes when it keeps as many as it may.
  const auto of_host = std::count_if(held_adapters_.begin(), held_adapters_.end(),
                                     [&](const HeldAdapter& h) { return h.host == host; });
  if (of_host >= static_cast<std::ptrdiff_t>(kHeldAdaptersPerHost)) {
    held_adapters_.erase(std::find_if(held_adapters_.begin(), held_adapters_.end(),
                                      [&](const HeldAdapter& h) { return h.host == host; }));
  }
  held_adapters_.push_back(held);
  AdapterPayload p = slice_adapter(t.adapter, first, last);
  p.held = t.adapter_key;
  return p;
}

template <typename M>
void ClientDriver::ask_training(Training& t, const ActorRef<BlockHostProtocol>& host, M m,
                                std::function<void(Training&, Result<typename M::Reply>)> done) {
  const bool full = m.adapter.held != 0;  // a resend after the host kept nothing under the key
  m.adapter = hop_adapter(t, host.address.peer, m.first, m.last, full);
  ++t.hops;
  t.tensor_bytes += tensor_bytes(m);
  const std::uint64_t op = t.op;
  system_.request_in_turn(id_, host, m, options_.timeout, [this, op, host, m, done = std::move(done)](Result<typename M::Reply> r) mutable {
    auto it = training_.find(op);
    if (it == training_.end()) return;  // the pass ended
    if (!r.is_ok() && r.status().code() == StatusCode::kFailedPrecondition && m.adapter.held != 0 &&
        !has_adapter(m.adapter)) {
      // The host keeps nothing under the key (it restarted, moved, or let it go): once more in full.
      std::erase(held_adapters_, HeldAdapter{host.address.peer, m.adapter.held, m.first, m.last});
      return ask_training<M>(*it->second, host, std::move(m), std::move(done));
    }
    if (r.is_ok()) it->second->tensor_bytes += tensor_bytes(r.value());
    try {
      done(*it->second, std::move(r));
    } catch (const std::exception& e) {
      if (auto again = training_.find(op); again != training_.end()) {
        fail_training(*again->second, error(StatusCode::kInternal, "client driver: ", e.what()));
      }
    }
  });
}

void ClientDriver::fail_training(Training& t, const Status& why) {
  t.reply.reply(why);
  training_.erase(t.op);
}

bool ClientDriver::training_failover(Training& t, const RouteHop& at, const Status& why) {
  if (!host_gone(why.code())) {
    fail_training(t, error(why.code(), describe_hop(at), ": ", why.message()));
    return false;
  }
  planner_->report_failure(at.host.address.peer);
  if (++t.failovers > options_.max_failovers) {
    fail_training(t, error(why.code(), "training pass ", t.pass, ": gave up after ", options_.max_failovers,
                           " failovers; last: ", describe_hop(at), ": ", why.message()));
    return false;
  }
  log(LogLevel::kWarn, describe_hop(at), " failed a training pass (", why.to_string(), "); recomputing elsewhere");
  return true;
}

TensorPayload ClientDriver::prompt_slice(const Training& t, std::int64_t first, std::int64_t last) const {
  if (t.count == 0) return {};
  const std::int64_t row = t.count * t.hidden;
  return TensorPayload::copy_of(ElementType::kF32, {last - first, t.count, t.hidden},
                                t.prompts.as<float>() + first * row, static_cast<std::size_t>((last - first) * row));
}

void ClientDriver::forward_blocks(Training& t, std::int64_t first, std::int64_t last, const std::string& numerics,
                                  TensorPayload input, bool need_output, SegmentsDone done) {
  const std::uint64_t op = t.op;
  planner_->route(first, last, numerics, [this, op, last, input = std::move(input), need_output,
                                          done = std::move(done)](Result<std::vector<RouteHop>> route) mutable {
    auto it = training_.find(op);
    if (it == training_.end()) return;
    if (!route.is_ok()) {
      return fail_training(*it->second,
                           error(route.status().code(), "no route through the swarm: ", route.status().message()));
    }
    forward_hops(*it->second, {}, std::move(route).value(), last, std::move(input), need_output, std::move(done));
  });
}

void ClientDriver::forward_hops(Training& t, std::vector<Segment> done_hops, std::vector<RouteHop> todo,
                                std::int64_t last, TensorPayload input, bool need_output, SegmentsDone done) {
  const std::size_t i = done_hops.size();
  if (i == todo.size()) return done(t, std::move(done_hops), std::move(input));
  const RouteHop hop = todo[i];
  if (!need_output && i + 1 == todo.size()) {
    done_hops.push_back(Segment{hop, std::move(input)});
    return done(t, std::move(done_hops), {});
  }
  TrainForward m{hop.first, hop.last, t.lengths, input, prompt_slice(t, hop.first, hop.last), t.prompt_offset, {}};
  ask_training<TrainForward>(
      t, hop.host, m,
      [this, done_hops = std::move(done_hops), todo = std::move(todo), last, input, need_output,
       done = std::move(done)](Training& t, Result<TrainForwardOutput> r) mutable {
        const RouteHop hop = todo[done_hops.size()];
        if (!r.is_ok()) {
          if (!training_failover(t, hop, r.status())) return;
          // A new route for the rest of the blocks, from this hop's input.
          const std::int64_t from = hop.first;
          const std::uint64_t op = t.op;
          planner_->route(from, last, hop.numerics, [this, op, hop, done_hops = std::move(done_hops), last, input,
                                                     need_output, done = std::move(done)](Result<std::vector<RouteHop>> route) mutable {
            auto it = training_.find(op);
            if (it == training_.end()) return;
            if (!route.is_ok()) {
              return fail_training(*it->second, error(route.status().code(), "no route through the swarm: ",
                                                      route.status().message()));
            }
            warn_numerics_change(hop, route.value(), "the losses");
            std::vector<RouteHop> todo;
            for (const Segment& s : done_hops) todo.push_back(s.at);
            for (const RouteHop& h : route.value()) todo.push_back(h);
            forward_hops(*it->second, std::move(done_hops), std::move(todo), last, std::move(input), need_output,
                         std::move(done));
          });
          return;
        }
        if (hidden_tokens(r->hidden) != t.tokens || r->hidden.type != input.type) {
          return fail_training(t, error(StatusCode::kInternal, describe_hop(hop), " answered a training pass of ",
                                        t.tokens, " tokens with ", hidden_tokens(r->hidden)));
        }
        done_hops.push_back(Segment{hop, std::move(input)});
        forward_hops(t, std::move(done_hops), std::move(todo), last, std::move(r->hidden), need_output, std::move(done));
      });
}

void ClientDriver::backward_segments(Training& t, std::vector<Segment> segments, TensorPayload grad, GradDone done) {
  if (segments.empty()) return done(t, std::move(grad));
  Segment last = std::move(segments.back());
  segments.pop_back();
  backward_one(t, std::move(last), std::move(grad),
               [this, segments = std::move(segments), done = std::move(done)](Training& t, TensorPayload grad) mutable {
                 backward_segments(t, std::move(segments), std::move(grad), std::move(done));
               });
}

void ClientDriver::backward_one(Training& t, Segment segment, TensorPayload grad, GradDone done) {
  const RouteHop hop = segment.at;
  TrainBackward m{hop.first,      hop.last, t.lengths, segment.input, grad, prompt_slice(t, hop.first, hop.last),
                  t.prompt_offset, {}};
  ask_training<TrainBackward>(
      t, hop.host, m,
      [this, segment = std::move(segment), grad, done = std::move(done)](Training& t,
                                                                         Result<TrainBackwardOutput> r) mutable {
        const RouteHop hop = segment.at;
        const std::int64_t h = t.hidden;
        if (!r.is_ok()) {
          if (!training_failover(t, hop, r.status())) return;
          // Whatever now covers these blocks: run the forward through all of it but its last hop
          // (for their inputs), then the backward through each.
          forward_blocks(t, hop.first, hop.last, hop.numerics, segment.input, false,
                         [this, hop, grad = std::move(grad), done = std::move(done)](
                             Training& t, std::vector<Segment> parts, TensorPayload) mutable {
                           std::vector<RouteHop> replacement;
                           for (const Segment& part : parts) replacement.push_back(part.at);
                           warn_numerics_change(hop, replacement, "the losses");
                           backward_segments(t, std::move(parts), std::move(grad), std::move(done));
                         });
          return;
        }
        const TrainBackwardOutput& out = r.value();
        const std::int64_t blocks = hop.last - hop.first;
        if (out.grad.type != ElementType::kF32 || out.grad.shape != std::vector<std::int64_t>{t.tokens, h} ||
            out.grad.bytes != static_cast<std::size_t>(t.tokens * h) * sizeof(float) ||
            (t.count > 0 && (out.prompt_grads.type != ElementType::kF32 ||
                             out.prompt_grads.shape != std::vector<std::int64_t>{blocks, t.count, h} ||
                             out.prompt_grads.bytes != static_cast<std::size_t>(blocks * t.count * h) * sizeof(float)))) {
          return fail_training(t, error(StatusCode::kInternal, describe_hop(hop),
                                        " answered a training backward with tensors of the wrong shape"));
        }
        if (t.count > 0) {
          std::memcpy(t.prompt_grads.data() + hop.first * t.count * h, out.prompt_grads.data,
                      out.prompt_grads.bytes);
        }
        if (has_adapter(t.adapter)) {
          const std::int64_t per_block = t.adapter.values.shape[1];
          const TensorPayload& g = out.adapter_grads;
          if (g.type != ElementType::kF32 || g.shape != std::vector<std::int64_t>{blocks, per_block} ||
              g.bytes != static_cast<std::size_t>(blocks * per_block) * sizeof(float)) {
            return fail_training(t, error(StatusCode::kInternal, describe_hop(hop),
                                          " answered adapter gradients of the wrong shape"));
          }
          std::memcpy(t.adapter_grads.data() + hop.first * per_block, g.data, g.bytes);
        }
        done(t, out.grad);
      });
}

}  // namespace sepal

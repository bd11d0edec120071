#include "actors/remote_pipeline.h"

#include <cstring>
#include <future>

#include "actors/hidden_codec.h"
#include "actors/push_grant.h"
#include "kernels/error.h"
#include "runtime/log.h"

namespace sepal {
namespace {

// Errors after which the hop must move: the host is gone, unreachable, leaving, or lost the
// session (it moved to other blocks or restarted).
bool host_lost(StatusCode code) {
  return code == StatusCode::kPeerFailed || code == StatusCode::kTimeout || code == StatusCode::kNotFound ||
         code == StatusCode::kCancelled || code == StatusCode::kUnavailable;
}

std::string describe(const RouteHop& hop) {
  return "host " + std::to_string(hop.host.address.peer) + " [" + std::to_string(hop.first) + ", " +
         std::to_string(hop.last) + ")";
}

}  // namespace

RemotePipeline::RemotePipeline(ActorSystem& system, RoutePlanner& planner, std::int64_t num_blocks,
                               std::int64_t capacity, std::uint64_t session, RemotePipelineOptions options)
    : system_(system), planner_(planner), options_(std::move(options)), session_(session), capacity_(capacity) {
  auto route = planner_.route(0, num_blocks);
  if (!route.is_ok()) fail("no route through the swarm: ", route.status().message());
  route_ = std::move(route).value();
  inputs_.resize(route_.size());
  for (std::size_t i = 0; i < route_.size(); ++i) {
    Status opened = open_on(route_[i]);
    bool retryable = true;
    int attempts = 0;
    while (!opened.is_ok()) {
      if (!retryable || !host_lost(opened.code()) || ++attempts > options_.max_failovers) fail(opened.message());
      log(LogLevel::kWarn, describe(route_[i]), " unusable (", opened.to_string(), "); routing around it");
      planner_.report_failure(route_[i].host.address.peer);
      opened = replace_hop(i, retryable);
    }
  }
  std::string text;
  for (const auto& hop : route_) text += (text.empty() ? "" : " -> ") + describe(hop);
  log(LogLevel::kInfo, "route: ", text);
}

Status RemotePipeline::open_on(RouteHop& hop) {
  auto info = system_.request_sync(hop.host, HostInfo{}, options_.timeout);
  if (!info.is_ok()) {
    return error(info.status().code(), "host ", hop.host.address.peer, " did not answer: ", info.status().to_string());
  }
  if (hop.first < info->first || hop.last > info->last || hop.first >= hop.last) {
    return error(StatusCode::kUnavailable, "host ", hop.host.address.peer, " serves blocks [", info->first, ", ",
                 info->last, "), not [", hop.first, ", ", hop.last, ")");
  }
  if (hidden_size_ != 0 && info->hidden_size != hidden_size_) {
    return error(StatusCode::kInvalidArgument, "host ", hop.host.address.peer, " has hidden size ", info->hidden_size,
                 ", the route ", hidden_size_);
  }
  hidden_size_ = info->hidden_size;
  hop.session = (session_ << 20) + ++next_hop_session_;
  auto opened = system_.request_sync(hop.host, OpenSession{hop.session, capacity_, hop.first, hop.last}, options_.timeout);
  if (!opened.is_ok()) {
    return error(opened.status().code(), "host ", hop.host.address.peer, " refused the session: ", opened.status().to_string());
  }
  return Status::ok();
}

RemotePipeline::~RemotePipeline() {
  for (const auto& hop : route_) {
    system_.request(hop.host, CloseSession{hop.session}, options_.timeout, [](Result<SessionState>) {});
  }
}

std::vector<float> RemotePipeline::values(const TensorPayload& t, std::int64_t n) const {
  auto decoded = decode_hidden(t, hidden_size_);
  if (!decoded.is_ok()) fail("a host returned malformed hidden states: ", decoded.status().message());
  if (hidden_tokens(t) != n) fail("a host returned hidden states for ", hidden_tokens(t), " tokens instead of ", n);
  return std::move(decoded).value();
}

RemotePipeline::Hidden RemotePipeline::received(const TensorPayload& t, std::int64_t n) {
  Hidden h{t, values(t, n)};  // a malformed answer stops here, not at the next host
  received_bytes_ += static_cast<std::int64_t>(t.bytes);
  received_token_hops_ += n;
  return h;
}

RemotePipeline::Hidden RemotePipeline::encode(const float* hidden, std::int64_t n) const {
  // Only the payload: inputs are kept (for replay) as the bytes the host received.
  return Hidden{encode_hidden(hidden, n, hidden_size_, options_.wire_compression), {}};
}

Status RemotePipeline::replace_hop(std::size_t i, bool& retryable) {
  const RouteHop old = route_[i];
  auto planned = planner_.route(old.first, old.last);
  retryable = planned.is_ok();
  if (!planned.is_ok()) {
    return error(planned.status().code(), "blocks [", old.first, ", ", old.last, ") have no host left: ",
                 planned.status().message());
  }
  std::vector<RouteHop> hops = std::move(planned).value();
  std::vector<std::vector<TensorPayload>> inputs(hops.size());
  // Rebuild the new hosts' caches by replaying what the old hop has seen.
  std::vector<TensorPayload> x = inputs_[i];
  for (std::size_t j = 0; j < hops.size(); ++j) {
    SEPAL_RETURN_IF_ERROR(open_on(hops[j]));
    inputs[j] = x;
    if (x.empty()) continue;
    auto rebuilt = replay(hops[j], x);
    if (!rebuilt.is_ok()) {
      planner_.report_failure(hops[j].host.address.peer);
      return error(rebuilt.status().code(), "replay on ", describe(hops[j]), " failed: ", rebuilt.status().to_string());
    }
    x = std::move(rebuilt).value();
  }
  std::string text;
  for (const auto& hop : hops) text += (text.empty() ? "" : " -> ") + describe(hop);
  log(LogLevel::kWarn, "blocks [", old.first, ", ", old.last, ") move from host ", old.host.address.peer, " to ", text,
      length_ > 0 ? " (replayed " + std::to_string(length_) + " positions)" : std::string());
  route_.erase(route_.begin() + static_cast<std::ptrdiff_t>(i));
  route_.insert(route_.begin() + static_cast<std::ptrdiff_t>(i), hops.begin(), hops.end());
  inputs_.erase(inputs_.begin() + static_cast<std::ptrdiff_t>(i));
  inputs_.insert(inputs_.begin() + static_cast<std::ptrdiff_t>(i), inputs.begin(), inputs.end());
  ++failovers_;
  return Status::ok();
}

Result<std::vector<TensorPayload>> RemotePipeline::replay(const RouteHop& hop, const std::vector<TensorPayload>& steps) {
  // A few steps in flight hide the round trips; the host handles a session's steps in order and
  // refuses one whose position is not its length, so order cannot silently go wrong.
  constexpr std::size_t kInFlight = 32;
  std::vector<std::future<Result<StepResult>>> answers;
  answers.reserve(steps.size());
  std::vector<TensorPayload> outputs;
  outputs.reserve(steps.size());
  std::int64_t position = 0;
  for (std::size_t k = 0; k < steps.size(); ++k) {
    while (answers.size() < steps.size() && answers.size() < k + kInFlight) {
      const TensorPayload& step = steps[answers.size()];
      auto promise = std::make_shared<std::promise<Result<StepResult>>>();
      answers.push_back(promise->get_future());
      system_.request(hop.host, Step{hop.session, position, step, tag_}, options_.timeout,
                      [promise](Result<StepResult> r) { promise->set_value(std::move(r)); });
      position += hidden_tokens(step);
    }
    auto answer = answers[k].get();
    if (!answer.is_ok()) return answer.status();
    outputs.push_back(received(answer->hidden, hidden_tokens(steps[k])).payload);
  }
  return outputs;
}

Result<RemotePipeline::Hidden> RemotePipeline::step_hop(std::size_t i, const Hidden& input, bool rollback) {
  const std::int64_t n = hidden_tokens(input.payload);
  Status last_error;
  for (int attempt = 0; attempt <= options_.max_failovers; ++attempt) {
    const RouteHop hop = route_[i];
    Status failed;
    if (rollback) {
      auto r = system_.request_sync(hop.host, Rollback{hop.session, length_, tag_}, options_.timeout);
      if (!r.is_ok()) failed = r.status();
    }
    if (failed.is_ok()) {
      auto result = system_.request_sync(hop.host, Step{hop.session, length_, input.payload, tag_}, options_.timeout);
      if (result.is_ok()) {
        Hidden out = received(result->hidden, n);
        inputs_[i].push_back(input.payload);
        return out;
      }
      failed = result.status();
    }
    if (!host_lost(failed.code())) {
      return error(failed.code(), "step on ", describe(hop), " failed: ", failed.to_string());
    }
    log(LogLevel::kWarn, describe(hop), " lost: ", failed.to_string());
    planner_.report_failure(hop.host.address.peer);
    // A new route for the hop's blocks; a failure there moves on to yet another route.
    bool retryable = true;
    last_error = replace_hop(i, retryable);
    while (!last_error.is_ok() && retryable && host_lost(last_error.code()) && ++attempt <= options_.max_failovers) {
      log(LogLevel::kWarn, "re-routing blocks [", hop.first, ", ", hop.last, ") failed: ", last_error.to_string());
      last_error = replace_hop(i, retryable);
    }
    if (!last_error.is_ok()) return last_error;
    rollback = false;  // fresh sessions are at length_ already
  }
  return error(StatusCode::kUnavailable, "gave up on blocks [", route_[i].first, ", ", route_[i].last, ") after ",
               options_.max_failovers, " failovers");
}

Result<RemotePipeline::Hidden> RemotePipeline::relay_from(std::size_t i, Hidden input, bool rollback) {
  // route_ may grow while stepping: a failed hop replaced by several runs only the first of them
  // in step_hop, and the others follow here. So the bound is re-read.
  while (i < route_.size()) {
    auto out = step_hop(i, input, rollback);
    if (!out.is_ok()) return out.status();
    input = std::move(out).value();
    ++i;
  }
  return input;
}

void RemotePipeline::forward(float* hidden, std::int64_t n) {
  ++tag_;
  Hidden current = encode(hidden, n);
  std::size_t resume = 0;
  bool rollback = false;
  if (options_.push_inbox && route_.size() > 1) {
    std::vector<PeerId> peers;
    std::vector<PushTarget> next;
    const ActorAddress receiver{system_.self(), kPushReceiverActorId};
    for (std::size_t i = 0; i < route_.size(); ++i) {
      peers.push_back(route_[i].host.address.peer);
      if (i > 0) next.push_back({route_[i].host.address, route_[i].session, {}});
    }
    // Each later hop gets this client's grant, naming the one target it may forward to.
    for (std::size_t i = 0; i < next.size(); ++i) {
      const auto key = system_.transport().link_key(next[i].host.peer);
      if (!key) continue;
      PushGrantScope scope{receiver, session_, next[i].session, length_, tag_, static_cast<std::int64_t>(i + 1), std::nullopt};
      if (i + 1 < next.size()) scope.next = next[i + 1];
      next[i].grant = make_push_grant(scope, *key);
    }
    options_.push_inbox->begin(session_, tag_, peers);
    const PushStep step{receiver, session_, route_[0].session, length_, tag_, 0, next, current.payload, {}};
    Status sent = system_.send(route_[0].host, step, kPushReceiverActorId);
    PushInbox::Outcome outcome = options_.push_inbox->wait(session_, sent.is_ok() ? options_.timeout : std::chrono::milliseconds(0));
    // The hops whose outputs arrived are done; their inputs are kept for replay.
    for (const TensorPayload& out : outcome.outputs) {
      inputs_[resume].push_back(current.payload);
      current = received(out, n);
      ++resume;
    }
    if (resume < route_.size()) {
      log(LogLevel::kWarn, "push failed at hop ", resume, " (", outcome.status.to_string(), "); relaying from there");
      ++tag_;          // a new attempt: the failed push's stragglers are ignored
      rollback = true;  // hops at or after the failure may have advanced
    }
  }
  auto out = relay_from(resume, std::move(current), rollback);
  if (!out.is_ok()) {
    for (auto& in : inputs_) in.resize(static_cast<std::size_t>(steps_));  // keep replay consistent
    fail(out.status().message());
  }
  const std::vector<float>& result = out->values;
  std::memcpy(hidden, result.data(), result.size() * sizeof(float));
  length_ += n;
  ++steps_;
}

}  // namespace sepal

#include "actors/push_receiver.h"

#include <algorithm>

namespace sepal {

void PushInbox::begin(std::uint64_t request, std::uint64_t tag, std::vector<PeerId> peers) {
  std::lock_guard lock(mutex_);
  Attempt a;
  a.tag = tag;
  a.outputs.resize(peers.size());
  a.peers = std::move(peers);
  for (std::size_t i = 0; i < a.peers.size(); ++i) {
    if (failed_.count(a.peers[i])) {
      a.failure = {a.peers[i], error(StatusCode::kPeerFailed, "host ", a.peers[i], " has failed")};
      break;
    }
  }
  attempts_[request] = std::move(a);
}

PushInbox::Outcome PushInbox::wait(std::uint64_t request, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  Attempt& a = attempts_.at(request);
  const bool finished = changed_.wait_for(lock, timeout, [&] { return a.settled(); });
  Outcome out;
  for (auto& o : a.outputs) {
    if (!o) break;
    out.outputs.push_back(*o);
  }
  if (out.outputs.size() < a.outputs.size()) {
    if (a.failure) {
      out.culprit = a.failure->first;
      out.status = a.failure->second;
    } else {
      out.culprit = a.peers[out.outputs.size()];
      out.status = error(StatusCode::kTimeout, "no output from hop ", out.outputs.size(), " (host ", out.culprit,
                         ") within ", timeout.count(), " ms");
    }
  }
  (void)finished;
  attempts_.erase(request);
  return out;
}

void PushInbox::deliver(const PushedOutput& output) {
  std::lock_guard lock(mutex_);
  auto it = attempts_.find(output.request);
  if (it == attempts_.end() || it->second.tag != output.tag) return;  // a stale attempt
  Attempt& a = it->second;
  if (output.hop < 0 || output.hop >= static_cast<std::int64_t>(a.outputs.size())) return;
  if (output.code != 0) {
    const bool known = output.code > 0 && output.code <= static_cast<std::int32_t>(StatusCode::kInternal);
    const StatusCode code = known ? static_cast<StatusCode>(output.code) : StatusCode::kInternal;
    if (!a.failure) a.failure = {output.host, Status(code, "host " + std::to_string(output.host) + ": " + output.message)};
  } else {
    a.outputs[static_cast<std::size_t>(output.hop)] = output.hidden;
  }
  // Wake the waiter only when it can return: an earlier hop's output arriving while later hosts
  // compute would otherwise wake the client for nothing, on the cores those hosts use.
  if (a.settled()) changed_.notify_all();
}

void PushInbox::peer_failed(PeerId peer) {
  std::lock_guard lock(mutex_);
  failed_.insert(peer);
  for (auto& [request, a] : attempts_) {
    if (!a.failure && std::find(a.peers.begin(), a.peers.end(), peer) != a.peers.end()) {
      a.failure = {peer, error(StatusCode::kPeerFailed, "host ", peer, " failed")};
    }
  }
  changed_.notify_all();
}

void PushReceiver::handle(ActorContext&, const PushedOutput& m) { inbox_->deliver(m); }

void PushReceiver::on_peer_failed(ActorSystem&, PeerId peer, const Status&) { inbox_->peer_failed(peer); }

}  // namespace sepal

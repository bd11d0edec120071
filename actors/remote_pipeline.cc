#include "actors/remote_pipeline.h"

#include <cstring>

#include "kernels/error.h"
#include "runtime/log.h"

namespace sepal {

RemotePipeline::RemotePipeline(ActorSystem& system, std::vector<RouteHop> route, std::int64_t capacity,
                               std::uint64_t session, std::chrono::milliseconds timeout)
    : system_(system), route_(std::move(route)), session_(session), timeout_(timeout), capacity_(capacity) {
  if (route_.empty()) fail("the route has no hosts");
  inputs_.resize(route_.size());
  for (std::size_t i = 0; i < route_.size(); ++i) {
    if (i > 0 && route_[i - 1].last != route_[i].first) fail("the route skips or repeats blocks at block ", route_[i].first);
    RouteHop& hop = route_[i];
    Status opened = open_on(hop.host, hop);
    while (!opened.is_ok() && !hop.replicas.empty()) {  // the first choice may already be gone
      log(LogLevel::kWarn, "host ", hop.host.address.peer, " unusable (", opened.to_string(), "), trying a replica");
      hop.host = hop.replicas.front();
      hop.replicas.erase(hop.replicas.begin());
      opened = open_on(hop.host, hop);
    }
    if (!opened.is_ok()) fail(opened.message());
  }
}

Status RemotePipeline::open_on(const ActorRef<BlockHostProtocol>& host, const RouteHop& hop) {
  auto info = system_.request_sync(host, HostInfo{}, timeout_);
  if (!info.is_ok()) return error(info.status().code(), "host on peer ", host.address.peer, " did not answer: ", info.status().to_string());
  // A step runs all of a host's blocks, so a hop covers exactly its host's range.
  if (hop.first != info->first || hop.last != info->last) {
    return error(StatusCode::kInvalidArgument, "host on peer ", host.address.peer, " serves blocks [", info->first, ", ",
                 info->last, "), not [", hop.first, ", ", hop.last, ")");
  }
  hidden_size_ = info->hidden_size;
  auto opened = system_.request_sync(host, OpenSession{session_, capacity_}, timeout_);
  if (!opened.is_ok()) {
    return error(opened.status().code(), "host on peer ", host.address.peer, " refused the session: ", opened.status().to_string());
  }
  return Status::ok();
}

RemotePipeline::~RemotePipeline() {
  for (const auto& hop : route_) {
    system_.request(hop.host, CloseSession{session_}, timeout_, [](Result<SessionState>) {});
  }
}

Result<TensorPayload> RemotePipeline::step_hop(std::size_t i, const TensorPayload& input) {
  RouteHop& hop = route_[i];
  while (true) {
    auto result = system_.request_sync(hop.host, Step{session_, length_, input}, timeout_);
    if (result.is_ok()) return result->hidden;
    const StatusCode code = result.status().code();
    const bool host_lost = code == StatusCode::kPeerFailed || code == StatusCode::kTimeout ||
                           code == StatusCode::kNotFound || code == StatusCode::kCancelled;
    if (!host_lost || hop.replicas.empty()) {
      return error(code, "step on host ", hop.host.address.peer, " failed: ", result.status().to_string());
    }
    log(LogLevel::kWarn, "host ", hop.host.address.peer, " lost (", result.status().to_string(),
        "); blocks [", hop.first, ", ", hop.last, ") move to host ", hop.replicas.front().address.peer);
    hop.host = hop.replicas.front();
    hop.replicas.erase(hop.replicas.begin());
    ++failovers_;
    SEPAL_RETURN_IF_ERROR(open_on(hop.host, hop));
    if (length_ > 0) {  // rebuild the replica's cache from what the hop has seen
      auto replay = TensorPayload::copy_of(ElementType::kF32, {length_, hidden_size_}, inputs_[i].data(),
                                           static_cast<std::size_t>(length_ * hidden_size_));
      auto rebuilt = system_.request_sync(hop.host, Step{session_, 0, replay}, timeout_);
      if (!rebuilt.is_ok()) continue;  // that replica failed too: try the next one
    }
  }
}

void RemotePipeline::forward(float* hidden, std::int64_t n) {
  auto current = TensorPayload::copy_of(ElementType::kF32, {n, hidden_size_}, hidden, static_cast<std::size_t>(n * hidden_size_));
  for (std::size_t i = 0; i < route_.size(); ++i) {
    const auto* in = current.as<float>();
    inputs_[i].insert(inputs_[i].end(), in, in + n * hidden_size_);
    auto out = step_hop(i, current);
    if (!out.is_ok()) {
      inputs_[i].resize(static_cast<std::size_t>(length_ * hidden_size_));
      fail(out.status().message());
    }
    current = out.value();
  }
  if (current.bytes != static_cast<std::size_t>(n * hidden_size_) * sizeof(float)) fail("a host returned the wrong shape");
  std::memcpy(hidden, current.data, current.bytes);
  length_ += n;
}

}  // namespace sepal

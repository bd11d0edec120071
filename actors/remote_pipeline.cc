#include "actors/remote_pipeline.h"

#include <cstring>

#include "kernels/error.h"

namespace sepal {

RemotePipeline::RemotePipeline(ActorSystem& system, std::vector<RouteHop> route, std::int64_t capacity,
                               std::uint64_t session, std::chrono::milliseconds timeout)
    : system_(system), route_(std::move(route)), session_(session), timeout_(timeout) {
  if (route_.empty()) fail("the route has no hosts");
  for (std::size_t i = 0; i < route_.size(); ++i) {
    const auto& hop = route_[i];
    auto info = system_.request_sync(hop.host, HostInfo{}, timeout_);
    if (!info.is_ok()) fail("host on peer ", hop.host.address.peer, " did not answer: ", info.status().to_string());
    // A step runs all of a host's blocks, so a hop covers exactly its host's range.
    if (hop.first != info->first || hop.last != info->last) {
      fail("host on peer ", hop.host.address.peer, " serves blocks [", info->first, ", ", info->last,
           "), not [", hop.first, ", ", hop.last, ")");
    }
    if (i > 0 && route_[i - 1].last != hop.first) fail("the route skips or repeats blocks at block ", hop.first);
    hidden_size_ = info->hidden_size;
    auto opened = system_.request_sync(hop.host, OpenSession{session_, capacity}, timeout_);
    if (!opened.is_ok()) {
      fail("host on peer ", hop.host.address.peer, " refused the session: ", opened.status().to_string());
    }
  }
}

RemotePipeline::~RemotePipeline() {
  for (const auto& hop : route_) {
    system_.request(hop.host, CloseSession{session_}, timeout_, [](Result<SessionState>) {});
  }
}

void RemotePipeline::forward(float* hidden, std::int64_t n) {
  auto current = TensorPayload::copy_of(ElementType::kF32, {n, hidden_size_}, hidden, static_cast<std::size_t>(n * hidden_size_));
  for (const auto& hop : route_) {
    auto result = system_.request_sync(hop.host, Step{session_, length_, current}, timeout_);
    if (!result.is_ok()) fail("step on host ", hop.host.address.peer, " failed: ", result.status().to_string());
    current = result->hidden;
  }
  if (current.bytes != static_cast<std::size_t>(n * hidden_size_) * sizeof(float)) fail("a host returned the wrong shape");
  std::memcpy(hidden, current.data, current.bytes);
  length_ += n;
}

}  // namespace sepal

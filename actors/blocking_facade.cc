#include "actors/blocking_facade.h"

#include <cstring>
#include <utility>

#include "actors/hidden_codec.h"
#include "kernels/error.h"

namespace sepal {
namespace {

// The actors answer every request themselves (each host request, route wait and failover the
// driver makes is bounded), so this bound is only a backstop against an actor that is gone.
constexpr std::chrono::hours kDriverAnswer{1};

}  // namespace

Result<std::unique_ptr<DriverSession>> DriverSession::open(ActorSystem& system, ActorRef<ClientDriverProtocol> driver,
                                                           std::int64_t capacity, TensorPayload prompts,
                                                           std::int64_t prompt_offset, AdapterPayload adapter) {
  auto opened = system.request_sync(driver, OpenInference{capacity, std::move(prompts), prompt_offset, std::move(adapter)},
                                    kDriverAnswer);
  if (!opened.is_ok()) return opened.status();
  return std::unique_ptr<DriverSession>(new DriverSession(system, driver, opened->session, opened->hidden_size));
}

DriverSession::~DriverSession() { (void)system_.request_sync(driver_, CloseInference{id_}, std::chrono::seconds(10)); }

void DriverSession::forward(float* hidden, std::int64_t n) { step(hidden, n, {}); }

void DriverSession::forward_tree(float* hidden, std::int64_t n, std::span<const std::int32_t> parents) {
  if (static_cast<std::int64_t>(parents.size()) != n) fail("a tree step of ", n, " rows has ", parents.size(), " parents");
  step(hidden, n, parents);
}

void DriverSession::keep_path(std::span<const std::int32_t> path) {
  if (!keep_.empty()) fail("a path of this tree is kept already");
  keep_.assign(path.begin(), path.end());
  length_ += static_cast<std::int64_t>(path.size());
}

void DriverSession::step(float* hidden, std::int64_t n, std::span<const std::int32_t> parents) {
  const auto count = static_cast<std::size_t>(n * hidden_size_);
  // The caller's buffer is only borrowed for the request: the driver encodes it before answering.
  TensorPayload in;
  in.type = ElementType::kF32;
  in.shape = {n, hidden_size_};
  in.data = reinterpret_cast<const std::byte*>(hidden);
  in.bytes = count * sizeof(float);
  std::vector<std::int32_t> keep = std::move(keep_);
  keep_.clear();
  const InferenceStep m{id_, in, std::vector<std::int32_t>(parents.begin(), parents.end()), std::move(keep)};
  const auto sent = std::chrono::steady_clock::now();
  auto out = system_.request_sync(driver_, m, kDriverAnswer);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  ++waits_.steps;
  waits_.seconds += waited;
  if (n == 1) {
    ++waits_.single_row_steps;
    waits_.single_row_seconds += waited;
  }
  if (!out.is_ok()) fail(out.status().message());
  auto values = decode_hidden(out->hidden, hidden_size_);
  if (!values.is_ok() || values->size() != count) fail("the driver answered a step with malformed hidden states");
  std::memcpy(hidden, values->data(), count * sizeof(float));
  length_ = out->length;
}

Result<InferenceReport> DriverSession::report() const {
  return system_.request_sync(driver_, DescribeInference{id_}, kDriverAnswer);
}

DraftDecoderSession::DraftDecoderSession(ActorSystem& system, ActorRef<DraftDecoderProtocol> decoder, std::int64_t capacity)
    : system_(system), decoder_(decoder), capacity_(capacity) {}

DraftDecoderSession::~DraftDecoderSession() {
  if (id_ != 0) (void)system_.request_sync(decoder_, CloseDraft{id_}, std::chrono::seconds(10));
}

void DraftDecoderSession::start(std::span<const std::int32_t> prompt) {
  if (id_ != 0) (void)system_.request_sync(decoder_, CloseDraft{id_}, std::chrono::seconds(10));
  id_ = 0;
  auto opened = system_.request_sync(decoder_, OpenDraft{{prompt.begin(), prompt.end()}, capacity_}, kDriverAnswer);
  if (!opened.is_ok()) fail("the draft decoder: ", opened.status().message());
  id_ = opened->draft;
  length_ = static_cast<std::int64_t>(prompt.size());
  keep_.clear();
}

TokenTree DraftDecoderSession::propose(std::int32_t root, std::int64_t size) {
  if (id_ == 0) fail("the draft was not started");
  auto tree = system_.request_sync(decoder_, ProposeTree{id_, std::exchange(keep_, {}), root, size}, kDriverAnswer);
  if (!tree.is_ok()) fail("the draft decoder: ", tree.status().message());
  if (tree->anticipated) ++anticipated_;
  return TokenTree{std::move(tree->tokens), std::move(tree->parents), std::move(tree->mass), std::move(tree->next_guess)};
}

void DraftDecoderSession::keep(std::span<const std::int32_t> path) {
  keep_.assign(path.begin(), path.end());
  length_ += static_cast<std::int64_t>(path.size());
}

void DraftDecoderSession::verifying(const TokenTree&) {
  if (id_ != 0) (void)system_.send(decoder_, AnticipateTree{id_});  // a hint: lost, it only costs time
}

void DraftDecoderSession::rewind(std::int64_t, std::span<const std::int32_t>) {
  fail("a draft of the draft decoder rewinds itself");
}

Result<BlockMapReply> await_swarm_ready(ActorSystem& system, ActorRef<ClientDriverProtocol> driver,
                                        std::int64_t min_hosts, std::chrono::milliseconds timeout) {
  return system.request_sync(driver, AwaitSwarmReady{min_hosts, timeout.count()}, timeout + std::chrono::seconds(30));
}

Result<BlockMapReply> fetch_block_map(ActorSystem& system, ActorRef<BalancerProtocol> balancer,
                                      std::chrono::milliseconds timeout) {
  return system.request_sync(balancer, GetBlockMap{}, timeout);
}

Result<HostJoined> join_swarm(ActorSystem& system, ActorRef<HostAgentProtocol> agent, std::chrono::milliseconds timeout) {
  // The agent answers by the deadline, unless a load of blocks is under way then: that may take
  // minutes for a large model, so the backstop is generous.
  return system.request_sync(agent, JoinSwarm{timeout.count()}, timeout + kDriverAnswer);
}

Status leave_swarm(ActorSystem& system, ActorRef<HostAgentProtocol> agent) {
  return system.request_sync(agent, LeaveSwarm{}, std::chrono::seconds(30)).status();
}

}  // namespace sepal

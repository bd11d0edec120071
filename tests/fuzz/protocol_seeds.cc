// Writes one valid frame of every message fuzz_protocol decodes into a folder: the seed corpus
// kept in tests/fuzz/corpus/fuzz_protocol (regenerate after a protocol change).
//   protocol_seeds DIR
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "actors/protocol/balancer.h"
#include "actors/protocol/block_host.h"
#include "actors/protocol/client_driver.h"
#include "actors/protocol/draft_decoder.h"
#include "runtime/join_messages.h"
#include "runtime/membership.h"
#include "runtime/wire.h"

namespace {

using namespace sepal;

std::string directory;
int written = 0;

template <typename M>
void write(const M& m) {
  const auto frame = encode(Envelope{1, 2, 3, 4, FrameKind::kRequest}, m).flatten();
  std::ofstream out(directory + "/" + std::to_string(M::kTypeId) + "_" + std::to_string(written++), std::ios::binary);
  out.write(reinterpret_cast<const char*>(frame->data()), static_cast<std::streamsize>(frame->size()));
}

TensorPayload hidden(std::int64_t n, std::int64_t h) {
  std::vector<float> v(static_cast<std::size_t>(n * h), 0.5f);
  return TensorPayload::copy_of(ElementType::kF32, {n, h}, v.data(), v.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: protocol_seeds DIR\n");
    return 2;
  }
  directory = argv[1];
  write(HostInfo{});
  std::vector<float> deep(2 * 2 * 8, 0.125f);
  write(OpenSession{7, 64, 0, 2, TensorPayload::copy_of(ElementType::kF32, {2, 2, 8}, deep.data(), deep.size()), 1});
  write(Step{7, 0, hidden(3, 8), 1});
  write(Step{7, 5, hidden(3, 8), 2, {-1, 0, 0}, {0, 1}});  // a token tree after a kept path
  write(Rollback{7, 2, 3});
  write(CloseSession{7});
  write(Shutdown{});
  PushStep push;
  push.session = 7;
  push.hidden = hidden(1, 8);
  push.next.push_back(PushTarget{{2, 5}, 9, std::vector<std::uint8_t>(32, 1)});
  write(push);
  push.parents = {-1, 0};
  push.hidden = hidden(2, 8);
  push.keep = {0, 2};
  write(push);
  write(PushedOutput{});
  std::vector<float> prompts(2 * 2 * 8, 0.25f);
  write(TrainForward{0, 2, {2, 1}, hidden(3, 8),
                     TensorPayload::copy_of(ElementType::kF32, {2, 2, 8}, prompts.data(), prompts.size()), 0});
  write(TrainBackward{0, 2, {3}, hidden(3, 8), hidden(3, 8), {}, 0});
  write(TrainingPass{4, false, true, {2, 1}, hidden(3, 8), {}, 0});
  // Adapters: LoRA of rank 1 on q and v of a 2-block, 8-wide model, and PEQA.
  std::vector<float> lora(2 * 32, 0.01f);
  const AdapterPayload adapter{1, 1, 2.0, {0, 2},
                               TensorPayload::copy_of(ElementType::kF32, {2, 32}, lora.data(), lora.size())};
  write(OpenSession{8, 64, 0, 2, {}, 0, adapter});
  write(TrainForward{0, 2, {3}, hidden(3, 8), {}, 0, adapter});
  write(TrainBackward{0, 2, {3}, hidden(3, 8), hidden(3, 8), {}, 0, adapter});
  write(TrainingPass{5, false, true, {3}, hidden(3, 8), {}, 0, adapter});
  AdapterPayload held = adapter;  // kept on the host under key 9, then named by the key alone
  held.held = 9;
  write(TrainForward{0, 2, {3}, hidden(3, 8), {}, 0, held});
  AdapterPayload key_only;
  key_only.held = 9;
  write(TrainBackward{0, 2, {3}, hidden(3, 8), hidden(3, 8), {}, 0, key_only});
  write(OpenInference{64, {}, 0, AdapterPayload{0, 0, 0.0, {6}, TensorPayload::copy_of(ElementType::kF32, {2, 8}, lora.data(), 16)}});
  write(OpenInference{64, TensorPayload::copy_of(ElementType::kF32, {2, 2, 8}, deep.data(), deep.size()), 1});
  write(OpenDraft{{1, 403, 407}, 64});
  write(DraftOpened{3});
  write(ProposeTree{3, {0, 1}, 261, 8});
  write(DraftTree{{261, 5, 9}, {-1, 0, 0}, {1.0, 0.6, 0.3}, {7, -1, -1}, true});
  write(AnticipateTree{3});
  write(CloseDraft{3});
  write(Announce{"stories260K", 5, 2, 10.0, 0, 2, 0, 2, false});
  write(GetBlockMap{});
  write(Heartbeat{});
  write(MemberJoined{MemberInfo{4, "host", {1, 2, 3}}, std::vector<std::uint8_t>(48, 2)});
  write(MemberLeaving{});
  write(JoinChallenge{kJoinVersion, std::vector<std::uint8_t>(32, 3)});
  write(JoinRequest{std::vector<std::uint8_t>(32, 4), std::vector<std::uint8_t>(32, 5), "host", "node1:123"});
  JoinWelcome welcome;
  welcome.admitted = true;
  welcome.assigned = 3;
  welcome.members = {MemberInfo{0, "client", {9}}, MemberInfo{3, "host", {8}}};
  welcome.wrapped_keys = {std::vector<std::uint8_t>(48, 6), std::vector<std::uint8_t>(48, 7)};
  write(welcome);
  write(JoinAddress{{1, 2, 3, 4}});
  std::printf("%d seed frames in %s\n", written, directory.c_str());
  return 0;
}

// Fuzz target: every message another process can send — the block host's, client driver's,
// balancer's and membership's requests and replies, and the join handshake — decoded from any
// bytes. Each must decode or give kMalformed: no crash, no read out of bounds, no allocation
// beyond a small multiple of the frame. Decoded hidden states also go through the hidden-state
// codec, as a host would.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "actors/hidden_codec.h"
#include "actors/protocol/balancer.h"
#include "actors/protocol/block_host.h"
#include "actors/protocol/client_driver.h"
#include "actors/protocol/draft_decoder.h"
#include "runtime/join_messages.h"
#include "runtime/membership.h"
#include "runtime/wire.h"

namespace {

using namespace sepal;

void touch(const TensorPayload& t) {
  for (std::int64_t hidden_size : {1, 7, 64}) (void)decode_hidden(t, hidden_size);
}
template <typename M>
void touch_fields(const M& m) {
  if constexpr (requires { m.hidden; }) touch(m.hidden);
}

template <typename M>
void decode_one(const std::shared_ptr<const Buffer>& frame) {
  auto m = decode_message<M>(frame);
  if (m.is_ok()) touch_fields(m.value());
}

template <typename... Ms>
void decode_protocol(const std::shared_ptr<const Buffer>& frame, Accepts<Ms...>) {
  (decode_one<Ms>(frame), ...);
  ([&] {
    if constexpr (requires { typename Ms::Reply; }) decode_one<typename Ms::Reply>(frame);
  }(), ...);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto frame = Buffer::allocate(size);
  if (!frame) return 0;
  if (size) std::memcpy(frame->data(), data, size);
  if (!decode_envelope(*frame).is_ok()) return 0;
  const std::shared_ptr<const Buffer> shared = frame;
  decode_protocol(shared, BlockHostProtocol::accepts{});
  decode_protocol(shared, ClientDriverProtocol::accepts{});
  decode_protocol(shared, DraftDecoderProtocol::accepts{});
  decode_protocol(shared, BalancerProtocol::accepts{});
  decode_protocol(shared, MembershipProtocol::accepts{});
  decode_protocol(shared, Accepts<JoinChallenge, JoinRequest, JoinWelcome, JoinAddress>{});
  (void)decode_error(shared);
  return 0;
}

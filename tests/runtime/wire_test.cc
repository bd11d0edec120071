// Message encoding: round trips of every field kind, tensors without copies, and rejection of
// every kind of malformed frame with a kMalformed Status.
#include <gtest/gtest.h>

#include <cstring>

#include "runtime/wire.h"
#include "tests/runtime/wire_messages.h"

namespace sepal {
namespace {

using test::Everything;
using test::Inner;

Everything sample() {
  Everything m;
  m.u8 = 200;
  m.i64 = -1234567890123;
  m.real = 3.25;
  m.flag = true;
  m.color = test::Color::kGreen;
  m.text = "h\xC3\xA9llo";
  m.numbers = {1, 2, 3};
  m.inners = {{1, "a"}, {2, "bb"}};
  m.maybe = Inner{9, "nine"};
  const std::vector<float> a = {1.5f, -2.f, 3.f, 4.f, 5.f};
  const std::vector<std::int32_t> b = {7, 8, 9, 10, 11, 12};
  m.first = TensorPayload::copy_of(ElementType::kF32, {5}, a.data(), a.size());
  m.second = TensorPayload::copy_of(ElementType::kI32, {2, 3}, b.data(), b.size());
  return m;
}

std::shared_ptr<Buffer> encode_sample(const Everything& m) {
  return encode(Envelope{0, 3, 4, 99, FrameKind::kRequest}, m).flatten();
}

TEST(Wire, RoundTripsEveryFieldKind) {
  const Everything m = sample();
  const auto frame = encode_sample(m);
  const auto envelope = decode_envelope(*frame);
  ASSERT_TRUE(envelope.is_ok()) << envelope.status().to_string();
  EXPECT_EQ(envelope->type_id, Everything::kTypeId);
  EXPECT_EQ(envelope->src_actor, 3u);
  EXPECT_EQ(envelope->dst_actor, 4u);
  EXPECT_EQ(envelope->request_id, 99u);
  EXPECT_EQ(envelope->kind, FrameKind::kRequest);
  auto decoded = decode_message<Everything>(frame);
  ASSERT_TRUE(decoded.is_ok()) << decoded.status().to_string();
  const Everything& d = decoded.value();
  EXPECT_EQ(d.u8, 200);
  EXPECT_EQ(d.i64, -1234567890123);
  EXPECT_EQ(d.real, 3.25);
  EXPECT_TRUE(d.flag);
  EXPECT_EQ(d.color, test::Color::kGreen);
  EXPECT_EQ(d.text, m.text);
  EXPECT_EQ(d.numbers, m.numbers);
  ASSERT_EQ(d.inners.size(), 2u);
  EXPECT_EQ(d.inners[1].label, "bb");
  ASSERT_TRUE(d.maybe.has_value());
  EXPECT_EQ(d.maybe->a, 9);
  EXPECT_EQ(d.first.shape, (std::vector<std::int64_t>{5}));
  EXPECT_EQ(d.first.as<float>()[0], 1.5f);
  EXPECT_EQ(d.second.type, ElementType::kI32);
  EXPECT_EQ(d.second.as<std::int32_t>()[5], 12);
}

TEST(Wire, TensorsAreNotCopied) {
  const Everything m = sample();
  const OutgoingFrame out = encode(Envelope{}, m);
  bool referenced = false;
  for (const auto& s : out.segments()) referenced |= (s.data == m.first.data);
  EXPECT_TRUE(referenced) << "the send side should reference the tensor's own bytes";
  std::shared_ptr<const Buffer> frame = out.flatten();
  const auto d = decode_message<Everything>(frame);
  ASSERT_TRUE(d.is_ok());
  EXPECT_GE(d->first.data, frame->data());
  EXPECT_LT(d->first.data, frame->data() + frame->size());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(d->first.data) % kWireAlignment, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(d->second.data) % kWireAlignment, 0u);
  EXPECT_EQ(d->first.owner, frame);  // the decoded tensor keeps the frame alive
}

TEST(Wire, LargeTensorRoundTrips) {
  test::Everything m;
  auto big = std::make_shared<const std::vector<float>>(std::size_t{16} << 20, 0.5f);  // 64 MiB
  m.first = share_vector<float>(ElementType::kF32, {4096, 4096}, big);
  const auto frame = encode(Envelope{}, m).flatten();
  const auto d = decode_message<Everything>(frame);
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_EQ(d->first.bytes, big->size() * 4);
  EXPECT_EQ(d->first.as<float>()[big->size() - 1], 0.5f);
}

void expect_malformed(std::shared_ptr<const Buffer> frame, const std::string& needle) {
  const auto d = decode_message<Everything>(frame);
  ASSERT_FALSE(d.is_ok()) << "accepted; expected an error about " << needle;
  EXPECT_EQ(d.status().code(), StatusCode::kMalformed);
  EXPECT_NE(d.status().message().find(needle), std::string::npos) << d.status().message();
}

std::shared_ptr<Buffer> copy(const Buffer& b, std::size_t size) {
  auto out = Buffer::allocate(size);
  std::memcpy(out->data(), b.data(), std::min(size, b.size()));
  if (size > b.size()) std::memset(out->data() + b.size(), 0, size - b.size());
  return out;
}

FrameHeader header_of(const Buffer& b) {
  FrameHeader h;
  std::memcpy(&h, b.data(), sizeof(h));
  return h;
}

void set_header(Buffer& b, const FrameHeader& h) { std::memcpy(b.data(), &h, sizeof(h)); }

TEST(Wire, EveryTruncationIsRejected) {
  const auto frame = encode_sample(sample());
  for (std::size_t n = 0; n < frame->size(); ++n) {
    const auto d = decode_message<Everything>(copy(*frame, n));
    EXPECT_FALSE(d.is_ok()) << "accepted a frame cut to " << n << " bytes";
  }
}

TEST(Wire, HeadersThatDoNotAddUpAreRejected) {
  const auto frame = encode_sample(sample());
  {
    auto f = copy(*frame, frame->size());
    auto h = header_of(*f);
    h.version = 7;
    set_header(*f, h);
    expect_malformed(f, "wire version 7 is not supported");
  }
  {
    auto f = copy(*frame, frame->size());
    auto h = header_of(*f);
    h.magic = 0;
    set_header(*f, h);
    expect_malformed(f, "bad magic");
  }
  {
    auto f = copy(*frame, frame->size());
    auto h = header_of(*f);
    h.type_id = 0x1234;
    set_header(*f, h);
    expect_malformed(f, "message type 4660");
  }
  {
    auto f = copy(*frame, frame->size() + 64);  // extra bytes the header does not announce
    expect_malformed(f, "header says");
  }
  {
    auto f = copy(*frame, frame->size());
    auto h = header_of(*f);
    h.body_bytes += 1000000;
    set_header(*f, h);
    expect_malformed(f, "runs past the frame");
  }
  {
    auto f = copy(*frame, frame->size());
    auto h = header_of(*f);
    h.tensor_count = 5000;
    set_header(*f, h);
    expect_malformed(f, "exceed the limit");
  }
  {
    auto f = copy(*frame, frame->size());
    auto h = header_of(*f);
    h.kind = 9;
    set_header(*f, h);
    expect_malformed(f, "unknown frame kind");
  }
}

TEST(Wire, BodiesThatDoNotAddUpAreRejected) {
  // Small messages whose body we can patch at known offsets.
  test::Small s{42};
  const auto frame = encode(Envelope{}, s).flatten();
  auto f = copy(*frame, frame->size() + 8);
  auto h = header_of(*f);
  h.body_bytes += 8;
  h.total_bytes += 8;
  set_header(*f, h);
  const auto d = decode_message<test::Small>(f);
  ASSERT_FALSE(d.is_ok());
  EXPECT_NE(d.status().message().find("unread bytes"), std::string::npos) << d.status().message();

  // A list that claims four billion elements is rejected before anything is allocated.
  Everything m;
  m.numbers = {1};
  auto g = encode(Envelope{}, m).flatten();
  const std::size_t count_at = sizeof(FrameHeader) + 1 + 8 + 8 + 1 + 1 + 4;  // after text's length
  const std::uint32_t huge = 0xFFFFFFFFu;
  std::memcpy(g->data() + count_at, &huge, 4);
  expect_malformed(g, "cannot fit");

  // A bool that is neither 0 nor 1.
  auto b = encode(Envelope{}, m).flatten();
  b->data()[sizeof(FrameHeader) + 1 + 8 + 8] = std::byte{2};
  expect_malformed(b, "bool field");
}

TEST(Wire, TensorDescriptionsThatDoNotAddUpAreRejected) {
  const Everything m = sample();
  const auto frame = encode_sample(m);
  // Find the first tensor's description: it ends with offset and byte count.
  const std::size_t body_end = sizeof(FrameHeader) + header_of(*frame).body_bytes;
  const std::size_t second_desc = body_end - (2 + 2 * 8 + 16);
  const std::size_t first_desc = second_desc - (2 + 8 + 16);
  auto patch = [&](std::size_t at, const void* value, std::size_t n) {
    auto f = copy(*frame, frame->size());
    std::memcpy(f->data() + at, value, n);
    return f;
  };
  const std::uint8_t bad_type = 77, big_rank = 9;
  expect_malformed(patch(first_desc, &bad_type, 1), "unknown tensor element type 77");
  expect_malformed(patch(first_desc + 1, &big_rank, 1), "");
  const std::int64_t negative = -5, more = 6;
  expect_malformed(patch(first_desc + 2, &negative, 8), "negative tensor dimension");
  expect_malformed(patch(first_desc + 2, &more, 8), "does not match its shape");
  const std::uint64_t misplaced = 64 * 1000;
  expect_malformed(patch(first_desc + 10, &misplaced, 8), "misplaced or past the frame");
}

TEST(Wire, ErrorRepliesCarryTheStatus) {
  const auto frame = encode_error(Envelope{0, 1, 2, 5, FrameKind::kRequest},
                                  Status(StatusCode::kNotFound, "no session 12")).flatten();
  const auto envelope = decode_envelope(*frame);
  ASSERT_TRUE(envelope.is_ok());
  EXPECT_EQ(envelope->kind, FrameKind::kErrorReply);
  const Status s = decode_error(frame);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no session 12");
}

}  // namespace
}  // namespace sepal

#include "runtime/wire.h"

#include <algorithm>

namespace sepal {
namespace {

constexpr std::byte kZeros[kWireAlignment] = {};

std::size_t align_up(std::size_t n) { return (n + kWireAlignment - 1) / kWireAlignment * kWireAlignment; }

// Wire form of a Status in an error reply.
struct ErrorBody {
  static constexpr std::uint16_t kTypeId = 0xFFFF;
  std::uint16_t code = 0;
  std::string message;
  SEPAL_FIELDS(code, message)
};

}  // namespace

OutgoingFrame OutgoingFrame::resend(std::shared_ptr<const Buffer> frame) {
  OutgoingFrame out;
  TensorPayload whole;
  whole.type = ElementType::kU8;
  whole.shape = {static_cast<std::int64_t>(frame->size())};
  whole.data = frame->data();
  whole.bytes = frame->size();
  whole.owner = frame;
  out.tensors_.push_back(std::move(whole));
  out.offsets_.push_back(0);
  out.total_ = frame->size();
  return out;
}

std::vector<ConstSegment> OutgoingFrame::segments() const {
  std::vector<ConstSegment> out;
  out.push_back({head_.data(), head_.size()});
  std::size_t at = head_.size();
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    if (offsets_[i] > at) out.push_back({kZeros, offsets_[i] - at});
    if (tensors_[i].bytes > 0) out.push_back({tensors_[i].data, tensors_[i].bytes});
    at = offsets_[i] + tensors_[i].bytes;
  }
  return out;
}

void OutgoingFrame::copy_to(std::byte* out) const {
  std::size_t at = 0;
  for (const auto& s : segments()) {
    if (s.size) std::memcpy(out + at, s.data, s.size);
    at += s.size;
  }
}

std::shared_ptr<Buffer> OutgoingFrame::flatten() const {
  auto buffer = Buffer::allocate(total_);
  if (buffer) copy_to(buffer->data());
  return buffer;
}

WireWriter::WireWriter(const Envelope& e) {
  FrameHeader h{};
  h.magic = kWireMagic;
  h.version = kWireVersion;
  h.type_id = e.type_id;
  h.src_actor = e.src_actor;
  h.dst_actor = e.dst_actor;
  h.request_id = e.request_id;
  h.kind = static_cast<std::uint8_t>(e.kind);
  frame_.head_.reserve(256);  // a header and a message's fields, most of the time, in one allocation
  append(&h, sizeof(h));
}

void WireWriter::write_tensor(const TensorPayload& t) {
  const std::size_t esize = element_size(t.type);
  bool consistent = esize != 0 && t.shape.size() <= kMaxTensorRank;
  for (auto d : t.shape) consistent &= d >= 0;
  if (consistent && static_cast<std::uint64_t>(t.elements()) * esize != t.bytes) consistent = false;
  if (!consistent && frame_.status_.is_ok()) {
    frame_.status_ = error(StatusCode::kInvalidArgument, "tensor of ", t.bytes,
                           " bytes does not match its type and shape");
  }
  const auto type = static_cast<std::uint8_t>(t.type);
  const auto rank = static_cast<std::uint8_t>(t.shape.size());
  append(&type, 1);
  append(&rank, 1);
  for (auto d : t.shape) append(&d, 8);
  const std::uint64_t placeholder = 0, bytes = t.bytes;
  tensor_field_offsets_.emplace_back(frame_.head_.size(), frame_.tensors_.size());
  append(&placeholder, 8);
  append(&bytes, 8);
  if (t.owner || t.bytes == 0) {
    frame_.tensors_.push_back(t);
  } else {
    // No owner to keep the bytes alive until the send completes: keep a copy.
    frame_.tensors_.push_back(TensorPayload::copy_of(t.type, t.shape, t.data, t.bytes));
  }
}

OutgoingFrame WireWriter::finish() && {
  const std::size_t body_bytes = frame_.head_.size() - sizeof(FrameHeader);
  std::size_t at = align_up(frame_.head_.size());
  frame_.head_.resize(frame_.tensors_.empty() ? frame_.head_.size() : at, std::byte{0});
  for (std::size_t i = 0; i < frame_.tensors_.size(); ++i) {
    frame_.offsets_.push_back(at);
    const std::uint64_t offset = at;
    std::memcpy(frame_.head_.data() + tensor_field_offsets_[i].first, &offset, 8);
    at = align_up(at + frame_.tensors_[i].bytes);
  }
  frame_.total_ = frame_.tensors_.empty()
                      ? frame_.head_.size()
                      : frame_.offsets_.back() + frame_.tensors_.back().bytes;
  FrameHeader h;
  std::memcpy(&h, frame_.head_.data(), sizeof(h));
  h.tensor_count = static_cast<std::uint32_t>(frame_.tensors_.size());
  h.body_bytes = body_bytes;
  h.total_bytes = frame_.total_;
  std::memcpy(frame_.head_.data(), &h, sizeof(h));
  return std::move(frame_);
}

WireReader::WireReader(std::shared_ptr<const Buffer> frame, std::size_t body_begin,
                       std::size_t body_end, std::uint32_t tensor_count)
    : frame_(std::move(frame)), pos_(body_begin), end_(body_end), tensors_left_(tensor_count),
      next_tensor_min_offset_(body_end) {}

bool WireReader::take(void* out, std::size_t n) {
  if (failed()) return false;
  if (n > end_ - pos_) {
    fail("a field runs past the end of the body");
    return false;
  }
  std::memcpy(out, frame_->data() + pos_, n);
  pos_ += n;
  return true;
}

void WireReader::fail(std::string what) {
  if (status_.is_ok()) status_ = Status(StatusCode::kMalformed, std::move(what));
}

void WireReader::read_tensor(TensorPayload& t) {
  std::uint8_t type = 0, rank = 0;
  if (!take(&type, 1) || !take(&rank, 1)) return;
  if (element_size(static_cast<ElementType>(type)) == 0) return fail("unknown tensor element type " + std::to_string(type));
  if (rank > kMaxTensorRank) return fail("tensor rank " + std::to_string(rank) + " exceeds " + std::to_string(kMaxTensorRank));
  t.type = static_cast<ElementType>(type);
  t.shape.assign(rank, 0);
  std::uint64_t elements = 1;
  for (auto& d : t.shape) {
    if (!take(&d, 8)) return;
    if (d < 0) return fail("negative tensor dimension");
    if (d != 0 && elements > (std::uint64_t{1} << 48) / static_cast<std::uint64_t>(d)) {
      return fail("tensor shape is absurdly large");
    }
    elements *= static_cast<std::uint64_t>(d);
  }
  std::uint64_t offset = 0, bytes = 0;
  if (!take(&offset, 8) || !take(&bytes, 8)) return;
  if (tensors_left_ == 0) return fail("more tensor fields than the header's tensor count");
  --tensors_left_;
  if (bytes != elements * element_size(t.type)) {
    return fail("tensor of " + std::to_string(bytes) + " bytes does not match its shape");
  }
  // Tensors follow the body in order, each at the next aligned offset: the layout is fully
  // determined, so no bytes can hide between them.
  if (offset != align_up(next_tensor_min_offset_) || offset > frame_->size() || bytes > frame_->size() - offset) {
    return fail("tensor data at offset " + std::to_string(offset) + " is misplaced or past the frame");
  }
  next_tensor_min_offset_ = offset + bytes;
  t.data = frame_->data() + offset;
  t.bytes = bytes;
  t.owner = frame_;
}

Status WireReader::finish() const {
  if (!status_.is_ok()) return status_;
  if (pos_ != end_) return error(StatusCode::kMalformed, end_ - pos_, " unread bytes after the last field");
  if (tensors_left_ != 0) return error(StatusCode::kMalformed, tensors_left_, " tensors announced but not described");
  if (next_tensor_min_offset_ != frame_->size() && next_tensor_min_offset_ > end_) {
    return error(StatusCode::kMalformed, "bytes after the last tensor");
  }
  return Status::ok();
}

Result<Envelope> decode_envelope(const Buffer& frame) {
  if (frame.size() < sizeof(FrameHeader)) {
    return error(StatusCode::kMalformed, "frame of ", frame.size(), " bytes is shorter than a header");
  }
  FrameHeader h;
  std::memcpy(&h, frame.data(), sizeof(h));
  if (h.magic != kWireMagic) return error(StatusCode::kMalformed, "not a sepal frame (bad magic)");
  if (h.version != kWireVersion) {
    return error(StatusCode::kMalformed, "wire version ", h.version, " is not supported (this build speaks ",
                 kWireVersion, ")");
  }
  if (h.kind > static_cast<std::uint8_t>(FrameKind::kErrorReply)) {
    return error(StatusCode::kMalformed, "unknown frame kind ", static_cast<int>(h.kind));
  }
  if (h.total_bytes != frame.size()) {
    return error(StatusCode::kMalformed, "header says ", h.total_bytes, " bytes but the frame has ", frame.size());
  }
  if (h.body_bytes > frame.size() - sizeof(FrameHeader)) {
    return error(StatusCode::kMalformed, "body of ", h.body_bytes, " bytes runs past the frame");
  }
  if (h.tensor_count > kMaxTensorsPerFrame) {
    return error(StatusCode::kMalformed, h.tensor_count, " tensors in one frame exceed the limit");
  }
  if (h.tensor_count == 0 && sizeof(FrameHeader) + h.body_bytes != frame.size()) {
    return error(StatusCode::kMalformed, "bytes after the body of a frame without tensors");
  }
  Envelope e;
  e.type_id = h.type_id;
  e.src_actor = h.src_actor;
  e.dst_actor = h.dst_actor;
  e.request_id = h.request_id;
  e.kind = static_cast<FrameKind>(h.kind);
  return e;
}

OutgoingFrame encode_error(Envelope envelope, const Status& status) {
  envelope.kind = FrameKind::kErrorReply;
  ErrorBody body{static_cast<std::uint16_t>(status.code()), status.message()};
  return encode(envelope, body);
}

Status decode_error(std::shared_ptr<const Buffer> frame) {
  auto body = decode_message<ErrorBody>(std::move(frame));
  if (!body.is_ok()) return body.status();
  if (body->code == 0 || body->code > static_cast<std::uint16_t>(kLastStatusCode)) {
    return error(StatusCode::kMalformed, "error reply with unknown code ", body->code);
  }
  return Status(static_cast<StatusCode>(body->code), body->message);
}

}  // namespace sepal

#pragma once
// The wire format of actor messages. A frame is
//
//   FrameHeader (48 bytes) | fields | zero padding to 64 | tensor 0 | pad | tensor 1 | ...
//
// all little-endian. Each message type lists its fields once (SEPAL_FIELDS) and the same list
// drives encoding and decoding. Tensor bytes are not copied: the encoder hands them to the
// transport as separate segments, and decoded tensors point into the received frame.
//
// Decoding is for untrusted bytes: every length is checked against what remains, counts against
// the smallest possible element, tensor sizes against their shapes, and anything that does not
// add up is a kMalformed Status; it never reads out of bounds or allocates more than the frame
// could describe.
//
// Thread-safety: pure functions of their arguments.

#include <bit>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "runtime/buffer.h"
#include "runtime/status.h"
#include "runtime/tensor_payload.h"

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

/// Declares a message's fields, in wire order, for both encoding and decoding.
#define SEPAL_FIELDS(...)                                       \
  auto fields() { return std::tie(__VA_ARGS__); }               \
  auto fields() const { return std::tie(__VA_ARGS__); }

namespace sepal {

/// Version of the frame layout and of the messages' fields; a frame of any other version is
/// rejected. 2: token-tree steps (actors/protocol/block_host.h); 3: adapters; 4: adapters held
/// between training passes, and the failed-precondition status.
inline constexpr std::uint16_t kWireVersion = 4;
/// "SEPL" little-endian.
inline constexpr std::uint32_t kWireMagic = 0x4C504553;
/// Upper bounds that keep a hostile frame from asking for absurd work.
inline constexpr std::size_t kMaxTensorRank = 8;
inline constexpr std::uint32_t kMaxTensorsPerFrame = 1024;

/// What a frame is in a conversation.
enum class FrameKind : std::uint8_t { kOneWay = 0, kRequest = 1, kReply = 2, kErrorReply = 3 };

/// Routing and framing information at the start of every frame.
struct Envelope {
  std::uint16_t type_id = 0;
  std::uint32_t src_actor = 0;
  std::uint32_t dst_actor = 0;
  std::uint64_t request_id = 0;
  FrameKind kind = FrameKind::kOneWay;
};

/// Byte layout of the header (part of the wire format).
struct FrameHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t type_id;
  std::uint32_t src_actor;
  std::uint32_t dst_actor;
  std::uint64_t request_id;
  std::uint8_t kind;
  std::uint8_t reserved[3];
  std::uint32_t tensor_count;
  std::uint64_t body_bytes;
  std::uint64_t total_bytes;
};
static_assert(sizeof(FrameHeader) == 48);

/// A message type: a type id and a field list.
template <typename M>
concept WireMessage = requires(M m) {
  { M::kTypeId } -> std::convertible_to<std::uint16_t>;
  m.fields();
};

/// An encoded frame ready to send: header and fields in `head`, then the tensors by reference.
class OutgoingFrame {
 public:
  /// Total bytes on the wire.
  std::size_t size() const { return total_; }
  /// The frame as segments, in order (head, then each tensor preceded by its padding).
  std::vector<ConstSegment> segments() const;
  /// Copies the whole frame into `out` (at least size() bytes).
  void copy_to(std::byte* out) const;
  /// The frame as one contiguous buffer.
  std::shared_ptr<Buffer> flatten() const;
  /// A frame that resends `frame` (already encoded, e.g. just received) without copying it.
  static OutgoingFrame resend(std::shared_ptr<const Buffer> frame);
  /// Not ok when a field could not be encoded (a tensor whose bytes disagree with its shape, a
  /// string over 4 GiB); such a frame must not be sent.
  const Status& status() const { return status_; }

 private:
  friend class WireWriter;
  Status status_;
  std::vector<std::byte> head_;
  std::vector<TensorPayload> tensors_;
  std::vector<std::size_t> offsets_;  ///< frame offset of each tensor
  std::size_t total_ = 0;
};

/// Appends fields to a frame under construction. Used through encode().
class WireWriter {
 public:
  explicit WireWriter(const Envelope& envelope);

  template <typename T>
  void write(const T& value);
  OutgoingFrame finish() &&;

 private:
  void append(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    frame_.head_.insert(frame_.head_.end(), b, b + n);
  }
  void write_tensor(const TensorPayload& t);

  OutgoingFrame frame_;
  std::vector<std::pair<std::size_t, std::size_t>> tensor_field_offsets_;  ///< where to patch offsets
};

/// Reads fields of a received frame. Used through decode_message().
class WireReader {
 public:
  WireReader(std::shared_ptr<const Buffer> frame, std::size_t body_begin, std::size_t body_end,
             std::uint32_t tensor_count);

  template <typename T>
  void read(T& value);
  /// Ok when every read succeeded, every body byte was consumed and every tensor was claimed.
  Status finish() const;
  bool failed() const { return !status_.is_ok(); }

 private:
  bool take(void* out, std::size_t n);
  void fail(std::string what);
  void read_tensor(TensorPayload& t);

  std::shared_ptr<const Buffer> frame_;
  std::size_t pos_, end_;
  std::uint32_t tensors_left_;
  std::size_t next_tensor_min_offset_;
  Status status_;
};

namespace wire_detail {

template <typename T> struct IsVector : std::false_type {};
template <typename T> struct IsVector<std::vector<T>> : std::true_type {};
template <typename T> struct IsOptional : std::false_type {};
template <typename T> struct IsOptional<std::optional<T>> : std::true_type {};

template <typename T>
concept Scalar = std::is_arithmetic_v<T> || std::is_enum_v<T>;

template <typename T>
concept HasFields = requires(T t) { t.fields(); };

/// Smallest number of bytes an encoded T takes (to bound element counts before allocating).
template <typename T>
constexpr std::size_t min_wire_size() {
  if constexpr (Scalar<T>) return sizeof(T);
  else if constexpr (std::is_same_v<T, std::string> || IsVector<T>::value) return 4;
  else if constexpr (IsOptional<T>::value) return 1;
  else if constexpr (std::is_same_v<T, TensorPayload>) return 2 + 16;
  else return 1;
}

}  // namespace wire_detail

template <typename T>
void WireWriter::write(const T& value) {
  using namespace wire_detail;
  if constexpr (std::is_same_v<T, bool>) {
    const std::uint8_t b = value ? 1 : 0;
    append(&b, 1);
  } else if constexpr (Scalar<T>) {
    append(&value, sizeof(T));
  } else if constexpr (std::is_same_v<T, std::string>) {
    const auto n = static_cast<std::uint32_t>(value.size());
    append(&n, 4);
    append(value.data(), value.size());
  } else if constexpr (IsVector<T>::value) {
    const auto n = static_cast<std::uint32_t>(value.size());
    append(&n, 4);
    for (const auto& e : value) write(e);
  } else if constexpr (IsOptional<T>::value) {
    write(value.has_value());
    if (value) write(*value);
  } else if constexpr (std::is_same_v<T, TensorPayload>) {
    write_tensor(value);
  } else {
    static_assert(HasFields<T>, "a wire field must be a scalar, string, vector, optional, TensorPayload or a struct with SEPAL_FIELDS");
    std::apply([&](const auto&... f) { (write(f), ...); }, value.fields());
  }
}

template <typename T>
void WireReader::read(T& value) {
  using namespace wire_detail;
  if (failed()) return;
  if constexpr (std::is_same_v<T, bool>) {
    std::uint8_t b = 0;
    if (!take(&b, 1)) return;
    if (b > 1) return fail("a bool field holds " + std::to_string(b));
    value = b == 1;
  } else if constexpr (std::is_enum_v<T>) {
    std::underlying_type_t<T> raw{};
    if (!take(&raw, sizeof(raw))) return;
    value = static_cast<T>(raw);  // enums are range-checked by the handlers that use them
  } else if constexpr (Scalar<T>) {
    take(&value, sizeof(T));
  } else if constexpr (std::is_same_v<T, std::string>) {
    std::uint32_t n = 0;
    if (!take(&n, 4)) return;
    if (n > end_ - pos_) return fail("a string of " + std::to_string(n) + " bytes runs past the body");
    value.assign(reinterpret_cast<const char*>(frame_->data() + pos_), n);
    pos_ += n;
  } else if constexpr (IsVector<T>::value) {
    using E = typename T::value_type;
    std::uint32_t n = 0;
    if (!take(&n, 4)) return;
    if (static_cast<std::size_t>(n) > (end_ - pos_) / min_wire_size<E>()) {
      return fail("a list of " + std::to_string(n) + " elements cannot fit in the " +
                  std::to_string(end_ - pos_) + " bytes left");
    }
    value.clear();
    value.resize(n);
    for (auto& e : value) {
      read(e);
      if (failed()) return;
    }
  } else if constexpr (IsOptional<T>::value) {
    bool present = false;
    read(present);
    if (failed()) return;
    if (present) {
      value.emplace();
      read(*value);
    } else {
      value.reset();
    }
  } else if constexpr (std::is_same_v<T, TensorPayload>) {
    read_tensor(value);
  } else {
    static_assert(HasFields<T>);
    std::apply([&](auto&... f) { (read(f), ...); }, value.fields());
  }
}

/// Encodes `message` with routing information.
template <WireMessage M>
OutgoingFrame encode(Envelope envelope, const M& message) {
  envelope.type_id = M::kTypeId;
  WireWriter writer(envelope);
  writer.write(message);
  return std::move(writer).finish();
}

/// Validates a frame's header against the frame's size; the envelope on success.
Result<Envelope> decode_envelope(const Buffer& frame);

/// Decodes the fields of a frame whose envelope was already validated; tensors in the result
/// share the frame.
template <WireMessage M>
Result<M> decode_message(std::shared_ptr<const Buffer> frame) {
  auto envelope = decode_envelope(*frame);
  if (!envelope.is_ok()) return envelope.status();
  if (envelope->type_id != M::kTypeId) {
    return error(StatusCode::kMalformed, "frame holds message type ", envelope->type_id,
                 ", expected ", M::kTypeId);
  }
  FrameHeader header;
  std::memcpy(&header, frame->data(), sizeof(header));
  WireReader reader(frame, sizeof(FrameHeader), sizeof(FrameHeader) + header.body_bytes,
                    header.tensor_count);
  M message{};
  reader.read(message);
  SEPAL_RETURN_IF_ERROR(reader.finish());
  return message;
}

/// Encodes an error reply: the Status travels as code and message.
OutgoingFrame encode_error(Envelope envelope, const Status& status);
/// Decodes the Status of a kErrorReply frame.
Status decode_error(std::shared_ptr<const Buffer> frame);

}  // namespace sepal

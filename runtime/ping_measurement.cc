#include "runtime/ping_measurement.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "runtime/inproc_transport.h"
#include "runtime/log.h"
#include "runtime/mpi_environment.h"
#include "runtime/transport_factory.h"
#include "runtime/wan_transport.h"

namespace sepal {
namespace {

using Clock = std::chrono::steady_clock;

struct PingMessage {
  static constexpr std::uint16_t kTypeId = 0x0101;
  std::uint8_t phase = 0;  // 0: echo me, 1: bandwidth stream, 2: stream done (ack it)
  TensorPayload payload;
  SEPAL_FIELDS(phase, payload)
};

// Both roles in one delivery callback. The responder echoes phase-0 frames and acknowledges the
// end of a stream; the initiator sends the next ping from the callback itself, so a round trip
// involves no thread hand-off, as in ucx_perftest.
class PingPeer final : public TransportHandler {
 public:
  explicit PingPeer(Transport& t) : transport_(t) {}

  void on_frame(PeerId from, std::shared_ptr<const Buffer> frame) override {
    // Only well-formed ping messages count; anything else (short, another type) is dropped.
    auto envelope = decode_envelope(*frame);
    if (!envelope.is_ok() || envelope->type_id != PingMessage::kTypeId || frame->size() < sizeof(FrameHeader) + 1) {
      log(LogLevel::kWarn, "ping: dropped a frame of ", frame->size(), " bytes from peer ", from, " that is not a ping");
      return;
    }
    std::uint8_t phase = 0;
    std::memcpy(&phase, frame->data() + sizeof(FrameHeader), 1);
    if (responder_) {
      if (phase == 0 || phase == 2) (void)transport_.send(from, OutgoingFrame::resend(std::move(frame)));
      if (phase == 3) finish(Status::ok());
      return;
    }
    const auto now = Clock::now();
    std::unique_lock lock(mutex_);
    if (phase == 0 && remaining_ > 0) {
      rtts_.push_back(std::chrono::duration<double, std::micro>(now - sent_at_).count());
      if (--remaining_ > 0) {
        sent_at_ = Clock::now();
        lock.unlock();
        (void)transport_.send(from, ping_frame(0, data_));
        return;
      }
    }
    done_ = true;
    ready_.notify_all();
  }
  void on_peer_failed(PeerId, const Status& why) override { finish(why); }

  void set_responder() { responder_ = true; }

  /// Runs `count` round trips of `data` to `to`; the round-trip times in microseconds.
  Result<std::vector<double>> round_trips(PeerId to, std::shared_ptr<const std::vector<std::uint8_t>> data, int count) {
    {
      std::lock_guard lock(mutex_);
      data_ = data;
      rtts_.clear();
      remaining_ = count;
      done_ = false;
      sent_at_ = Clock::now();
    }
    SEPAL_RETURN_IF_ERROR(transport_.send(to, ping_frame(0, data)));
    SEPAL_RETURN_IF_ERROR(wait());
    std::lock_guard lock(mutex_);
    return rtts_;
  }

  /// Streams `count` frames of `data` to `to` and waits for the acknowledgement of the last.
  Status stream(PeerId to, const std::shared_ptr<const std::vector<std::uint8_t>>& data, int count) {
    {
      std::lock_guard lock(mutex_);
      done_ = false;
    }
    for (int i = 0; i < count - 1; ++i) SEPAL_RETURN_IF_ERROR(transport_.send(to, ping_frame(1, data)));
    SEPAL_RETURN_IF_ERROR(transport_.send(to, ping_frame(2, data)));
    return wait();
  }

  /// Waits until a batch is done (or the peer failed, or 120 s passed).
  Status wait() {
    std::unique_lock lock(mutex_);
    if (!ready_.wait_for(lock, std::chrono::seconds(120), [&] { return done_ || !failure_.is_ok(); })) {
      return error(StatusCode::kTimeout, "no answer from the other rank in 120 s");
    }
    return failure_;
  }

  static OutgoingFrame ping_frame(std::uint8_t phase, const std::shared_ptr<const std::vector<std::uint8_t>>& data) {
    return encode(Envelope{}, PingMessage{phase, share_vector<std::uint8_t>(ElementType::kU8, {static_cast<std::int64_t>(data->size())}, data)});
  }

 private:
  void finish(const Status& why) {
    std::lock_guard lock(mutex_);
    if (!why.is_ok()) failure_ = why;
    done_ = true;
    ready_.notify_all();
  }

  Transport& transport_;
  bool responder_ = false;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::shared_ptr<const std::vector<std::uint8_t>> data_;
  std::vector<double> rtts_;
  int remaining_ = 0;
  bool done_ = false;
  Clock::time_point sent_at_;
  Status failure_;
};

// Median round trip after a warm-up, then a one-way stream for bandwidth (the acknowledgement's
// return trip is subtracted).
Result<PingRow> measure(PingPeer& peer, PeerId to, std::size_t bytes, int iterations) {
  auto data = std::make_shared<const std::vector<std::uint8_t>>(bytes, 0x5a);
  const int warmup = std::max(2, iterations / 10);
  auto rtts = peer.round_trips(to, data, warmup + iterations);
  if (!rtts.is_ok()) return rtts.status();
  std::vector<double> timed(rtts->begin() + warmup, rtts->end());
  std::nth_element(timed.begin(), timed.begin() + timed.size() / 2, timed.end());
  const double rtt = timed[timed.size() / 2];
  const int count = static_cast<int>(std::clamp<std::size_t>((std::size_t{256} << 20) / bytes, 8, 4000));
  SEPAL_RETURN_IF_ERROR(peer.stream(to, data, count));  // warm-up: receive buffers come from the pool after this
  const auto start = Clock::now();
  SEPAL_RETURN_IF_ERROR(peer.stream(to, data, count));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count() - (rtt / 2) * 1e-6;
  return PingRow{bytes, rtt, static_cast<double>(bytes) * count * 8 / std::max(seconds, 1e-9) / 1e9};
}

int iterations_for(std::size_t bytes, int requested) {
  if (requested > 0) return requested;
  if (bytes <= 65536) return 2000;
  if (bytes <= (1u << 20)) return 300;
  return 30;
}

}  // namespace

Result<std::string> run_ping(int* argc, char*** argv, const PingSettings& settings,
                             const std::function<void(const std::string&, const PingRow&)>& on_row) {
  const TransportChoice& choice = settings.transport;
  // Two transports: ours (the initiator) and, for inproc, the responder in this process.
  std::unique_ptr<Transport> mine, responder_transport;
  std::shared_ptr<InprocHub> hub;
  bool initiator = true;
  if (choice.name == "inproc") {
    hub = InprocHub::create();
    mine = hub->endpoint();
    responder_transport = hub->endpoint();
    if (choice.wan.enabled()) {
      mine = std::make_unique<WanTransport>(std::move(mine), choice.wan);
      responder_transport = std::make_unique<WanTransport>(std::move(responder_transport), choice.wan);
    }
  } else {
    SEPAL_RETURN_IF_ERROR(mpi_init(argc, argv));
    if (mpi_world_size() != 2) {
      return error(StatusCode::kInvalidArgument, "run it on two ranks: mpirun -np 2 sepal ping --transport ", choice.name);
    }
    initiator = mpi_world_rank() == 0;
    auto t = transport_over_comm(MPI_COMM_WORLD, choice);
    if (!t.is_ok()) return t.status();
    mine = std::move(t).value();
  }
  PingPeer peer(*mine);
  if (!initiator) peer.set_responder();
  SEPAL_RETURN_IF_ERROR(mine->start(&peer));
  std::unique_ptr<PingPeer> responder;
  if (responder_transport) {
    responder = std::make_unique<PingPeer>(*responder_transport);
    responder->set_responder();
    SEPAL_RETURN_IF_ERROR(responder_transport->start(responder.get()));
  }
  const std::string label = mine->name();
  Status outcome;
  if (initiator) {
    const PeerId other = choice.name == "inproc" ? 1 : 1 - mine->self();
    for (auto bytes : settings.sizes) {
      auto row = measure(peer, other, bytes, iterations_for(bytes, settings.iterations) / (choice.wan.enabled() ? 20 : 1) + 1);
      if (!row.is_ok()) {
        outcome = error(row.status().code(), "ping failed at ", bytes, " bytes: ", row.status().to_string());
        break;
      }
      on_row(label, row.value());
    }
  }
  if (initiator && choice.name != "inproc") {
    (void)mine->send(1 - mine->self(), PingPeer::ping_frame(3, std::make_shared<const std::vector<std::uint8_t>>(1, 0)));
  } else if (!initiator) {
    // Serve until the initiator says it is done (not in a busy MPI_Barrier); a dead initiator is
    // reported by the transport's failure detector.
    Status s;
    do {
      s = peer.wait();
    } while (s.code() == StatusCode::kTimeout);
  }
  mine->stop();
  if (responder_transport) responder_transport->stop();
  if (!outcome.is_ok()) return outcome;
  return label;
}

}  // namespace sepal

// sepal ping: round-trip latency and bandwidth between two ranks over a transport, like
// ucx_perftest or OSU's latency test. Run under `mpirun -np 2` (mpi, ucx) or alone (inproc).
// The echo runs inside the transport's delivery callback, so the numbers are the transport's.
#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "kernels/error.h"
#include "runtime/inproc_transport.h"
#include "runtime/log.h"
#include "runtime/mpi_environment.h"
#include "runtime/mpi_transport.h"
#include "runtime/ucx_transport.h"
#include "runtime/wan_transport.h"
#include "tools/commands.h"
#include "tools/wan_options.h"

namespace sepal::tools {
namespace {

namespace po = boost::program_options;
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

struct Row {
  std::size_t bytes;
  double rtt_us;
  double bandwidth_gbps;
};

// Median round trip after a warm-up, then a one-way stream for bandwidth (the acknowledgement's
// return trip is subtracted).
Result<Row> measure(PingPeer& peer, PeerId to, std::size_t bytes, int iterations) {
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
  return Row{bytes, rtt, static_cast<double>(bytes) * count * 8 / std::max(seconds, 1e-9) / 1e9};
}

int iterations_for(std::size_t bytes, int requested) {
  if (requested > 0) return requested;
  if (bytes <= 65536) return 2000;
  if (bytes <= (1u << 20)) return 300;
  return 30;
}

}  // namespace

int ping_command(int argc, char** argv) {
  std::string transport_name = "ucx", wan_text, config_path;
  std::vector<std::size_t> sizes;
  int iterations = 0;
  po::options_description options("sepal ping: round trip and bandwidth between two ranks (mpirun -np 2, or alone with --transport inproc)");
  options.add_options()("help,h", "show this help")
      ("transport", po::value(&transport_name)->default_value("ucx"), "inproc, mpi or ucx")
      ("wan", po::value(&wan_text), "emulate a WAN link: rtt_ms=..,bandwidth_mbps=..,jitter_ms=..,loss=..")
      ("config", po::value(&config_path), "config file; its [wan] section sets the same keys (--wan overrides)")
      ("sizes", po::value(&sizes)->multitoken(), "message sizes in bytes (default 8 B to 64 MiB, x8 steps)")
      ("iterations", po::value(&iterations)->default_value(0), "round trips per size (0: by size)")
      ("json", "print a JSON array of rows instead of a table")
      ("no-link-authentication", po::bool_switch(), "ucx: no MAC on messages (to measure what it costs)");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  if (transport_name != "inproc" && transport_name != "mpi" && transport_name != "ucx") {
    throw UsageError{"--transport must be inproc, mpi or ucx, got '" + transport_name + "'"};
  }
  if (iterations < 0) throw UsageError{"--iterations must be at least 0"};
  const bool authenticate = !vm["no-link-authentication"].as<bool>();
  if (!authenticate && transport_name != "ucx") throw UsageError{"--no-link-authentication is for --transport ucx"};
  if (sizes.empty()) {
    for (std::size_t s = 8; s <= (std::size_t{64} << 20); s *= 8) sizes.push_back(s);
    sizes.push_back(std::size_t{1} << 20);
    sizes.push_back(std::size_t{64} << 20);
    std::sort(sizes.begin(), sizes.end());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  }
  for (auto s : sizes) {
    if (s == 0 || s > (std::size_t{1} << 30)) throw UsageError{"--sizes must be between 1 byte and 1 GiB"};
  }
  const WanConfig wan = wan_settings(config_path, wan_text);
  const bool json = vm.count("json") > 0;
  auto wrap = [&](std::unique_ptr<Transport> t) -> std::unique_ptr<Transport> {
    if (!wan.enabled()) return t;
    return std::make_unique<WanTransport>(std::move(t), wan);
  };

  // Two transports: ours (the initiator) and, for inproc, the responder in this process.
  std::unique_ptr<Transport> mine, responder_transport;
  std::shared_ptr<InprocHub> hub;
  bool initiator = true;
  if (transport_name == "inproc") {
    hub = InprocHub::create();
    mine = wrap(hub->endpoint());
    responder_transport = wrap(hub->endpoint());
  } else {
    if (Status s = mpi_init(&argc, &argv); !s.is_ok()) fail(s.to_string());
    if (mpi_world_size() != 2) {
      throw UsageError{"run it on two ranks: mpirun -np 2 sepal ping --transport " + transport_name};
    }
    initiator = mpi_world_rank() == 0;
    if (transport_name == "mpi") {
      auto t = MpiTransport::create(MPI_COMM_WORLD);
      if (!t.is_ok()) fail(t.status().to_string());
      mine = wrap(std::move(t).value());
    } else {
      UcxOptions ucx;
      ucx.authenticate = authenticate;
      auto t = UcxTransport::create_over_mpi(MPI_COMM_WORLD, ucx);
      if (!t.is_ok()) fail(t.status().to_string());
      mine = wrap(std::move(t).value());
    }
  }
  PingPeer peer(*mine);
  if (!initiator) peer.set_responder();
  if (Status s = mine->start(&peer); !s.is_ok()) fail(s.to_string());
  std::unique_ptr<PingPeer> responder;
  if (responder_transport) {
    responder = std::make_unique<PingPeer>(*responder_transport);
    responder->set_responder();
    if (Status s = responder_transport->start(responder.get()); !s.is_ok()) fail(s.to_string());
  }
  const std::string label = mine->name();
  std::vector<Row> rows;
  if (initiator) {
    const PeerId other = transport_name == "inproc" ? 1 : 1 - mine->self();
    if (!json) {
      std::printf("# sepal ping over %s%s\n%12s %12s %16s\n", label.c_str(),
                  wan.enabled() ? (" (" + wan.to_string() + ")").c_str() : "", "bytes", "rtt_us", "bandwidth_gbps");
    }
    for (auto bytes : sizes) {
      auto row = measure(peer, other, bytes, iterations_for(bytes, iterations) / (wan.enabled() ? 20 : 1) + 1);
      if (!row.is_ok()) fail("ping failed at ", bytes, " bytes: ", row.status().to_string());
      rows.push_back(row.value());
      if (!json) std::printf("%12zu %12.2f %16.3f\n", row->bytes, row->rtt_us, row->bandwidth_gbps), std::fflush(stdout);
    }
    if (json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& r : rows) {
        out.push_back({{"transport", label}, {"bytes", r.bytes}, {"rtt_us", r.rtt_us}, {"bandwidth_gbps", r.bandwidth_gbps}});
      }
      std::cout << out.dump(1) << "\n";
    }
  }
  if (initiator && transport_name != "inproc") {
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
  return 0;
}

}  // namespace sepal::tools

#include "runtime/ucx_transport.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "runtime/mpi_environment.h"
#include "runtime/peer_liveness.h"
#include "runtime/progress_backoff.h"

namespace sepal {
namespace {

constexpr unsigned kAmFrame = 11;
constexpr unsigned kAmKeepalive = 12;
constexpr unsigned kAmBye = 13;

Status ucs_status(ucs_status_t s, const char* call) {
  if (s == UCS_OK) return Status::ok();
  return error(StatusCode::kUnavailable, call, " failed: ", ucs_status_string(s));
}

#define SEPAL_UCS_RETURN_IF_ERROR(call) SEPAL_RETURN_IF_ERROR(ucs_status((call), #call))

struct AmHeader {
  PeerId sender;
  std::uint32_t reserved;
};

struct PeerState;

// One send in flight: holds the frame and the iov array until UCX completes it.
struct SendRequest {
  OutgoingFrame frame;
  std::vector<ucp_dt_iov_t> iov;
  AmHeader header;
  std::size_t* in_flight = nullptr;       // the transport's count
  std::size_t* peer_bytes = nullptr;  // the peer's window
  std::size_t bytes = 0;
};

// Bytes posted to UCX per peer at most (and always at least one frame). Over shared memory a
// large frame is copied through bounce buffers; more in flight only evicts them from the cache:
// at 1 MiB, 2 frames in flight run at 12 GB/s here, 8 at 3 GB/s (bench/run_ping.sh).
constexpr std::size_t kSendWindowBytes = std::size_t{2} << 20;

// One received frame; delivered when `done` and every earlier frame of the peer is delivered.
struct ReceiveSlot {
  std::shared_ptr<Buffer> buffer;
  bool done = false;
  bool failed = false;
};

struct PeerState {
  PeerId id = 0;
  ucp_ep_h ep = nullptr;
  std::deque<OutgoingFrame> waiting;  // frames beyond the send window, in order
  std::size_t bytes_in_flight = 0;    // bytes posted to UCX and not completed
  bool failed = false;  // error reported or bye received
  bool reported = false;
  std::deque<std::shared_ptr<ReceiveSlot>> receives;
  std::vector<std::pair<PeerId, Status>>* failures = nullptr;  ///< the transport's, for callbacks
};

struct Command {
  enum class Kind { kSend, kAddPeer } kind;
  PeerId peer;
  OutgoingFrame frame;
  std::vector<std::byte> address;
};

}  // namespace

struct UcxTransport::State {
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  std::vector<std::byte> address;
  PeerId self = 0;
  TransportHandler* handler = nullptr;
  PeerLiveness liveness;
  std::thread thread;
  std::atomic<bool> running{false};
  std::atomic<bool> draining{false};
  std::size_t sends_in_flight = 0;  // progress thread only

  // Waiting for work: the progress thread blocks in epoll on the worker's event fd and on
  // `command_fd`, which send() and connect() signal while `blocked` says it may be asleep.
  int epoll_fd = -1;
  int command_fd = -1;
  std::atomic<bool> blocked{false};

  mutable std::mutex mutex;  // guards commands and the public view of peers
  std::deque<Command> commands;
  std::map<PeerId, bool> public_failed;

  // Progress-thread only (and the create() thread before start()).
  std::map<PeerId, std::unique_ptr<PeerState>> peers;
  std::map<ucp_ep_h, PeerId> ep_peer;
  std::vector<std::pair<PeerId, Status>> failures;  // found inside callbacks, reported after

  explicit State(LivenessOptions options) : liveness(options) {}
  // Also what a failed create() leaves behind.
  ~State() {
    if (worker) ucp_worker_destroy(worker);
    if (context) ucp_cleanup(context);
    if (epoll_fd >= 0) ::close(epoll_fd);
    if (command_fd >= 0) ::close(command_fd);
  }

  // ---- callbacks (run inside ucp_worker_progress on the progress thread) ----

  static void on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* peer = static_cast<PeerState*>(arg);
    if (peer->failed) return;
    peer->failed = true;
    peer->failures->emplace_back(peer->id, error(StatusCode::kPeerFailed, "link to peer ", peer->id,
                                                       " failed: ", ucs_status_string(status)));
  }

  static void on_send_done(void* request, ucs_status_t, void* user_data) {
    auto* r = static_cast<SendRequest*>(user_data);
    --*r->in_flight;
    *r->peer_bytes -= r->bytes;
    delete r;
    ucp_request_free(request);
  }

  static void on_receive_done(void* request, ucs_status_t status, std::size_t, void* user_data) {
    auto* slot = static_cast<std::shared_ptr<ReceiveSlot>*>(user_data);
    (*slot)->done = true;
    (*slot)->failed = status != UCS_OK;
    delete slot;
    ucp_request_free(request);
  }

  static ucs_status_t on_am(void* arg, const void* header, std::size_t header_length, void* data,
                            std::size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<State*>(arg);
    if (header_length != sizeof(AmHeader)) return UCS_OK;
    AmHeader h;
    std::memcpy(&h, header, sizeof(h));
    const auto it = self->peers.find(h.sender);
    if (it == self->peers.end() || it->second->failed) return UCS_OK;
    PeerState& peer = *it->second;
    self->liveness.heard(peer.id, PeerLiveness::Clock::now());
    auto slot = std::make_shared<ReceiveSlot>();
    slot->buffer = Buffer::allocate(length);
    if (!slot->buffer) {
      slot->done = slot->failed = true;
    } else if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.recv_am = on_receive_done;
      auto* user = new std::shared_ptr<ReceiveSlot>(slot);
      p.user_data = user;
      void* request = ucp_am_recv_data_nbx(self->worker, data, slot->buffer->data(), length, &p);
      if (!UCS_PTR_IS_PTR(request)) {  // finished at once (or failed): no callback will come
        delete user;
        slot->done = true;
        slot->failed = UCS_PTR_IS_ERR(request);
      }
    } else {
      std::memcpy(slot->buffer->data(), data, length);
      slot->done = true;
    }
    peer.receives.push_back(std::move(slot));
    return UCS_OK;
  }

  static ucs_status_t on_keepalive(void* arg, const void* header, std::size_t header_length, void*,
                                   std::size_t, const ucp_am_recv_param_t*) {
    auto* self = static_cast<State*>(arg);
    if (header_length != sizeof(AmHeader)) return UCS_OK;
    AmHeader h;
    std::memcpy(&h, header, sizeof(h));
    self->liveness.heard(h.sender, PeerLiveness::Clock::now());
    return UCS_OK;
  }

  static ucs_status_t on_bye(void* arg, const void* header, std::size_t header_length, void*,
                             std::size_t, const ucp_am_recv_param_t*) {
    auto* self = static_cast<State*>(arg);
    if (header_length != sizeof(AmHeader)) return UCS_OK;
    AmHeader h;
    std::memcpy(&h, header, sizeof(h));
    if (auto it = self->peers.find(h.sender); it != self->peers.end()) {
      it->second->failed = true;    // leaving: its endpoint closing is not a failure
      it->second->reported = true;
      self->liveness.forget(h.sender);
      std::lock_guard lock(self->mutex);
      self->public_failed[h.sender] = true;
    }
    return UCS_OK;
  }

  // ---- progress-thread work ----

  Status register_handler(unsigned id, ucp_am_recv_callback_t cb) {
    ucp_am_handler_param_t p{};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                   UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    p.id = id;
    p.cb = cb;
    p.arg = this;
    p.flags = UCP_AM_FLAG_WHOLE_MSG;
    return ucs_status(ucp_worker_set_am_recv_handler(worker, &p), "ucp_worker_set_am_recv_handler");
  }

  Status connect(PeerId id, const std::byte* remote, std::size_t) {
    auto peer = std::make_unique<PeerState>();
    peer->id = id;
    peer->failures = &failures;
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.address = reinterpret_cast<const ucp_address_t*>(remote);
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = on_ep_error;
    p.err_handler.arg = peer.get();
    SEPAL_UCS_RETURN_IF_ERROR(ucp_ep_create(worker, &p, &peer->ep));
    ep_peer[peer->ep] = id;
    peers[id] = std::move(peer);
    return Status::ok();
  }

  void send_am(PeerState& peer, unsigned id, OutgoingFrame* frame) {
    auto* request = new SendRequest();
    request->header = AmHeader{self, 0};
    request->in_flight = &sends_in_flight;
    request->peer_bytes = &peer.bytes_in_flight;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = on_send_done;
    p.user_data = request;
    const void* buffer = nullptr;
    std::size_t count = 0;
    if (frame) {
      request->bytes = frame->size();
      request->frame = std::move(*frame);
      for (const auto& s : request->frame.segments()) {
        if (s.size) request->iov.push_back(ucp_dt_iov_t{const_cast<std::byte*>(s.data), s.size});
      }
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
      p.datatype = ucp_dt_make_iov();
      buffer = request->iov.data();
      count = request->iov.size();
    }
    void* status = ucp_am_send_nbx(peer.ep, id, &request->header, sizeof(AmHeader), buffer, count, &p);
    if (UCS_PTR_IS_PTR(status)) {
      ++sends_in_flight;
      peer.bytes_in_flight += request->bytes;
    } else {
      delete request;
      if (UCS_PTR_IS_ERR(status) && !peer.failed) {
        peer.failed = true;
        failures.emplace_back(peer.id, ucs_status(UCS_PTR_STATUS(status), "ucp_am_send_nbx"));
      }
    }
  }

  bool run_commands() {
    std::deque<Command> batch;
    {
      std::lock_guard lock(mutex);
      batch.swap(commands);
    }
    for (auto& c : batch) {
      if (c.kind == Command::Kind::kAddPeer) {
        Status s = connect(c.peer, c.address.data(), c.address.size());
        if (s.is_ok()) liveness.watch(c.peer, PeerLiveness::Clock::now());
        else failures.emplace_back(c.peer, s);
        continue;
      }
      const auto it = peers.find(c.peer);
      if (it == peers.end() || it->second->failed) continue;
      it->second->waiting.push_back(std::move(c.frame));
    }
    return !batch.empty();
  }

  // Posts waiting frames while each peer's window has room.
  bool post_waiting() {
    bool posted = false;
    for (auto& [id, peer] : peers) {
      while (!peer->failed && !peer->waiting.empty() &&
             (peer->bytes_in_flight == 0 || peer->bytes_in_flight + peer->waiting.front().size() <= kSendWindowBytes)) {
        OutgoingFrame frame = std::move(peer->waiting.front());
        peer->waiting.pop_front();
        send_am(*peer, kAmFrame, &frame);
        posted = true;
      }
      if (peer->failed) peer->waiting.clear();
    }
    return posted;
  }

  bool sending() const {
    for (const auto& [id, peer] : peers) {
      if (!peer->waiting.empty()) return true;
    }
    return sends_in_flight > 0;
  }

  bool deliver() {
    bool progressed = false;
    for (auto& [id, peer] : peers) {
      while (!peer->receives.empty() && peer->receives.front()->done) {
        auto slot = std::move(peer->receives.front());
        peer->receives.pop_front();
        if (!slot->failed) handler->on_frame(id, std::move(slot->buffer));
        progressed = true;
      }
    }
    return progressed;
  }

  void report_failures() {
    auto batch = std::move(failures);
    failures.clear();
    for (auto& [id, why] : batch) {
      auto it = peers.find(id);
      if (it != peers.end()) {
        if (it->second->reported) continue;
        it->second->failed = it->second->reported = true;
        it->second->receives.clear();
      }
      liveness.forget(id);
      {
        std::lock_guard lock(mutex);
        public_failed[id] = true;
      }
      handler->on_peer_failed(id, why);
    }
  }

  void check_liveness() {
    const auto now = PeerLiveness::Clock::now();
    for (PeerId id : liveness.keepalives_due(now)) {
      if (auto it = peers.find(id); it != peers.end() && !it->second->failed) send_am(*it->second, kAmKeepalive, nullptr);
    }
    for (PeerId id : liveness.overdue(now)) {
      failures.emplace_back(id, error(StatusCode::kPeerFailed, "peer ", id, " silent for longer than the failure timeout"));
    }
  }

  bool receiving() const {
    for (const auto& [id, peer] : peers) {
      if (!peer->receives.empty()) return true;
    }
    return false;
  }

  bool flushed() {
    {
      std::lock_guard lock(mutex);
      if (!commands.empty()) return false;
    }
    return !sending();
  }

  // Wakes the progress thread if it may be blocked; call after queueing a command.
  void wake() {
    if (!blocked.load()) return;
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(command_fd, &one, sizeof(one));
  }

  // Blocks until UCX has an event, a command is queued, or a keepalive may be due.
  void block(const ProgressBackoff& backoff) {
    const ucs_status_t armed = ucp_worker_arm(worker);
    if (armed == UCS_ERR_BUSY) return;  // events arrived meanwhile: progress them first
    if (armed != UCS_OK) {              // no wakeup on this transport: poll gently
      std::this_thread::sleep_for(backoff.sleep_step());
      return;
    }
    blocked.store(true);
    bool queued = false;
    {
      std::lock_guard lock(mutex);
      queued = !commands.empty();
    }
    if (!queued) {
      // Keepalives go out every keepalive period; waking at a quarter of it keeps them on time.
      const long timeout_ms = std::clamp<long>(liveness.options().keepalive_period.count() / 4, 1, 50);
      epoll_event events[2];
      (void)::epoll_wait(epoll_fd, events, 2, static_cast<int>(timeout_ms));
      std::uint64_t count = 0;
      while (::read(command_fd, &count, sizeof(count)) == sizeof(count)) {
      }
    }
    blocked.store(false);
  }

  void run() {
    ProgressBackoff backoff;
    std::optional<std::chrono::steady_clock::time_point> drain_deadline;
    while (running.load(std::memory_order_acquire)) {
      if (draining.load(std::memory_order_acquire)) {
        const auto now = std::chrono::steady_clock::now();
        if (!drain_deadline) drain_deadline = now + std::chrono::seconds(1);
        if (now > *drain_deadline || flushed()) break;
      }
      bool busy = run_commands();
      busy |= post_waiting();
      while (ucp_worker_progress(worker) != 0) busy = true;
      busy |= deliver();
      check_liveness();
      report_failures();
      // Transfers in flight need the worker progressed: no backing off until they finish.
      if (busy || sending() || receiving()) backoff.busy();
      else if (!backoff.keep_polling() && !draining.load(std::memory_order_acquire)) block(backoff);
    }
  }

  void shutdown() {
    // Goodbye first: closing an endpoint fires the other side's error handler.
    for (auto& [id, peer] : peers) {
      if (!peer->failed) send_am(*peer, kAmBye, nullptr);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    while (std::chrono::steady_clock::now() < deadline) {
      if (ucp_worker_progress(worker) == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::vector<void*> closing;
    for (auto& [id, peer] : peers) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      void* r = ucp_ep_close_nbx(peer->ep, &p);
      if (UCS_PTR_IS_PTR(r)) closing.push_back(r);
    }
    const auto close_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (void* r : closing) {
      while (ucp_request_check_status(r) == UCS_INPROGRESS && std::chrono::steady_clock::now() < close_deadline) {
        ucp_worker_progress(worker);
      }
      ucp_request_free(r);
    }
    peers.clear();
  }
};

UcxTransport::UcxTransport(std::unique_ptr<State> state) : state_(std::move(state)) {}

Result<std::unique_ptr<UcxTransport>> UcxTransport::create(PeerId self, LivenessOptions liveness) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  // Shared-memory transports report peer failures only with this set; without it UCX would drop
  // them from endpoints that ask for error handling and fall back to TCP.
  setenv("UCX_MM_ERROR_HANDLING", "y", /*overwrite=*/0);
  auto state = std::make_unique<State>(liveness);
  state->self = self;
  ucp_config_t* config = nullptr;
  SEPAL_UCS_RETURN_IF_ERROR(ucp_config_read(nullptr, nullptr, &config));
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  const ucs_status_t init = ucp_init(&params, config, &state->context);
  ucp_config_release(config);
  SEPAL_UCS_RETURN_IF_ERROR(init);
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  SEPAL_UCS_RETURN_IF_ERROR(ucp_worker_create(state->context, &wp, &state->worker));
  int worker_fd = -1;
  SEPAL_UCS_RETURN_IF_ERROR(ucp_worker_get_efd(state->worker, &worker_fd));
  state->epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  state->command_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (state->epoll_fd < 0 || state->command_fd < 0) {
    return error(StatusCode::kUnavailable, "cannot create the UCX progress thread's wait set: ", std::strerror(errno));
  }
  for (int fd : {worker_fd, state->command_fd}) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (::epoll_ctl(state->epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) {
      return error(StatusCode::kUnavailable, "epoll_ctl on the UCX progress thread's wait set: ", std::strerror(errno));
    }
  }
  ucp_address_t* address = nullptr;
  std::size_t address_length = 0;
  SEPAL_UCS_RETURN_IF_ERROR(ucp_worker_get_address(state->worker, &address, &address_length));
  state->address.assign(reinterpret_cast<std::byte*>(address), reinterpret_cast<std::byte*>(address) + address_length);
  ucp_worker_release_address(state->worker, address);
  SEPAL_RETURN_IF_ERROR(state->register_handler(kAmFrame, State::on_am));
  SEPAL_RETURN_IF_ERROR(state->register_handler(kAmKeepalive, State::on_keepalive));
  SEPAL_RETURN_IF_ERROR(state->register_handler(kAmBye, State::on_bye));
  return std::unique_ptr<UcxTransport>(new UcxTransport(std::move(state)));
}

Result<std::unique_ptr<UcxTransport>> UcxTransport::create_over_mpi(MPI_Comm comm, LivenessOptions liveness) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  int rank = 0, size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  auto created = create(static_cast<PeerId>(rank), liveness);
  if (!created.is_ok()) return created.status();
  auto transport = std::move(created).value();
  State& state = *transport->state_;
  auto addresses = mpi_allgather_bytes(comm, state.address);
  if (!addresses.is_ok()) return addresses.status();
  for (int r = 0; r < size; ++r) {
    if (r == rank) continue;
    const auto& a = addresses.value()[static_cast<std::size_t>(r)];
    SEPAL_RETURN_IF_ERROR(state.connect(static_cast<PeerId>(r), a.data(), a.size()));
  }
  return transport;
}

UcxTransport::~UcxTransport() { stop(); }  // then ~State releases the worker and the context

std::vector<std::byte> UcxTransport::address() const { return state_->address; }

Status UcxTransport::connect(PeerId id, std::span<const std::byte> address) {
  std::lock_guard lock(state_->mutex);
  if (id == state_->self || state_->public_failed.count(id)) return error(StatusCode::kInvalidArgument, "peer id ", id, " is taken");
  state_->public_failed[id] = false;
  // Before start() the worker is ours to use; after, only the progress thread may touch it.
  if (!state_->running.load()) return state_->connect(id, address.data(), address.size());
  state_->commands.push_back(Command{Command::Kind::kAddPeer, id, OutgoingFrame{}, {address.begin(), address.end()}});
  state_->wake();
  return Status::ok();
}

PeerId UcxTransport::self() const { return state_->self; }

std::vector<PeerId> UcxTransport::peers() const {
  std::lock_guard lock(state_->mutex);
  std::vector<PeerId> out;
  for (const auto& [id, failed] : state_->public_failed) {
    if (!failed) out.push_back(id);
  }
  return out;
}

Status UcxTransport::start(TransportHandler* handler) {
  if (state_->running.exchange(true)) return error(StatusCode::kInvalidArgument, "transport already started");
  state_->handler = handler;
  const auto now = PeerLiveness::Clock::now();
  {
    std::lock_guard lock(state_->mutex);
    for (const auto& [id, peer] : state_->peers) {
      state_->public_failed[id] = false;
      state_->liveness.watch(id, now);
    }
  }
  state_->thread = std::thread([s = state_.get()] { s->run(); });
  return Status::ok();
}

Status UcxTransport::send(PeerId to, OutgoingFrame frame) {
  SEPAL_RETURN_IF_ERROR(frame.status());
  std::lock_guard lock(state_->mutex);
  const auto it = state_->public_failed.find(to);
  if (it == state_->public_failed.end()) return error(StatusCode::kNotFound, "no peer ", to);
  if (it->second) return error(StatusCode::kPeerFailed, "peer ", to, " has failed or left");
  state_->commands.push_back(Command{Command::Kind::kSend, to, std::move(frame), {}});
  state_->wake();
  return Status::ok();
}

void UcxTransport::stop() {
  if (!state_->running.load()) return;
  state_->draining = true;
  if (state_->thread.joinable()) state_->thread.join();
  state_->running = false;
  state_->shutdown();
}

}  // namespace sepal

#include "runtime/ucx_transport.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>
#include <ucs/config/global_opts.h>
#include <ucs/debug/log_def.h>
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
#include <set>
#include <thread>
#include <vector>

#include "runtime/log.h"
#include "runtime/mpi_environment.h"
#include "runtime/peer_liveness.h"
#include "runtime/progress_backoff.h"

namespace sepal {
namespace {

constexpr unsigned kAmMessage = 11;
constexpr int kKeyTag = 7411;  // MPI tag of the link keys rank 0 hands out in create_over_mpi
// The longest a closing transport waits for its goodbyes to go out (State::shutdown).
constexpr auto kGoodbyeWait = std::chrono::milliseconds(200);

enum class Kind : std::uint32_t { kChunk = 1, kKeepalive = 2, kBye = 3 };

// The header of every active message. The header tag covers every byte before it.
struct AmHeader {
  std::uint32_t sender = 0;
  std::uint32_t kind = 0;
  std::uint64_t sequence = 0;
  std::uint64_t frame_bytes = 0;  // chunks: the whole frame's size
  std::uint64_t offset = 0;       // chunks: where this chunk starts in the frame
  LinkTag payload_tag{};
  LinkTag header_tag{};
};
static_assert(sizeof(AmHeader) == 64);
constexpr std::size_t kTaggedHeaderBytes = offsetof(AmHeader, header_tag);

Status ucs_status(ucs_status_t s, const char* call) {
  if (s == UCS_OK) return Status::ok();
  return error(StatusCode::kUnavailable, call, " failed: ", ucs_status_string(s));
}

#define SEPAL_UCS_RETURN_IF_ERROR(call) SEPAL_RETURN_IF_ERROR(ucs_status((call), #call))

// A frame being sent, in chunks.
struct SendingFrame {
  OutgoingFrame frame;
  std::vector<ConstSegment> segments;
  std::size_t total = 0;
  std::size_t offset = 0;   // first byte not yet posted
  std::size_t segment = 0;  // segment holding `offset`
  std::size_t within = 0;   // offset inside that segment

  explicit SendingFrame(OutgoingFrame f) : frame(std::move(f)), segments(frame.segments()), total(frame.size()) {}

  // The next chunk's byte runs (at most `limit` bytes), advancing the cursor.
  std::vector<ConstSegment> next_chunk(std::size_t limit) {
    std::vector<ConstSegment> out;
    std::size_t left = std::min(limit, total - offset);
    while (left > 0) {
      const ConstSegment& s = segments[segment];
      const std::size_t n = std::min(left, s.size - within);
      if (n > 0) out.push_back(ConstSegment{s.data + within, n});
      within += n;
      offset += n;
      left -= n;
      if (within == s.size) {
        ++segment;
        within = 0;
      }
    }
    return out;
  }
};

// One message in flight: holds the frame (shared by its chunks), the iov array and the header
// until UCX completes it.
struct SendRequest {
  std::shared_ptr<SendingFrame> frame;
  std::vector<ucp_dt_iov_t> iov;
  AmHeader header;
  std::size_t* in_flight = nullptr;   // the transport's count
  std::size_t* peer_bytes = nullptr;  // the peer's window
  std::size_t bytes = 0;
};

// A chunk received, whose payload tag is checked before its frame is delivered.
struct ReceivedChunk {
  std::size_t offset = 0;
  std::size_t size = 0;
  std::uint64_t sequence = 0;
  LinkTag tag{};
  bool done = false;
  bool failed = false;
};

// A frame being received; delivered when every chunk arrived and verified, after every earlier
// frame of the peer.
struct IncomingFrame {
  std::shared_ptr<Buffer> buffer;
  std::size_t next_offset = 0;  // where the next chunk must start
  std::vector<ReceivedChunk> chunks;
  bool complete() const { return next_offset == buffer->size(); }
};

// Which sequence numbers of a peer were seen: the highest, and a bitmap of the 64 below it.
class ReplayWindow {
 public:
  // Whether `sequence` is new (and records it).
  bool accept(std::uint64_t sequence) {
    if (sequence == 0) return false;
    if (sequence > highest_) {
      const std::uint64_t shift = sequence - highest_;
      seen_ = shift >= 64 ? 0 : seen_ << shift;
      seen_ |= 1;
      highest_ = sequence;
      return true;
    }
    const std::uint64_t back = highest_ - sequence;
    if (back >= 64 || (seen_ >> back) & 1) return false;
    seen_ |= std::uint64_t{1} << back;
    return true;
  }

 private:
  std::uint64_t highest_ = 0;
  std::uint64_t seen_ = 0;  // bit i: highest_ - i was seen
};

// A chunk whose frame would pass the peer's receive budget, held until frames are delivered:
// a rendezvous descriptor (the data stays with the sender) or UCX's persistent eager data, or else
// a copy.
struct DeferredChunk {
  AmHeader header;
  void* data = nullptr;
  std::size_t length = 0;
  std::uint64_t recv_attr = 0;
  std::vector<std::byte> copy;  // when UCX's data would not outlive the callback
};

struct PeerState {
  PeerId id = 0;
  ucp_ep_h ep = nullptr;
  LinkKey key{};
  std::unique_ptr<LinkMac> mac;  // null when authentication is off
  // Sending.
  std::deque<std::shared_ptr<SendingFrame>> waiting;  // in order; the front may be partly posted
  std::size_t bytes_in_flight = 0;                    // bytes posted to UCX and not completed
  std::uint64_t next_sequence = 1;
  // Receiving.
  ReplayWindow replay;
  std::deque<std::shared_ptr<IncomingFrame>> receives;
  std::size_t receiving_bytes = 0;      // bytes of the frames in `receives`
  std::deque<DeferredChunk> deferred;   // chunks held back (in order) while over the receive budget
  bool rejected_logged = false;  // a message that failed a check was logged for this peer
  bool failed = false;           // error reported or goodbye received
  /// When its goodbye arrived: for kGoodbyeWait after it, it is closing and waits for ours.
  std::optional<std::chrono::steady_clock::time_point> goodbye_at;
  bool reported = false;
  std::vector<std::pair<PeerId, Status>>* failures = nullptr;  ///< the transport's, for callbacks
};

// Whether this thread holds a UCX worker's lock (State::worker_mutex): a send() made from inside
// a pass (a handler that answers a frame) queues its frame instead of trying the lock again.
thread_local bool t_in_worker_pass = false;

class InWorkerPass {
 public:
  InWorkerPass() { t_in_worker_pass = true; }
  ~InWorkerPass() { t_in_worker_pass = false; }
  InWorkerPass(const InWorkerPass&) = delete;
  InWorkerPass& operator=(const InWorkerPass&) = delete;
};

struct Command {
  enum class Kind { kSend, kAddPeer } kind;
  PeerId peer;
  OutgoingFrame frame;
  std::vector<std::byte> address;
  LinkKey key{};
};

}  // namespace

struct UcxTransport::State {
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  std::vector<std::byte> address;
  PeerId self = 0;
  UcxOptions options;
  TransportHandler* handler = nullptr;
  PeerLiveness liveness;
  std::thread thread;
  std::atomic<bool> running{false};
  std::atomic<bool> draining{false};
  std::size_t sends_in_flight = 0;  // under worker_mutex

  // Waiting for work: the progress thread blocks in epoll on the worker's event fd and on
  // `command_fd`, which send() and connect() signal while `blocked` says it may be asleep.
  int epoll_fd = -1;
  int command_fd = -1;
  std::atomic<bool> blocked{false};

  mutable std::mutex mutex;  // guards commands and the public view of peers
  std::deque<Command> commands;
  std::map<PeerId, bool> public_failed;
  std::map<PeerId, LinkKey> public_keys;

  // The worker and what follows are used under worker_mutex (and by the create() thread before
  // start()): by the progress thread, which holds it but while it waits for events, and by a
  // thread in send() that finds it free, which then posts its frame itself rather than wake the
  // progress thread; a small frame leaves inline, so an idle progress thread is not woken.
  std::mutex worker_mutex;
  std::map<PeerId, std::unique_ptr<PeerState>> peers;
  std::vector<std::pair<PeerId, Status>> failures;  // found inside callbacks, reported after
  std::set<PeerId> unknown_logged;                  // claimed senders we have no link with
  std::vector<void*> closing;                       // close requests of departed peers' endpoints
  std::vector<std::unique_ptr<PeerState>> replaced; // peers a reconnection under their id replaced

  explicit State(const UcxOptions& o) : options(o), liveness(o.liveness) {}
  // Also what a failed create() leaves behind.
  ~State() {
    if (worker) ucp_worker_destroy(worker);
    if (context) ucp_cleanup(context);
    if (epoll_fd >= 0) ::close(epoll_fd);
    if (command_fd >= 0) ::close(command_fd);
  }

  // Logs a refused message once per peer (an attacker must not be able to flood the log).
  void reject(PeerState* peer, std::uint32_t claimed, const char* why, LogLevel level = LogLevel::kWarn) {
    if (peer) {
      if (peer->rejected_logged) return;
      peer->rejected_logged = true;
    } else {
      if (unknown_logged.size() >= 64 || !unknown_logged.insert(claimed).second) return;
    }
    log(level, "ucx: dropped a message claiming to come from peer ", claimed, ": ", why, " (logged once per peer)");
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

  struct ReceiveTarget {
    std::shared_ptr<IncomingFrame> frame;
    std::size_t chunk = 0;
  };

  static void on_receive_done(void* request, ucs_status_t status, std::size_t, void* user_data) {
    auto* target = static_cast<ReceiveTarget*>(user_data);
    ReceivedChunk& c = target->frame->chunks[target->chunk];
    c.done = true;
    c.failed = status != UCS_OK;
    delete target;
    ucp_request_free(request);
  }

  static ucs_status_t on_am(void* arg, const void* header, std::size_t header_length, void* data,
                            std::size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<State*>(arg);
    if (header_length != sizeof(AmHeader)) {
      self->reject(nullptr, ~0u, "malformed header");
      return UCS_OK;
    }
    AmHeader h;
    std::memcpy(&h, header, sizeof(h));
    const auto it = self->peers.find(h.sender);
    if (it == self->peers.end()) {
      // Every join does this once or twice: a newcomer links to every member at once, and its
      // first messages can come before its admission reaches this process. Not worth a warning.
      self->reject(nullptr, h.sender, "no link with that peer yet", LogLevel::kInfo);
      return UCS_OK;
    }
    PeerState& peer = *it->second;
    if (peer.failed) return UCS_OK;
    if (peer.mac) {
      const ConstSegment tagged{reinterpret_cast<const std::byte*>(&h), kTaggedHeaderBytes};
      if (!peer.mac->verify(h.header_tag, h.sender, TagDomain::kHeader, h.sequence, {&tagged, 1})) {
        self->reject(&peer, h.sender, "header tag does not verify under the link key");
        return UCS_OK;
      }
    }
    if (!peer.replay.accept(h.sequence)) {
      self->reject(&peer, h.sender, "sequence number replayed");
      return UCS_OK;
    }
    // Authenticated: the peer is alive, whatever else this message holds.
    self->liveness.heard(peer.id, PeerLiveness::Clock::now());
    switch (static_cast<Kind>(h.kind)) {
      case Kind::kKeepalive: return UCS_OK;
      case Kind::kBye: self->on_bye(peer); return UCS_OK;
      case Kind::kChunk: return self->take_chunk(peer, h, data, length, param->recv_attr);
    }
    self->reject(&peer, h.sender, "unknown message kind");
    return UCS_OK;
  }

  // A chunk, now or (past the peer's receive budget) later: UCX keeps rendezvous data with the
  // sender meanwhile, so a peer that sends faster than its frames are delivered is slowed at the
  // source instead of filling this process's memory. A new frame waits while the peer's frames
  // being received would pass max_receiving_bytes with it (one frame alone always passes), and
  // every chunk after a waiting one waits too, so order holds.
  ucs_status_t take_chunk(PeerState& peer, const AmHeader& h, void* data, std::size_t length, std::uint64_t recv_attr) {
    if (h.frame_bytes == 0 || h.frame_bytes > options.max_frame_bytes) {
      reject(&peer, h.sender, "frame size out of bounds");
      return UCS_OK;
    }
    if (h.offset >= h.frame_bytes || length != std::min<std::uint64_t>(UcxTransport::kChunkBytes, h.frame_bytes - h.offset)) {
      reject(&peer, h.sender, "chunk does not fit its frame");
      return UCS_OK;
    }
    const bool over = h.offset == 0 && peer.receiving_bytes > 0 &&
                      h.frame_bytes > options.max_receiving_bytes - std::min(options.max_receiving_bytes, peer.receiving_bytes);
    if (peer.deferred.empty() && !over) {
      on_chunk(peer, h, data, length, recv_attr);
      return UCS_OK;
    }
    DeferredChunk d{h, data, length, recv_attr, {}};
    if (recv_attr & (UCP_AM_RECV_ATTR_FLAG_RNDV | UCP_AM_RECV_ATTR_FLAG_DATA)) {
      peer.deferred.push_back(std::move(d));
      return UCS_INPROGRESS;  // UCX keeps the descriptor until received or released
    }
    const auto* bytes = static_cast<const std::byte*>(data);
    d.copy.assign(bytes, bytes + length);
    d.data = d.copy.data();
    d.recv_attr = 0;
    peer.deferred.push_back(std::move(d));
    return UCS_OK;
  }

  // Takes the peer's held-back chunks while its budget allows (outside UCX callbacks).
  bool resume_deferred(PeerState& peer) {
    bool resumed = false;
    while (!peer.deferred.empty() && !peer.failed) {
      DeferredChunk& d = peer.deferred.front();
      const AmHeader& h = d.header;
      if (h.offset == 0 && peer.receiving_bytes > 0 &&
          h.frame_bytes > options.max_receiving_bytes - std::min(options.max_receiving_bytes, peer.receiving_bytes)) {
        break;
      }
      on_chunk(peer, h, d.data, d.length, d.recv_attr);
      if ((d.recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA) && !(d.recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
        ucp_am_data_release(worker, d.data);  // copied into the frame by on_chunk
      }
      peer.deferred.pop_front();
      resumed = true;
    }
    return resumed;
  }

  // Gives UCX back the descriptors a gone peer's held-back chunks keep.
  void drop_deferred(PeerState& peer) {
    for (DeferredChunk& d : peer.deferred) {
      if (d.recv_attr & (UCP_AM_RECV_ATTR_FLAG_RNDV | UCP_AM_RECV_ATTR_FLAG_DATA)) ucp_am_data_release(worker, d.data);
    }
    peer.deferred.clear();
  }

  void on_chunk(PeerState& peer, const AmHeader& h, void* data, std::size_t length, std::uint64_t recv_attr) {
    std::shared_ptr<IncomingFrame> frame;
    if (!peer.receives.empty() && !peer.receives.back()->complete()) frame = peer.receives.back();
    if (h.offset == 0) {
      if (frame) {
        reject(&peer, h.sender, "a frame started before the previous one was complete");
        peer.receiving_bytes -= frame->buffer->size();
        peer.receives.pop_back();
      }
      frame = std::make_shared<IncomingFrame>();
      frame->buffer = Buffer::allocate(h.frame_bytes);
      if (!frame->buffer) return reject(&peer, h.sender, "no memory for the frame");
      peer.receiving_bytes += h.frame_bytes;
      peer.receives.push_back(frame);
    } else if (!frame || frame->buffer->size() != h.frame_bytes || frame->next_offset != h.offset) {
      return reject(&peer, h.sender, "chunk out of order");
    }
    frame->next_offset += length;
    frame->chunks.push_back(ReceivedChunk{h.offset, length, h.sequence, h.payload_tag});
    const std::size_t index = frame->chunks.size() - 1;
    std::byte* target = frame->buffer->data() + h.offset;
    if (recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.recv_am = on_receive_done;
      auto* user = new ReceiveTarget{frame, index};
      p.user_data = user;
      void* request = ucp_am_recv_data_nbx(worker, data, target, length, &p);
      if (!UCS_PTR_IS_PTR(request)) {  // finished at once (or failed): no callback will come
        delete user;
        frame->chunks[index].done = true;
        frame->chunks[index].failed = UCS_PTR_IS_ERR(request);
      }
    } else {
      std::memcpy(target, data, length);
      frame->chunks[index].done = true;
    }
  }

  void on_bye(PeerState& peer) {
    peer.failed = true;  // leaving: its endpoint closing is not a failure
    peer.goodbye_at = std::chrono::steady_clock::now();
    peer.reported = true;
    liveness.forget(peer.id);
    std::lock_guard lock(mutex);
    public_failed[peer.id] = true;
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

  Status connect(PeerId id, const std::byte* remote, const LinkKey& key) {
    auto peer = std::make_unique<PeerState>();
    peer->id = id;
    peer->key = key;
    if (options.authenticate) peer->mac = std::make_unique<LinkMac>(key);
    peer->failures = &failures;
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.address = reinterpret_cast<const ucp_address_t*>(remote);
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = on_ep_error;
    p.err_handler.arg = peer.get();
    SEPAL_UCS_RETURN_IF_ERROR(ucp_ep_create(worker, &p, &peer->ep));
    if (auto old = peers.find(id); old != peers.end()) {
      // Its endpoint's pending operations end with callbacks into it: it is kept until shutdown.
      close_endpoint(*old->second);
      replaced.push_back(std::move(old->second));
    }
    peers[id] = std::move(peer);
    return Status::ok();
  }

  // Closes a peer's endpoint at once (it left, or its link broke): UCX keeps probing an open
  // endpoint to a process that is gone (its keepalive over shared memory), and the progress
  // thread would spin on those probes. The close request is freed once it completes.
  void close_endpoint(PeerState& peer) {
    if (peer.ep == nullptr) return;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* r = ucp_ep_close_nbx(peer.ep, &p);
    if (UCS_PTR_IS_PTR(r)) closing.push_back(r);
    peer.ep = nullptr;
  }

  // The endpoints of peers that failed: at once for one found silent (a stopped or hung process:
  // UCX's shared-memory keepalive to it retries on every progress, a core per process for as long
  // as it stays stopped) or whose link UCX reported broken; 200 ms (kGoodbyeWait) after a goodbye,
  // until when the peer may wait for ours. Closing cancels the sends still in flight to it. A peer
  // found silent that comes back is not taken back on this endpoint: it rejoins (connect()).
  // Then frees the close requests that completed.
  void close_departed() {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, peer] : peers) {
      if (peer->ep == nullptr || !peer->failed || !peer->reported) continue;
      if (!peer->goodbye_at || now - *peer->goodbye_at >= kGoodbyeWait) close_endpoint(*peer);
    }
    std::erase_if(closing, [](void* r) {
      if (ucp_request_check_status(r) == UCS_INPROGRESS) return false;
      ucp_request_free(r);
      return true;
    });
  }

  // Posts one message: a chunk of `frame` (its next `limit` bytes), or a header alone.
  void send_message(PeerState& peer, Kind kind, const std::shared_ptr<SendingFrame>& frame) {
    if (peer.ep == nullptr) return;  // closed: the peer left or its link broke
    auto* request = new SendRequest();
    AmHeader& h = request->header;
    h.sender = self;
    h.kind = static_cast<std::uint32_t>(kind);
    h.sequence = peer.next_sequence++;
    request->in_flight = &sends_in_flight;
    request->peer_bytes = &peer.bytes_in_flight;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = on_send_done;
    p.user_data = request;
    const void* buffer = nullptr;
    std::size_t count = 0;
    if (frame) {
      h.frame_bytes = frame->total;
      h.offset = frame->offset;
      const auto parts = frame->next_chunk(UcxTransport::kChunkBytes);
      request->frame = frame;
      for (const auto& s : parts) {
        request->iov.push_back(ucp_dt_iov_t{const_cast<std::byte*>(s.data), s.size});
        request->bytes += s.size;
      }
      if (peer.mac) h.payload_tag = peer.mac->tag(self, TagDomain::kPayload, h.sequence, parts);
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
      p.datatype = ucp_dt_make_iov();
      buffer = request->iov.data();
      count = request->iov.size();
    }
    if (peer.mac) {
      const ConstSegment tagged{reinterpret_cast<const std::byte*>(&h), kTaggedHeaderBytes};
      h.header_tag = peer.mac->tag(self, TagDomain::kHeader, h.sequence, {&tagged, 1});
    }
    void* status = ucp_am_send_nbx(peer.ep, kAmMessage, &h, sizeof(AmHeader), buffer, count, &p);
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
        Status s = connect(c.peer, c.address.data(), c.key);
        if (s.is_ok()) liveness.watch(c.peer, PeerLiveness::Clock::now());
        else failures.emplace_back(c.peer, s);
        continue;
      }
      const auto it = peers.find(c.peer);
      if (it == peers.end() || it->second->failed) continue;
      it->second->waiting.push_back(std::make_shared<SendingFrame>(std::move(c.frame)));
    }
    return !batch.empty();
  }

  // Posts chunks of waiting frames while each peer's window has room.
  bool post_waiting() {
    bool posted = false;
    for (auto& [id, peer] : peers) {
      while (!peer->failed && !peer->waiting.empty()) {
        auto& front = peer->waiting.front();
        const std::size_t next = std::min(UcxTransport::kChunkBytes, front->total - front->offset);
        if (peer->bytes_in_flight > 0 && peer->bytes_in_flight + next > UcxTransport::kSendWindowBytes) break;
        const auto frame = front;
        send_message(*peer, Kind::kChunk, frame);
        if (frame->offset == frame->total) peer->waiting.pop_front();
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

  // Checks a complete frame's chunks: every one arrived and its payload tag verifies.
  bool verified(PeerState& peer, const IncomingFrame& frame) {
    for (const ReceivedChunk& c : frame.chunks) {
      if (c.failed) return false;
      if (!peer.mac) continue;
      const ConstSegment payload{frame.buffer->data() + c.offset, c.size};
      if (!peer.mac->verify(c.tag, peer.id, TagDomain::kPayload, c.sequence, {&payload, 1})) {
        reject(&peer, peer.id, "payload tag does not verify under the link key");
        return false;
      }
    }
    return true;
  }

  bool deliver() {
    bool progressed = false;
    // One pass: the frames that completed together wake their actors once (TransportHandler).
    const DeliveryPass pass(*handler);
    for (auto& [id, peer] : peers) {
      while (!peer->receives.empty()) {
        const auto& front = peer->receives.front();
        if (!front->complete() ||
            !std::all_of(front->chunks.begin(), front->chunks.end(), [](const ReceivedChunk& c) { return c.done; })) {
          break;
        }
        auto frame = std::move(peer->receives.front());
        peer->receives.pop_front();
        peer->receiving_bytes -= frame->buffer->size();
        if (verified(*peer, *frame)) handler->on_frame(id, std::move(frame->buffer));
        progressed = true;
      }
      if (peer->failed) drop_deferred(*peer);
      else progressed |= resume_deferred(*peer);
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
        it->second->receiving_bytes = 0;
        drop_deferred(*it->second);
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
      if (auto it = peers.find(id); it != peers.end() && !it->second->failed) send_message(*it->second, Kind::kKeepalive, nullptr);
    }
    for (PeerId id : liveness.overdue(now)) {
      failures.emplace_back(id, error(StatusCode::kPeerFailed, "peer ", id, " silent for longer than the failure timeout (",
                                      liveness.silent_for(id, now).count(), " ms)"));
    }
  }

  bool receiving() const {
    for (const auto& [id, peer] : peers) {
      if (!peer->receives.empty() || !peer->deferred.empty()) return true;
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

  // After queueing a send: posts the queued frames on this thread when the worker is free (the
  // progress thread waits for events), and wakes the progress thread only when something is left
  // for it (a frame still in flight or waiting for the window, a failure to report). Otherwise,
  // or from inside a pass, the progress thread takes the command on its next pass.
  void post_or_wake() {
    if (!t_in_worker_pass && running.load(std::memory_order_acquire) && !draining.load(std::memory_order_acquire)) {
      std::unique_lock lock(worker_mutex, std::try_to_lock);
      if (lock.owns_lock()) {
        const InWorkerPass pass;
        run_commands();
        post_waiting();
        if (!sending() && failures.empty()) return;
      }
    }
    wake();
  }

  // Blocks until UCX has an event, a command is queued, or a keepalive may be due; releases
  // `worker` (the progress thread's hold on worker_mutex) while it waits. `refused_since_work`:
  // whether UCX refused an arm since the last pass that did work (run() clears it).
  void block(const ProgressBackoff& backoff, std::unique_lock<std::mutex>& worker, bool& refused_since_work) {
    const ucs_status_t armed = ucp_worker_arm(this->worker);
    // Busy: events arrived meanwhile (the next pass progresses them), or UCX holds work it cannot
    // finish. The second stays: sends queued to a peer that stopped reading (a stopped process,
    // its shared-memory queue full) keep every arm busy until the peer reads or dies, and the
    // thread spun at 60% of a core in each process of a swarm while one host was stopped. The
    // first busy arm after work returns at once; the next ones poll gently, like a transport
    // without wakeups.
    if (armed == UCS_ERR_BUSY && !refused_since_work) {
      refused_since_work = true;
      return;
    }
    if (armed != UCS_OK) {  // busy again, or no wakeup on this transport: poll gently
      worker.unlock();
      std::this_thread::sleep_for(backoff.sleep_step());
      worker.lock();
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
      t_in_worker_pass = false;
      worker.unlock();
      epoll_event events[2];
      (void)::epoll_wait(epoll_fd, events, 2, static_cast<int>(timeout_ms));
      std::uint64_t count = 0;
      while (::read(command_fd, &count, sizeof(count)) == sizeof(count)) {
      }
      worker.lock();
      t_in_worker_pass = true;
    }
    blocked.store(false);
  }

  void run() {
    ProgressBackoff backoff;
    bool refused_since_work = false;
    std::optional<std::chrono::steady_clock::time_point> drain_deadline;
    std::unique_lock worker_lock(worker_mutex);
    const InWorkerPass pass;
    while (running.load(std::memory_order_acquire)) {
      if (draining.load(std::memory_order_acquire)) {
        const auto now = std::chrono::steady_clock::now();
        if (!drain_deadline) drain_deadline = now + std::chrono::seconds(1);
        if (now > *drain_deadline || flushed()) break;
      }
      bool busy = run_commands();
      busy |= post_waiting();
      // UCX's events until it has none, for kProgressStretch at most (progress_backoff.h).
      const auto stretch_end = std::chrono::steady_clock::now() + kProgressStretch;
      while (ucp_worker_progress(worker) != 0) {
        busy = true;
        if (std::chrono::steady_clock::now() >= stretch_end) break;
      }
      const bool handed = deliver();
      check_liveness();
      report_failures();
      close_departed();
      // Transfers in flight need the worker progressed: no backing off until they finish. After
      // frames were handed to the actors the thread blocks at once (progress_backoff.h).
      if (handed && !sending() && !receiving()) {
        backoff.handed_off();
        refused_since_work = false;
        if (!draining.load(std::memory_order_acquire)) block(backoff, worker_lock, refused_since_work);
      } else if (busy || sending() || receiving()) {
        backoff.busy();
        refused_since_work = false;
      } else if (!backoff.keep_polling() && !draining.load(std::memory_order_acquire)) {
        block(backoff, worker_lock, refused_since_work);
      }
    }
  }

  void shutdown() {
    const std::lock_guard worker_lock(worker_mutex);  // a late send() finds it taken and only queues
    // Goodbye first: closing an endpoint fires the other side's error handler. A peer whose
    // goodbye came within the wait below gets ours too: it is waiting for it. One that left
    // earlier is gone (a send to it would never complete).
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, peer] : peers) {
      const bool closing_too = peer->goodbye_at && now - *peer->goodbye_at < kGoodbyeWait;
      if (!peer->failed || closing_too) send_message(*peer, Kind::kBye, nullptr);
    }
    // Then up to kGoodbyeWait for the goodbyes to go out, ending sooner once every peer has left
    // too (its goodbye arrived, or it failed) and ours are sent: a job whose ranks end together
    // closes at once, and no peer that stays is left to mistake our closing for a failure.
    const auto deadline = now + kGoodbyeWait;
    const auto all_left = [&] {
      for (const auto& [id, peer] : peers) {
        if (!peer->failed) return false;
      }
      return true;
    };
    while (std::chrono::steady_clock::now() < deadline && !(all_left() && !sending())) {
      if (ucp_worker_progress(worker) == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    for (auto& [id, peer] : peers) close_endpoint(*peer);
    const auto close_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (void* r : closing) {
      while (ucp_request_check_status(r) == UCS_INPROGRESS && std::chrono::steady_clock::now() < close_deadline) {
        ucp_worker_progress(worker);
      }
      ucp_request_free(r);
    }
    closing.clear();
    peers.clear();
    replaced.clear();
  }
};

UcxTransport::UcxTransport(std::unique_ptr<State> state) : state_(std::move(state)) {}

Result<std::unique_ptr<UcxTransport>> UcxTransport::create(PeerId self, const UcxOptions& options) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  // Shared-memory transports report peer failures only with this set; without it UCX would drop
  // them from endpoints that ask for error handling and fall back to TCP.
  setenv("UCX_MM_ERROR_HANDLING", "y", /*overwrite=*/0);
  // UCX's own endpoint check: on shared memory it asks whether the peer process still exists, so
  // a killed peer is reported within this interval, however long our liveness timeout is (the
  // default is 20 s). Over TCP a broken connection is reported at once anyway.
  setenv("UCX_KEEPALIVE_INTERVAL", "200ms", /*overwrite=*/0);
  // UCX logs to stdout unless told otherwise, into the text and JSON a client prints there. Its
  // options were read when the library loaded, so the log is reopened on stderr, once a process.
  static std::once_flag log_on_stderr;
  static bool log_file_unset = false;
  std::call_once(log_on_stderr, [] {
    log_file_unset = std::getenv("UCX_LOG_FILE") == nullptr;
    if (log_file_unset && ucs_global_opts_set_value("LOG_FILE", "stderr") == UCS_OK) {
      ucs_log_cleanup();
      ucs_log_init();
    }
  });
  auto state = std::make_unique<State>(options);
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
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;  // one thread at a time, under worker_mutex
  SEPAL_UCS_RETURN_IF_ERROR(ucp_worker_create(state->context, &wp, &state->worker));
  // The processes this one spawns read the variable when they load the library. It is set only
  // now: the first worker warns about UCX_ variables that appeared after the library read its own.
  if (log_file_unset) setenv("UCX_LOG_FILE", "stderr", /*overwrite=*/0);
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
  SEPAL_RETURN_IF_ERROR(state->register_handler(kAmMessage, State::on_am));
  return std::unique_ptr<UcxTransport>(new UcxTransport(std::move(state)));
}

Result<std::unique_ptr<UcxTransport>> UcxTransport::create_over_mpi(MPI_Comm comm, const UcxOptions& options,
                                                                    const LinkKeyAuthority* authority) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  int rank = 0, size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  auto created = create(static_cast<PeerId>(rank), options);
  if (!created.is_ok()) return created.status();
  auto transport = std::move(created).value();
  State& state = *transport->state_;
  auto addresses = mpi_allgather_bytes(comm, state.address);
  if (!addresses.is_ok()) return addresses.status();
  // Link keys: rank 0 derives every rank's and sends each its own row.
  std::vector<LinkKey> keys(static_cast<std::size_t>(size));
  const int key_bytes = size * static_cast<int>(sizeof(LinkKey));
  if (rank == 0) {
    std::optional<LinkKeyAuthority> fresh;
    if (!authority) authority = &fresh.emplace();
    for (int r = size - 1; r >= 0; --r) {
      for (int s = 0; s < size; ++s) keys[static_cast<std::size_t>(s)] = authority->key_for(static_cast<PeerId>(r), static_cast<PeerId>(s));
      if (r > 0) SEPAL_MPI_RETURN_IF_ERROR(MPI_Send(keys.data(), key_bytes, MPI_BYTE, r, kKeyTag, comm));
    }
  } else {
    SEPAL_MPI_RETURN_IF_ERROR(MPI_Recv(keys.data(), key_bytes, MPI_BYTE, 0, kKeyTag, comm, MPI_STATUS_IGNORE));
  }
  for (int r = 0; r < size; ++r) {
    if (r == rank) continue;
    const auto& a = addresses.value()[static_cast<std::size_t>(r)];
    const LinkKey& key = keys[static_cast<std::size_t>(r)];
    SEPAL_RETURN_IF_ERROR(state.connect(static_cast<PeerId>(r), a.data(), key));
    std::lock_guard lock(state.mutex);
    state.public_keys[static_cast<PeerId>(r)] = key;
  }
  return transport;
}

UcxTransport::~UcxTransport() { stop(); }  // then ~State releases the worker and the context

std::vector<std::byte> UcxTransport::address() const { return state_->address; }

Status UcxTransport::connect(PeerId id, std::span<const std::byte> address, const LinkKey& key) {
  std::lock_guard lock(state_->mutex);
  if (id == state_->self || state_->public_failed.count(id)) return error(StatusCode::kInvalidArgument, "peer id ", id, " is taken");
  if (address.empty()) return error(StatusCode::kInvalidArgument, "empty UCX address for peer ", id);
  state_->public_failed[id] = false;
  state_->public_keys[id] = key;
  // Before start() the worker is ours to use; after, only the progress thread may touch it.
  if (!state_->running.load()) return state_->connect(id, address.data(), key);
  state_->commands.push_back(Command{Command::Kind::kAddPeer, id, OutgoingFrame{}, {address.begin(), address.end()}, key});
  state_->wake();
  return Status::ok();
}

std::optional<LinkKey> UcxTransport::link_key(PeerId peer) const {
  std::lock_guard lock(state_->mutex);
  const auto it = state_->public_keys.find(peer);
  if (it == state_->public_keys.end()) return std::nullopt;
  return it->second;
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
  state_->thread = std::thread([s = state_.get()] {
    pthread_setname_np(pthread_self(), "sepal-ucx");
    s->run();
  });
  return Status::ok();
}

Status UcxTransport::send(PeerId to, OutgoingFrame frame) {
  SEPAL_RETURN_IF_ERROR(frame.status());
  if (frame.size() == 0) return error(StatusCode::kInvalidArgument, "empty frame");
  {
    std::lock_guard lock(state_->mutex);
    const auto it = state_->public_failed.find(to);
    if (it == state_->public_failed.end()) return error(StatusCode::kNotFound, "no peer ", to);
    if (it->second) return error(StatusCode::kPeerFailed, "peer ", to, " has failed or left");
    state_->commands.push_back(Command{Command::Kind::kSend, to, std::move(frame), {}, {}});
  }
  state_->post_or_wake();
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

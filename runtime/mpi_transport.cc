#include "runtime/mpi_transport.h"

#include <pthread.h>

#include <atomic>
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

constexpr int kTagFrame = 7301;
constexpr int kTagKeepalive = 7302;
constexpr std::size_t kMaxFrameBytes = 0x7fffffff;  // MPI counts are int

struct Link {
  MPI_Comm comm;
  int rank;
};

struct PendingSend {
  MPI_Request request;
  OutgoingFrame frame;  // holds the tensors until MPI is done with them
  PeerId to;
};

struct PendingReceive {
  MPI_Request request;
  std::shared_ptr<Buffer> buffer;
};

}  // namespace

struct MpiTransport::State {
  MPI_Comm world = MPI_COMM_NULL;
  PeerId self = 0;
  TransportHandler* handler = nullptr;
  PeerLiveness liveness;
  std::thread thread;
  std::atomic<bool> running{false};
  std::atomic<bool> draining{false};

  mutable std::mutex mutex;  // guards links, failed, outbox
  std::map<PeerId, Link> links;
  std::map<PeerId, bool> failed;
  std::deque<std::pair<PeerId, OutgoingFrame>> outbox;

  // Progress-thread only.
  std::deque<PendingSend> sends;
  std::map<PeerId, std::deque<PendingReceive>> receives;
  std::vector<PendingSend> abandoned;  // sends to dead peers: kept alive, never completed

  explicit State(LivenessOptions options) : liveness(options) {}

  std::vector<MPI_Comm> communicators() {
    std::lock_guard lock(mutex);
    std::vector<MPI_Comm> comms;
    for (const auto& [peer, link] : links) {
      bool seen = false;
      for (auto c : comms) seen |= (c == link.comm);
      if (!seen) comms.push_back(link.comm);
    }
    return comms;
  }

  bool peer_of(MPI_Comm comm, int rank, PeerId* peer) {
    std::lock_guard lock(mutex);
    for (const auto& [id, link] : links) {
      if (link.comm == comm && link.rank == rank) {
        *peer = id;
        return !failed[id];
      }
    }
    return false;
  }

  void fail_peer(PeerId peer, const Status& why) {
    {
      std::lock_guard lock(mutex);
      if (failed[peer]) return;
      failed[peer] = true;
    }
    liveness.forget(peer);
    receives.erase(peer);
    handler->on_peer_failed(peer, why);
  }

  bool post_sends() {
    std::deque<std::pair<PeerId, OutgoingFrame>> batch;
    {
      std::lock_guard lock(mutex);
      batch.swap(outbox);
    }
    for (auto& [to, frame] : batch) {
      Link link;
      {
        std::lock_guard lock(mutex);
        if (failed[to] || !links.count(to)) continue;
        link = links[to];
      }
      const auto segments = frame.segments();
      std::vector<int> lengths;
      std::vector<MPI_Aint> displacements;
      for (const auto& s : segments) {
        if (s.size == 0) continue;
        MPI_Aint address;
        MPI_Get_address(s.data, &address);
        lengths.push_back(static_cast<int>(s.size));
        displacements.push_back(address);
      }
      MPI_Datatype type;
      MPI_Type_create_hindexed(static_cast<int>(lengths.size()), lengths.data(), displacements.data(),
                               MPI_BYTE, &type);
      MPI_Type_commit(&type);
      PendingSend pending{MPI_REQUEST_NULL, std::move(frame), to};
      const int rc = MPI_Isend(MPI_BOTTOM, 1, type, link.rank, kTagFrame, link.comm, &pending.request);
      MPI_Type_free(&type);  // the pending send keeps its own reference
      if (rc != MPI_SUCCESS) {
        fail_peer(to, mpi_status(rc, "MPI_Isend"));
        continue;
      }
      sends.push_back(std::move(pending));
    }
    return !batch.empty();
  }

  bool complete_sends() {
    bool progressed = false;
    for (auto it = sends.begin(); it != sends.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      if (done) {
        it = sends.erase(it);
        progressed = true;
      } else {
        ++it;
      }
    }
    return progressed;
  }

  // True when nothing queued or in flight is still owed to a live peer.
  bool flushed() {
    std::lock_guard lock(mutex);
    if (!outbox.empty()) return false;
    for (const auto& s : sends) {
      if (!failed[s.to]) return false;
    }
    return true;
  }

  bool probe(MPI_Comm comm, PeerLiveness::Clock::time_point now) {
    int flag = 0;
    MPI_Message message;
    MPI_Status status;
    MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, &message, &status);
    if (!flag) return false;
    PeerId peer = 0;
    const bool known = peer_of(comm, status.MPI_SOURCE, &peer);
    int count = 0;
    MPI_Get_count(&status, MPI_BYTE, &count);
    if (!known || status.MPI_TAG != kTagFrame) {  // keepalive, or a stranger: drain and drop
      std::vector<std::byte> sink(static_cast<std::size_t>(count));
      MPI_Mrecv(sink.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE);
      if (known) liveness.heard(peer, now);
      return true;
    }
    liveness.heard(peer, now);
    auto buffer = Buffer::allocate(static_cast<std::size_t>(count));
    PendingReceive pending{MPI_REQUEST_NULL, buffer};
    MPI_Imrecv(buffer ? buffer->data() : nullptr, buffer ? count : 0, MPI_BYTE, &message, &pending.request);
    receives[peer].push_back(std::move(pending));
    return true;
  }

  bool deliver(PeerLiveness::Clock::time_point now) {
    bool progressed = false;
    // One pass: the frames that completed together wake their actors once (TransportHandler).
    const DeliveryPass pass(*handler);
    for (auto& [peer, queue] : receives) {
      while (!queue.empty()) {
        int done = 0;
        MPI_Test(&queue.front().request, &done, MPI_STATUS_IGNORE);
        if (!done) break;
        auto buffer = std::move(queue.front().buffer);
        queue.pop_front();
        liveness.heard(peer, now);
        if (buffer) handler->on_frame(peer, std::move(buffer));
        progressed = true;
      }
    }
    return progressed;
  }

  void check_liveness(PeerLiveness::Clock::time_point now) {
    for (PeerId peer : liveness.keepalives_due(now)) {
      Link link;
      {
        std::lock_guard lock(mutex);
        link = links[peer];
      }
      MPI_Request request;
      if (MPI_Isend(nullptr, 0, MPI_BYTE, link.rank, kTagKeepalive, link.comm, &request) == MPI_SUCCESS) {
        MPI_Request_free(&request);
      }
    }
    for (PeerId peer : liveness.overdue(now)) {
      fail_peer(peer, error(StatusCode::kPeerFailed, "peer ", peer, " silent for longer than the failure timeout (",
                            liveness.silent_for(peer, now).count(), " ms)"));
    }
  }

  void run() {
    ProgressBackoff backoff;
    std::optional<PeerLiveness::Clock::time_point> drain_deadline;
    while (running.load(std::memory_order_acquire)) {
      const auto now = PeerLiveness::Clock::now();
      if (draining.load(std::memory_order_acquire)) {
        if (!drain_deadline) drain_deadline = now + std::chrono::seconds(1);
        if (now > *drain_deadline || flushed()) break;
      }
      bool busy = post_sends();
      busy |= complete_sends();
      // Arrivals until there are none, for kProgressStretch at most (progress_backoff.h).
      const auto stretch_end = now + kProgressStretch;
      for (MPI_Comm comm : communicators()) {
        while (probe(comm, now)) {
          busy = true;
          if (PeerLiveness::Clock::now() >= stretch_end) break;
        }
      }
      busy |= deliver(now);
      check_liveness(now);
      // Transfers in flight need MPI progressed: no backing off until they finish.
      bool receiving = false;
      for (const auto& [peer, queue] : receives) receiving |= !queue.empty();
      if (busy || !sends.empty() || receiving) backoff.busy();
      else if (!backoff.keep_polling()) std::this_thread::sleep_for(backoff.sleep_step());
    }
  }
};

MpiTransport::MpiTransport(std::unique_ptr<State> state) : state_(std::move(state)) {}

Result<std::unique_ptr<MpiTransport>> MpiTransport::create(MPI_Comm comm, LivenessOptions liveness) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  auto state = std::make_unique<State>(liveness);
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Comm_dup(comm, &state->world));
  MPI_Comm_set_errhandler(state->world, MPI_ERRORS_RETURN);
  int rank = 0, size = 0;
  MPI_Comm_rank(state->world, &rank);
  MPI_Comm_size(state->world, &size);
  state->self = static_cast<PeerId>(rank);
  for (int r = 0; r < size; ++r) {
    if (r != rank) state->links[static_cast<PeerId>(r)] = Link{state->world, r};
  }
  return std::unique_ptr<MpiTransport>(new MpiTransport(std::move(state)));
}

Result<std::unique_ptr<MpiTransport>> MpiTransport::create_detached(PeerId self, LivenessOptions liveness) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  auto state = std::make_unique<State>(liveness);
  state->self = self;
  return std::unique_ptr<MpiTransport>(new MpiTransport(std::move(state)));
}

MpiTransport::~MpiTransport() {
  stop();
  // A communicator with requests that can never complete (dead peers) cannot be freed safely.
  if (state_->abandoned.empty() && state_->world != MPI_COMM_NULL) MPI_Comm_free(&state_->world);
}

Status MpiTransport::add_peer(PeerId id, MPI_Comm comm, int remote_rank) {
  std::lock_guard lock(state_->mutex);
  if (state_->links.count(id) || id == state_->self) return error(StatusCode::kInvalidArgument, "peer id ", id, " is taken");
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  state_->links[id] = Link{comm, remote_rank};
  state_->failed[id] = false;
  // Liveness is started by the progress thread on its next pass.
  return Status::ok();
}

void MpiTransport::remove_peer(PeerId id) {
  std::lock_guard lock(state_->mutex);
  state_->links.erase(id);
  state_->failed[id] = true;  // no more traffic; no failure report
}

PeerId MpiTransport::self() const { return state_->self; }

std::vector<PeerId> MpiTransport::peers() const {
  std::lock_guard lock(state_->mutex);
  std::vector<PeerId> out;
  for (const auto& [id, link] : state_->links) {
    const auto it = state_->failed.find(id);
    if (it == state_->failed.end() || !it->second) out.push_back(id);
  }
  return out;
}

Status MpiTransport::start(TransportHandler* handler) {
  if (state_->running.exchange(true)) return error(StatusCode::kInvalidArgument, "transport already started");
  state_->handler = handler;
  const auto now = PeerLiveness::Clock::now();
  for (PeerId p : peers()) state_->liveness.watch(p, now);
  state_->thread = std::thread([s = state_.get()] {
    pthread_setname_np(pthread_self(), "sepal-mpi");
    s->run();
  });
  return Status::ok();
}

Status MpiTransport::send(PeerId to, OutgoingFrame frame) {
  SEPAL_RETURN_IF_ERROR(frame.status());
  if (frame.size() > kMaxFrameBytes) {
    return error(StatusCode::kInvalidArgument, "frame of ", frame.size(), " bytes exceeds the MPI transport's 2 GiB limit");
  }
  std::lock_guard lock(state_->mutex);
  if (!state_->links.count(to)) return error(StatusCode::kNotFound, "no peer ", to);
  if (state_->failed[to]) return error(StatusCode::kPeerFailed, "peer ", to, " has failed");
  state_->outbox.emplace_back(to, std::move(frame));
  return Status::ok();
}

void MpiTransport::stop() {
  if (!state_->running.load()) return;
  state_->draining = true;
  if (state_->thread.joinable()) state_->thread.join();
  state_->running = false;
  // Sends still in flight may target dead peers; keep their frames alive rather than free
  // memory MPI could still read.
  for (auto& s : state_->sends) {
    if (s.request != MPI_REQUEST_NULL) state_->abandoned.push_back(std::move(s));
  }
  state_->sends.clear();
}

}  // namespace sepal

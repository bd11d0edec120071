#pragma once
// The first contact between a running swarm and a process that joins it from another job: a TCP
// connection that carries the join handshake (runtime/swarm_join.h) and nothing else. The swarm's
// listener writes "tcp://HOST:PORT" (this machine's host name, an ephemeral port) into a port
// file on a shared file system; a joiner reads it and connects. The handshake authenticates both
// sides with the swarm secret, so the connection itself needs no protection; the data plane that
// follows is the UCX transport. No MPI is involved: no ompi-server, no MPI_Comm_connect, whose
// TCP connections between jobs failed here under load (../shared/HPC-NOTES.md).
//
// Messages are framed as a 4-byte little-endian length and that many bytes (at most
// kMaxJoinMessageBytes). Every operation has a deadline: a peer that stops answering costs the
// other side at most the timeout.
//
// Thread-safety: a JoinConnection is used by one thread at a time; JoinListener accepts on a
// thread of its own and calls its callback there, one connection at a time.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "runtime/buffer.h"
#include "runtime/status.h"

namespace sepal {

/// The largest handshake message either side accepts.
inline constexpr std::size_t kMaxJoinMessageBytes = 1 << 20;

/// One end of a join connection. Closes the socket when destroyed.
class JoinConnection {
 public:
  explicit JoinConnection(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}
  JoinConnection(JoinConnection&& other) noexcept;
  JoinConnection& operator=(JoinConnection&& other) noexcept;
  JoinConnection(const JoinConnection&) = delete;
  JoinConnection& operator=(const JoinConnection&) = delete;
  ~JoinConnection();

  /// Sends one message. kTimeout if the other side does not take it within `timeout`,
  /// kPeerFailed if the connection broke.
  Status send(const Buffer& message, std::chrono::milliseconds timeout);
  /// Receives one message. kTimeout if none arrives within `timeout`, kPeerFailed if the other
  /// side closed the connection, kMalformed for a length over kMaxJoinMessageBytes.
  Result<std::shared_ptr<const Buffer>> receive(std::chrono::milliseconds timeout);
  /// The other side's address ("IP:PORT"), for log lines.
  const std::string& peer() const { return peer_; }

 private:
  int fd_ = -1;
  std::string peer_;
};

/// Accepts joiners on a TCP port until destroyed.
class JoinListener {
 public:
  /// Listens on an ephemeral port of every interface, writes "tcp://HOST:PORT" to `port_file`
  /// (atomically: readers never see half a line), and calls `on_connect` on the listener's
  /// thread with each new connection. HOST is `advertised_host` (a name or an IPv4/IPv6 address
  /// that joiners reach this machine by; see check_join_host), or this machine's host name when
  /// it is empty.
  static Result<std::unique_ptr<JoinListener>> open(const std::string& port_file,
                                                    std::function<void(JoinConnection&)> on_connect,
                                                    const std::string& advertised_host = {});
  /// Stops accepting (within 200 ms), cuts the connection of a handshake under way (its callback
  /// then fails at once), waits for the callback to return, removes the port file.
  ~JoinListener();
  /// What the port file holds.
  const std::string& address() const { return address_; }

 private:
  JoinListener() = default;
  int fd_ = -1;
  std::string address_;
  std::string port_file_;
  std::atomic<bool> closing_{false};
  std::mutex current_mutex_;
  int current_fd_ = -1;  ///< the connection the callback is handling, under current_mutex_
  std::thread thread_;
};

/// kInvalidArgument unless `host` can stand in a join address: a host name (letters, digits,
/// '.', '-', '_'), an IPv4 address or an IPv6 address (with or without brackets).
Status check_join_host(const std::string& host);

/// Reads the join address from `port_file` (waiting for the file to appear) and connects to it.
/// kTimeout if the file does not appear or the connection does not complete within `timeout`;
/// kInvalidArgument for a file that does not hold a join address; kUnavailable when nothing
/// listens there any more (the swarm has ended).
Result<JoinConnection> connect_to_swarm(const std::string& port_file, std::chrono::milliseconds timeout);

}  // namespace sepal

#include "runtime/join_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "runtime/log.h"

namespace sepal {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::string_view kScheme = "tcp://";

// Milliseconds left until `deadline`, at least 0 (for poll).
int left_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

// Waits until `fd` is ready for `events` or the deadline passes; true when ready.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, left_ms(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return true;  // the next call reports the error
  }
}

Status set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return error(StatusCode::kInternal, "cannot make a socket non-blocking: ", std::strerror(errno));
  }
  return Status::ok();
}

// "IP:PORT" of a socket address.
std::string describe(const sockaddr* address) {
  char host[NI_MAXHOST] = {}, port[NI_MAXSERV] = {};
  const socklen_t length = address->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::getnameinfo(address, length, host, sizeof(host), port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  return std::string(host) + ":" + port;
}

// Writes all of `bytes` before the deadline.
Status write_all(int fd, const std::byte* bytes, std::size_t size, Clock::time_point deadline) {
  while (size > 0) {
    const ssize_t n = ::send(fd, bytes, size, MSG_NOSIGNAL);
    if (n > 0) {
      bytes += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_for(fd, POLLOUT, deadline)) {
        return error(StatusCode::kTimeout, "the other side did not take the handshake message in time");
      }
      continue;
    }
    return error(StatusCode::kPeerFailed, "the join connection broke: ", std::strerror(errno));
  }
  return Status::ok();
}

// Reads exactly `size` bytes before the deadline.
Status read_all(int fd, std::byte* bytes, std::size_t size, Clock::time_point deadline, std::chrono::milliseconds timeout) {
  while (size > 0) {
    const ssize_t n = ::recv(fd, bytes, size, 0);
    if (n > 0) {
      bytes += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return error(StatusCode::kPeerFailed, "the other side closed the join connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_for(fd, POLLIN, deadline)) {
        return error(StatusCode::kTimeout, "no handshake message within ", timeout.count(), " ms");
      }
      continue;
    }
    return error(StatusCode::kPeerFailed, "the join connection broke: ", std::strerror(errno));
  }
  return Status::ok();
}

// A listening socket on an ephemeral port of every interface: IPv6 taking IPv4 too where the
// kernel has IPv6, IPv4 otherwise.
Result<int> listen_anywhere() {
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    const int off = 0;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    sockaddr_in6 any{};
    any.sin6_family = AF_INET6;
    any.sin6_addr = in6addr_any;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  if (fd < 0) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return error(StatusCode::kUnavailable, "cannot open a socket: ", std::strerror(errno));
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0) {
      const int e = errno;
      ::close(fd);
      return error(StatusCode::kUnavailable, "cannot bind a socket: ", std::strerror(e));
    }
  }
  if (::listen(fd, 16) != 0 || !set_nonblocking(fd).is_ok()) {
    const int e = errno;
    ::close(fd);
    return error(StatusCode::kUnavailable, "cannot listen on a socket: ", std::strerror(e));
  }
  return fd;
}

int bound_port(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return -1;
  if (address.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
}

// Splits "tcp://HOST:PORT" (HOST may be "[v6 address]"); false when it is not that.
bool is_host_text(const std::string& host) {
  return !host.empty() && host.size() <= 255 && std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || c == ':';
  });
}

bool parse_address(const std::string& text, std::string* host, std::string* port) {
  if (text.compare(0, kScheme.size(), kScheme) != 0) return false;
  const std::string rest = text.substr(kScheme.size());
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size()) return false;
  *host = rest.substr(0, colon);
  *port = rest.substr(colon + 1);
  if (host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  const bool port_ok = port->size() <= 5 && std::all_of(port->begin(), port->end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                       std::stoi(*port) >= 1 && std::stoi(*port) <= 65535;
  return is_host_text(*host) && port_ok;
}

// Connects to one resolved address before the deadline; the socket, or -1 with `why` set.
int connect_one(const addrinfo& a, Clock::time_point deadline, Status* why) {
  const int fd = ::socket(a.ai_family, a.ai_socktype | SOCK_CLOEXEC, a.ai_protocol);
  if (fd < 0 || !set_nonblocking(fd).is_ok()) {
    *why = error(StatusCode::kUnavailable, "cannot open a socket: ", std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return -1;
  }
  int rc = ::connect(fd, a.ai_addr, a.ai_addrlen);
  if (rc != 0 && errno == EINPROGRESS) {
    if (!wait_for(fd, POLLOUT, deadline)) {
      ::close(fd);
      *why = error(StatusCode::kTimeout, "the connection to ", describe(a.ai_addr), " did not complete in time");
      return -1;
    }
    int e = 0;
    socklen_t length = sizeof(e);
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &length);
    errno = e;
    rc = e == 0 ? 0 : -1;
  }
  if (rc != 0) {
    const int e = errno;
    ::close(fd);
    *why = error(e == ECONNREFUSED ? StatusCode::kUnavailable : StatusCode::kPeerFailed, "cannot connect to ",
                 describe(a.ai_addr), ": ", std::strerror(e),
                 e == ECONNREFUSED ? " (nothing listens there: has the swarm ended?)" : "");
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

JoinConnection::JoinConnection(JoinConnection&& other) noexcept : fd_(other.fd_), peer_(std::move(other.peer_)) {
  other.fd_ = -1;
}

JoinConnection& JoinConnection::operator=(JoinConnection&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    peer_ = std::move(other.peer_);
    other.fd_ = -1;
  }
  return *this;
}

JoinConnection::~JoinConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Status JoinConnection::send(const Buffer& message, std::chrono::milliseconds timeout) {
  if (message.size() > kMaxJoinMessageBytes) {
    return error(StatusCode::kInvalidArgument, "handshake message of ", message.size(), " bytes is too large");
  }
  const auto deadline = Clock::now() + timeout;
  const auto length = static_cast<std::uint32_t>(message.size());
  const std::byte header[4] = {std::byte(length & 0xff), std::byte((length >> 8) & 0xff), std::byte((length >> 16) & 0xff),
                               std::byte(length >> 24)};
  SEPAL_RETURN_IF_ERROR(write_all(fd_, header, sizeof(header), deadline));
  return write_all(fd_, message.data(), message.size(), deadline);
}

Result<std::shared_ptr<const Buffer>> JoinConnection::receive(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::byte header[4];
  SEPAL_RETURN_IF_ERROR(read_all(fd_, header, sizeof(header), deadline, timeout));
  const std::uint32_t length = std::to_integer<std::uint32_t>(header[0]) | std::to_integer<std::uint32_t>(header[1]) << 8 |
                               std::to_integer<std::uint32_t>(header[2]) << 16 | std::to_integer<std::uint32_t>(header[3]) << 24;
  if (length > kMaxJoinMessageBytes) {
    return error(StatusCode::kMalformed, "handshake message of ", length, " bytes is too large");
  }
  auto message = Buffer::allocate(length);
  if (length > 0) SEPAL_RETURN_IF_ERROR(read_all(fd_, message->data(), length, deadline, timeout));
  return std::shared_ptr<const Buffer>(std::move(message));
}

Status check_join_host(const std::string& host) {
  std::string bare = host;
  const bool bracketed = bare.size() >= 2 && bare.front() == '[' && bare.back() == ']';
  if (bracketed) bare = bare.substr(1, bare.size() - 2);
  if (!is_host_text(bare)) {
    return error(StatusCode::kInvalidArgument, "'", host,
                 "' is not a host name or an IP address (letters, digits, '.', '-', '_'; ':' in IPv6)");
  }
  if (bracketed || bare.find(':') != std::string::npos) {
    in6_addr ignored{};
    if (::inet_pton(AF_INET6, bare.c_str(), &ignored) != 1) {
      return error(StatusCode::kInvalidArgument, "'", host, "' is not an IPv6 address");
    }
  }
  return Status::ok();
}

Result<std::unique_ptr<JoinListener>> JoinListener::open(const std::string& port_file,
                                                         std::function<void(JoinConnection&)> on_connect,
                                                         const std::string& advertised_host) {
  std::string host = advertised_host;
  if (host.empty()) {
    char name[256] = {};
    if (::gethostname(name, sizeof(name) - 1) != 0 || !name[0]) {
      return error(StatusCode::kUnavailable, "cannot read this machine's host name: ", std::strerror(errno));
    }
    host = name;
  }
  SEPAL_RETURN_IF_ERROR(check_join_host(host));
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  auto fd = listen_anywhere();
  if (!fd.is_ok()) return fd.status();
  std::unique_ptr<JoinListener> listener(new JoinListener());
  listener->fd_ = fd.value();
  listener->address_ = std::string(kScheme) + host + ":" + std::to_string(bound_port(listener->fd_));
  listener->port_file_ = port_file;
  const std::string tmp = port_file + ".tmp";
  {
    std::ofstream out(tmp);
    out << listener->address_ << "\n";
    if (!out) return error(StatusCode::kUnavailable, "cannot write the port file ", port_file);
  }
  std::error_code renamed;
  std::filesystem::rename(tmp, port_file, renamed);  // readers never see a half-written line
  if (renamed) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    return error(StatusCode::kUnavailable, "cannot write the port file ", port_file, ": ", renamed.message());
  }
  JoinListener* self = listener.get();
  listener->thread_ = std::thread([self, on_connect = std::move(on_connect)] {
    while (!self->closing_.load()) {
      pollfd p{self->fd_, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      sockaddr_storage from{};
      socklen_t length = sizeof(from);
      const int fd = ::accept4(self->fd_, reinterpret_cast<sockaddr*>(&from), &length, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
          log(LogLevel::kWarn, "accepting a joiner failed: ", std::strerror(errno));
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        continue;
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      JoinConnection link(fd, describe(reinterpret_cast<sockaddr*>(&from)));
      {
        std::lock_guard lock(self->current_mutex_);
        if (self->closing_.load()) return;
        self->current_fd_ = fd;
      }
      on_connect(link);
      std::lock_guard lock(self->current_mutex_);
      self->current_fd_ = -1;  // before `link` closes the socket: its number may be reused
    }
  });
  return listener;
}

JoinListener::~JoinListener() {
  {
    std::lock_guard lock(current_mutex_);
    closing_ = true;
    if (current_fd_ >= 0) ::shutdown(current_fd_, SHUT_RDWR);
  }
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
  std::error_code ignored;
  if (!port_file_.empty()) std::filesystem::remove(port_file_, ignored);
}

Result<JoinConnection> connect_to_swarm(const std::string& port_file, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string line;
  for (;;) {
    std::ifstream in(port_file);
    if (in) std::getline(in, line);
    if (!line.empty()) break;
    if (Clock::now() > deadline) {
      return error(StatusCode::kTimeout, "no swarm address in ", port_file, " after ", timeout.count(), " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string host, port;
  if (line.size() > 300 || !parse_address(line, &host, &port)) {
    return error(StatusCode::kInvalidArgument, port_file,
                 " does not hold a swarm's join address (tcp://HOST:PORT on its first line): give the port file of a "
                 "running swarm (sepal generate --listen, slurm/swarm.sbatch)");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return error(rc == EAI_AGAIN ? StatusCode::kUnavailable : StatusCode::kInvalidArgument, "cannot resolve ", host,
                 " (from ", port_file, "): ", ::gai_strerror(rc));
  }
  Status why = error(StatusCode::kUnavailable, "no address for ", host);
  int fd = -1;
  for (const addrinfo* a = found; a && fd < 0; a = a->ai_next) fd = connect_one(*a, deadline, &why);
  ::freeaddrinfo(found);
  if (fd < 0) return error(why.code(), why.message(), " (the swarm's address is in ", port_file, ")");
  return JoinConnection(fd, line.substr(kScheme.size()));
}

}  // namespace sepal

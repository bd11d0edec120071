// The join connection between jobs (runtime/join_socket.h): messages round-trip through a real
// listener and port file; a silent or closing peer costs at most the timeout, an oversized
// message is refused unread; a port
// file is read as it appears and refused when it holds something else; a listener that closes
// cuts a handshake under way instead of waiting for it; a swarm of another build is refused at its
// challenge.
#include "runtime/join_socket.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <future>

#include "runtime/join_messages.h"
#include "runtime/swarm_join.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::shared_ptr<Buffer> bytes_of(const std::string& text) {
  auto b = Buffer::allocate(text.size());
  std::memcpy(b->data(), text.data(), text.size());
  return b;
}

std::string text_of(const Buffer& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

std::string read_line(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

TEST(JoinSocket, MessagesRoundTripThroughTheListenersPortFile) {
  const test::TempDir dir;
  const auto port_file = (dir / "swarm.port").string();
  std::promise<std::string> seen;
  auto listener = JoinListener::open(port_file, [&](JoinConnection& link) {
    auto first = link.receive(5s);
    ASSERT_TRUE(first.is_ok()) << first.status().to_string();
    ASSERT_TRUE(link.send(*bytes_of("welcome, " + text_of(*first.value())), 5s).is_ok());
    auto empty = link.receive(5s);  // a message may be empty
    ASSERT_TRUE(empty.is_ok()) << empty.status().to_string();
    seen.set_value(text_of(*first.value()) + "|" + std::to_string(empty.value()->size()));
  });
  ASSERT_TRUE(listener.is_ok()) << listener.status().to_string();
  EXPECT_EQ(read_line(port_file), listener.value()->address());
  EXPECT_EQ(listener.value()->address().rfind("tcp://", 0), 0u);

  auto link = connect_to_swarm(port_file, 5s);
  ASSERT_TRUE(link.is_ok()) << link.status().to_string();
  ASSERT_TRUE(link->send(*bytes_of("joiner"), 5s).is_ok());
  auto reply = link->receive(5s);
  ASSERT_TRUE(reply.is_ok()) << reply.status().to_string();
  EXPECT_EQ(text_of(*reply.value()), "welcome, joiner");
  ASSERT_TRUE(link->send(*Buffer::allocate(0), 5s).is_ok());
  EXPECT_EQ(seen.get_future().get(), "joiner|0");

  listener.value().reset();
  EXPECT_FALSE(std::filesystem::exists(port_file)) << "the port file outlived its listener";
}

// The address joiners use can be named: an IPv4 address, an IPv6 one (bracketed in the file) or
// a host name; what cannot stand in an address is refused before anything listens.
TEST(JoinSocket, TheAdvertisedHostIsWhatJoinersConnectTo) {
  const test::TempDir dir;
  const auto port_file = (dir / "swarm.port").string();
  for (const std::string host : {"127.0.0.1", "::1", "[::1]", "localhost"}) {
    std::promise<std::string> seen;
    auto listener = JoinListener::open(
        port_file,
        [&](JoinConnection& link) {
          auto message = link.receive(5s);
          seen.set_value(message.is_ok() ? text_of(*message.value()) : message.status().to_string());
        },
        host);
    ASSERT_TRUE(listener.is_ok()) << host << ": " << listener.status().to_string();
    const std::string address = read_line(port_file);
    const std::string expected_host = host == "::1" ? "[::1]" : host;
    EXPECT_EQ(address.rfind("tcp://" + expected_host + ":", 0), 0u) << address;
    auto link = connect_to_swarm(port_file, 5s);
    if (!link.is_ok() && host.find(':') != std::string::npos) {
      GTEST_LOG_(INFO) << "no IPv6 loopback here: " << link.status().to_string();
      continue;
    }
    ASSERT_TRUE(link.is_ok()) << host << ": " << link.status().to_string();
    ASSERT_TRUE(link->send(*bytes_of("via " + host), 5s).is_ok());
    EXPECT_EQ(seen.get_future().get(), "via " + host);
  }
  for (const std::string& bad : std::vector<std::string>{"my host", "evil\nline", "node:1", "[node]", "a/b", std::string(300, 'a')}) {
    EXPECT_EQ(check_join_host(bad).code(), StatusCode::kInvalidArgument) << bad;
    auto refused = JoinListener::open(port_file, [](JoinConnection&) {}, bad);
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(std::filesystem::exists(port_file));
}

TEST(JoinSocket, ASilentOrClosingPeerCostsAtMostTheTimeout) {
  const test::TempDir dir;
  const auto port_file = (dir / "swarm.port").string();
  auto listener = JoinListener::open(port_file, [&](JoinConnection&) {
    std::this_thread::sleep_for(400ms);  // says nothing, then closes
  });
  ASSERT_TRUE(listener.is_ok());
  auto link = connect_to_swarm(port_file, 5s);
  ASSERT_TRUE(link.is_ok()) << link.status().to_string();
  const auto start = Clock::now();
  auto silent = link->receive(100ms);
  EXPECT_EQ(silent.status().code(), StatusCode::kTimeout) << silent.status().to_string();
  EXPECT_LT(Clock::now() - start, 2s);
  auto closed = link->receive(5s);
  EXPECT_EQ(closed.status().code(), StatusCode::kPeerFailed) << closed.status().to_string();
}

// A raw socket to the listener, to send bytes sepal's own sender never would.
int raw_connect(const std::string& address) {
  const auto colon = address.rfind(':');
  const int port = std::stoi(address.substr(colon + 1));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<std::uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0) << std::strerror(errno);
  return fd;
}

TEST(JoinSocket, AnOversizedMessageIsRefusedBeforeItIsRead) {
  const test::TempDir dir;
  std::promise<Status> got;
  auto listener = JoinListener::open((dir / "swarm.port").string(), [&](JoinConnection& link) {
    auto m = link.receive(5s);
    got.set_value(m.status());
  });
  ASSERT_TRUE(listener.is_ok());
  const int fd = raw_connect(listener.value()->address());
  const std::uint8_t header[4] = {0x01, 0x00, 0x10, 0x00};  // 1 MiB + 1 byte
  ASSERT_EQ(::send(fd, header, 4, 0), 4);
  const Status s = got.get_future().get();
  EXPECT_EQ(s.code(), StatusCode::kMalformed) << s.to_string();
  EXPECT_NE(s.message().find("too large"), std::string::npos) << s.to_string();
  ::close(fd);
}

TEST(JoinSocket, AClosingListenerCutsAStalledHandshake) {
  const test::TempDir dir;
  std::promise<Status> got;
  auto listener = JoinListener::open((dir / "swarm.port").string(), [&](JoinConnection& link) {
    auto m = link.receive(60s);  // the joiner never sends
    got.set_value(m.status());
  });
  ASSERT_TRUE(listener.is_ok());
  const int fd = raw_connect(listener.value()->address());
  std::this_thread::sleep_for(300ms);  // the callback is waiting now
  const auto start = Clock::now();
  listener.value().reset();
  EXPECT_LT(Clock::now() - start, 5s) << "closing waited for the stalled joiner";
  EXPECT_EQ(got.get_future().get().code(), StatusCode::kPeerFailed);
  ::close(fd);
}

TEST(JoinSocket, APortFileIsAwaitedAndCheckedBeforeAnyConnection) {
  const test::TempDir dir;
  const auto missing = (dir / "none.port").string();
  const auto start = Clock::now();
  auto late = connect_to_swarm(missing, 300ms);
  EXPECT_EQ(late.status().code(), StatusCode::kTimeout);
  EXPECT_GE(Clock::now() - start, 300ms);
  for (const char* bad : {"garbage", "tcp://", "tcp://host", "tcp://host:", "tcp://host:0", "tcp://host:65536",
                          "tcp://ho st:80", "http://host:80", "tcp://host:80x"}) {
    std::ofstream(dir / "bad.port") << bad << "\n";
    auto r = connect_to_swarm((dir / "bad.port").string(), 1s);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad << ": " << r.status().to_string();
  }
  // A file that appears while the joiner waits is used.
  const auto port_file = (dir / "swarm.port").string();
  auto waiting = std::async(std::launch::async, [&] { return connect_to_swarm(port_file, 10s).status(); });
  std::this_thread::sleep_for(200ms);
  auto listener = JoinListener::open(port_file, [](JoinConnection&) {});
  ASSERT_TRUE(listener.is_ok());
  EXPECT_TRUE(waiting.get().is_ok());
}

// A swarm of another build (another join protocol, and with it another link authentication) is
// refused at the first message, in one line that names both versions.
TEST(JoinSocket, ASwarmOfAnotherBuildIsRefusedAtTheChallenge) {
  const test::TempDir dir;
  const auto port_file = (dir / "swarm.port").string();
  auto listener = JoinListener::open(port_file, [](JoinConnection& link) {
    (void)link.send(*encode(Envelope{}, JoinChallenge{kJoinVersion - 1, std::vector<std::uint8_t>(32, 9)}).flatten(), 5s);
    (void)link.receive(2s);
  });
  ASSERT_TRUE(listener.is_ok()) << listener.status().to_string();
  auto link = connect_to_swarm(port_file, 5s);
  ASSERT_TRUE(link.is_ok()) << link.status().to_string();
  auto secret = SwarmSecret::from_text("sixteen bytes or more");
  ASSERT_TRUE(secret.is_ok());
  bool asked_for_address = false;
  auto joined = join_swarm(link.value(), secret.value(), "host", [&](PeerId) -> Result<std::vector<std::uint8_t>> {
    asked_for_address = true;
    return std::vector<std::uint8_t>{1};
  });
  ASSERT_FALSE(joined.is_ok());
  EXPECT_EQ(joined.status().code(), StatusCode::kMalformed);
  EXPECT_EQ(joined.status().message(), "the swarm speaks join protocol version " + std::to_string(kJoinVersion - 1) +
                                           ", this build speaks " + std::to_string(kJoinVersion));
  EXPECT_FALSE(asked_for_address);
}

}  // namespace
}  // namespace sepal

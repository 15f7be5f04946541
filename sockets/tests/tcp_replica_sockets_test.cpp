// The native TCP socket API against the real TCP replicas (replica_loopback.hpp): the application
// connects to its own listener, so both ends of each connection run through TcpSockets, the socket
// region and tcp::ReplicaServer with its engine.
#include <cerrno>
#include <vector>

#include <gtest/gtest.h>

#include "sockets/tests/byte_pattern.hpp"
#include "sockets/tests/replica_loopback.hpp"

namespace flotilla::sockets {
namespace {

using testing::kStackAddress;
using testing::LoopbackSettings;
using testing::pattern;
using testing::ReplicaLoopback;

constexpr std::uint16_t kPort = 5001;

class TcpReplicaSockets : public ::testing::Test {
 protected:
  explicit TcpReplicaSockets(LoopbackSettings settings = {}) : net_(settings), tcp_(net_.sockets()) {}

  int listen_on_every_replica() { return net_.listen_on_every_replica(kPort); }

  // A connection from the application to its own listener: {client, server}, or {-1, -1}.
  std::pair<int, int> connect_to(int listener) { return net_.connect_to(listener, kPort); }

  // Sends all of `bytes` on `from` while reading `to` into the result, until `count` bytes arrived.
  std::vector<std::byte> transfer(int from, int to, std::span<const std::byte> bytes) {
    std::vector<std::byte> got;
    std::size_t sent = 0;
    std::vector<std::byte> chunk(8192);
    EXPECT_TRUE(net_.run_until([&] {
      while (sent < bytes.size()) {
        auto took = tcp_.send(from, bytes.subspan(sent));
        if (!took) {
          EXPECT_EQ(took.error().code, Errc::would_block);
          break;
        }
        sent += took.value();
      }
      for (;;) {
        auto read = tcp_.recv(to, chunk);
        if (!read || read.value() == 0) break;
        got.insert(got.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(read.value()));
      }
      return got.size() >= bytes.size();
    })) << "sent " << sent << ", received " << got.size();
    return got;
  }

  ReplicaLoopback net_;
  TcpSockets& tcp_;
};

TEST_F(TcpReplicaSockets, AConnectionToOurOwnListenerCarriesBytesBothWays) {
  const int listener = listen_on_every_replica();
  const auto [client, server] = connect_to(listener);
  ASSERT_GE(server, 0);
  EXPECT_TRUE(tcp_.writable(client));
  EXPECT_TRUE(tcp_.connected(server));
  // Each end sees the other's port.
  const TcpEndpoints near = tcp_.endpoints(client), far = tcp_.endpoints(server);
  EXPECT_EQ(near.remote_port, kPort);
  EXPECT_EQ(far.local_port, kPort);
  EXPECT_EQ(far.remote_port, near.local_port);
  EXPECT_EQ(far.remote_address, kStackAddress);

  const auto request = pattern(1000, 1), answer = pattern(3000, 2);
  EXPECT_EQ(transfer(client, server, request), request);
  EXPECT_EQ(transfer(server, client, answer), answer);
  EXPECT_GT(net_.counter(0, "segments_to_ip") + net_.counter(1, "segments_to_ip"), 0u);
}

// Many times the rings' size: the receiver's reads must reopen the window (kTcpRequestWindow)
// and the sender's ring must drain as the bytes are acknowledged.
TEST_F(TcpReplicaSockets, ABulkTransferFarLargerThanTheRingsArrivesIntact) {
  const int listener = listen_on_every_replica();
  const auto [client, server] = connect_to(listener);
  ASSERT_GE(server, 0);
  const auto bulk = pattern(2u << 20, 3);
  EXPECT_EQ(transfer(client, server, bulk), bulk);
  EXPECT_TRUE(net_.run_until([&] { return tcp_.unacknowledged(client) == 0; }));
}

TEST_F(TcpReplicaSockets, AConnectNobodyListensForIsRefused) {
  auto client = tcp_.connect(kStackAddress, 5999);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(net_.run_until([&] { return tcp_.error(client.value()) != 0; }));
  EXPECT_EQ(tcp_.error(client.value()), ECONNREFUSED);
  EXPECT_FALSE(tcp_.connected(client.value()));
  // Both readiness calls say "look", so a waiting program sees the error.
  EXPECT_TRUE(tcp_.writable(client.value()));
  EXPECT_TRUE(tcp_.readable(client.value()));
  auto sent = tcp_.send(client.value(), pattern(10, 0));
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().code, Errc::closed);
  EXPECT_EQ(sent.error().sys_errno, ECONNREFUSED);
  std::byte out[4];
  auto received = tcp_.recv(client.value(), out);
  ASSERT_FALSE(received.ok());
  EXPECT_EQ(received.error().sys_errno, ECONNREFUSED);
  EXPECT_TRUE(tcp_.close(client.value()).ok());
  EXPECT_EQ(tcp_.open_sockets(), 0u);
}

TEST_F(TcpReplicaSockets, ShutdownGivesThePeerEveryByteThenEof) {
  const int listener = listen_on_every_replica();
  const auto [client, server] = connect_to(listener);
  ASSERT_GE(server, 0);
  const auto last = pattern(20, 4);
  auto queued = tcp_.send(client, last);
  ASSERT_TRUE(queued.ok());
  ASSERT_EQ(queued.value(), last.size());
  ASSERT_TRUE(tcp_.shutdown_write(client).ok());
  // The FIN arrives behind the bytes: readable, and no EOF until they are read.
  ASSERT_TRUE(net_.run_until([&] { return tcp_.received_bytes(server) == last.size(); }));
  EXPECT_TRUE(tcp_.readable(server));
  EXPECT_FALSE(tcp_.eof(server));
  std::vector<std::byte> got(100);
  auto first = tcp_.recv(server, got);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first.value(), last.size());
  EXPECT_TRUE(std::equal(last.begin(), last.end(), got.begin()));
  ASSERT_TRUE(net_.run_until([&] { return tcp_.eof(server); }));
  EXPECT_TRUE(tcp_.readable(server));
  auto end = tcp_.recv(server, got);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(end.value(), 0u);  // EOF
  auto after = tcp_.send(client, last);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().sys_errno, EPIPE);
  // The other direction still works after a half close.
  const auto reply = pattern(50, 5);
  EXPECT_EQ(transfer(server, client, reply), reply);
}

TEST_F(TcpReplicaSockets, AnAbortResetsThePeer) {
  const int listener = listen_on_every_replica();
  const auto [client, server] = connect_to(listener);
  ASSERT_GE(server, 0);
  ASSERT_TRUE(tcp_.abort(client).ok());
  ASSERT_TRUE(net_.run_until([&] { return tcp_.error(server) != 0; }));
  EXPECT_EQ(tcp_.error(server), ECONNRESET);
  EXPECT_TRUE(tcp_.readable(server));
}

// Round robin puts the connects on both replicas; each replica's copy of the listener takes the
// connections that reach it.
TEST_F(TcpReplicaSockets, TheListenerTakesConnectionsFromEveryReplica) {
  const int listener = listen_on_every_replica();
  EXPECT_FALSE(tcp_.acceptable(listener));
  auto none = tcp_.accept(listener);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, Errc::would_block);
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < 4; ++i) {
    pairs.push_back(connect_to(listener));
    ASSERT_GE(pairs.back().second, 0);
  }
  EXPECT_GT(net_.server(0).connection_count(), 0u);
  EXPECT_GT(net_.server(1).connection_count(), 0u);
  for (const auto& [client, server] : pairs) {
    const auto bytes = pattern(100, static_cast<std::uint8_t>(client));
    EXPECT_EQ(transfer(client, server, bytes), bytes);
  }
}

// Closing both ends gives each replica its pages back: far more connections than a region has
// pages come and go one after another.
TEST_F(TcpReplicaSockets, ClosedConnectionsGiveTheirPagesBack) {
  const int listener = listen_on_every_replica();
  for (int round = 0; round < 12; ++round) {
    const auto [client, server] = connect_to(listener);
    ASSERT_GE(server, 0) << "round " << round;
    ASSERT_TRUE(tcp_.close(client).ok());
    ASSERT_TRUE(net_.run_until([&] { return tcp_.eof(server); })) << "round " << round;
    ASSERT_TRUE(tcp_.close(server).ok());
    net_.pump();
  }
  EXPECT_EQ(net_.counter(0, "pages_exhausted") + net_.counter(1, "pages_exhausted"), 0u);
  EXPECT_EQ(net_.counter(0, "bad_app_messages") + net_.counter(1, "bad_app_messages"), 0u);
}

// A connect whose pick names a replica where the program's sockets fill every page goes to a
// replica with room (a fleet's weighted pick, or retries after refusals, may put more on one
// replica than its region holds); EMFILE comes only when every replica is full.
TEST(TcpReplicaRoom, AConnectGoesToAReplicaWithRoomWhenItsPickIsFull) {
  ReplicaLoopback net(LoopbackSettings{.replicas = 2, .pages = 4, .ring_bytes = 1u << 14, .apps = 1});
  TcpSockets& tcp = net.sockets(0);
  const auto refused = [&](int socket) {
    return net.run_until([&] { return tcp.error(socket) != 0; }) && tcp.error(socket) == ECONNREFUSED;
  };
  std::vector<int> kept;
  for (int i = 0; i < 8; ++i) {  // round robin: four on each, every page taken, none let go
    auto client = tcp.connect(kStackAddress, 5999);
    ASSERT_TRUE(client.ok());
    ASSERT_TRUE(refused(client.value())) << "connection " << i;
    kept.push_back(client.value());
  }
  // Two of replica 1's go; the next pick is replica 0, which is full.
  int closed = 0;
  for (const int socket : kept) {
    if (closed < 2 && tcp.replica_of(socket) == 1u) {
      ASSERT_TRUE(tcp.close(socket).ok());
      ++closed;
    }
  }
  net.pump();
  for (int i = 0; i < 2; ++i) {
    auto client = tcp.connect(kStackAddress, 5999);
    ASSERT_TRUE(client.ok());
    EXPECT_TRUE(refused(client.value())) << "it got no page: " << tcp.error(client.value());
    EXPECT_EQ(tcp.replica_of(client.value()), 1u);
  }
  EXPECT_EQ(net.counter(0, "pages_exhausted") + net.counter(1, "pages_exhausted"), 0u);
  // Every replica full: the connect fails as Linux's would past a limit.
  auto past = tcp.connect(kStackAddress, 5999);
  ASSERT_TRUE(past.ok());
  ASSERT_TRUE(net.run_until([&] { return tcp.error(past.value()) != 0; }));
  EXPECT_EQ(tcp.error(past.value()), EMFILE);
}

// The replica treats the application's messages as untrusted: a page out of range, one it never
// handed out, or an unknown kind is counted and dropped, and the application's connections go on.
TEST_F(TcpReplicaSockets, TheReplicaCountsAndDropsMessagesNamingNoPageOfTheApplication) {
  const int listener = listen_on_every_replica();
  const auto [client, server] = connect_to(listener);
  ASSERT_GE(server, 0);
  const std::uint64_t bad_before = net_.counter(0, "bad_app_messages");
  const std::uint64_t stale_before = net_.counter(0, "stale_app_messages");
  net_.send_raw(0, Message::make(stack::kTcpKickKind, stack::TcpPageBody{1'000'000, 1}));
  net_.send_raw(0, Message::make(stack::kTcpKickKind, stack::TcpPageBody{static_cast<std::uint32_t>(LoopbackSettings{}.pages - 1), 12345}));
  net_.send_raw(0, Message::make(stack::kTcpOptionKind,
                                 stack::TcpOptionBody{0, 0xffffffff, stack::TcpOption::nodelay, 0, 1}));
  net_.send_raw(0, Message::make(MessageKind::data, stack::TcpPageBody{0, 0}));  // not a TCP kind
  net_.pump();
  EXPECT_EQ(net_.counter(0, "bad_app_messages") - bad_before, 2u);
  EXPECT_EQ(net_.counter(0, "stale_app_messages") - stale_before, 2u);
  const auto bytes = pattern(500, 9);
  EXPECT_EQ(transfer(client, server, bytes), bytes);
}

// A process that exits (its lease ends) without closing, or right after closing: Linux closes its
// connections as close() would, so the peer gets every byte written, then a FIN, or a RST when
// bytes were left unread. Application 0 serves, 1 is the peer.
class ProcessExit : public ::testing::Test {
 protected:
  ProcessExit() : net_(LoopbackSettings{.replicas = 2, .pages = 8, .ring_bytes = 1u << 14, .apps = 2}) {}

  void SetUp() override {
    const int listener = net_.listen_on_every_replica(kPort, 0);
    ASSERT_GE(listener, 0);
    std::tie(client_, server_) = net_.connect_to(listener, kPort, 0, 1);
    ASSERT_GE(server_, 0);
  }

  TcpSockets& server() { return net_.sockets(0); }
  TcpSockets& peer() { return net_.sockets(1); }

  // Fills the server's send ring without letting the replicas run: none of it has left at the exit.
  std::vector<std::byte> write_a_ringful() {
    const auto bytes = pattern(1u << 14, 7);
    auto queued = server().send(server_, bytes);
    if (!queued) {
      ADD_FAILURE() << "the send failed";
      return {};
    }
    return std::vector<std::byte>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(queued.value()));
  }

  // What the peer reads until EOF or an error.
  std::vector<std::byte> read_to_the_end() {
    std::vector<std::byte> got, chunk(4096);
    EXPECT_TRUE(net_.run_until([&] {
      for (;;) {
        auto read = peer().recv(client_, chunk);
        if (!read) return read.error().code != Errc::would_block;
        if (read.value() == 0) return true;
        got.insert(got.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(read.value()));
      }
    }));
    return got;
  }

  ReplicaLoopback net_;
  int client_ = -1;
  int server_ = -1;
};

TEST_F(ProcessExit, WhatItWroteReachesThePeerThenAFin) {
  const auto written = write_a_ringful();
  ASSERT_GT(written.size(), 0u);
  net_.restart_app(0);
  EXPECT_EQ(read_to_the_end(), written);
  EXPECT_TRUE(peer().eof(client_));
  EXPECT_EQ(peer().error(client_), 0);
}

TEST_F(ProcessExit, AfterShutdownAndCloseWhatItWroteStillArrives) {
  const auto written = write_a_ringful();
  ASSERT_TRUE(server().shutdown_write(server_).ok());
  ASSERT_TRUE(server().close(server_).ok());
  net_.restart_app(0);
  EXPECT_EQ(read_to_the_end(), written);
  EXPECT_TRUE(peer().eof(client_));
  EXPECT_EQ(peer().error(client_), 0);
}

TEST_F(ProcessExit, BytesLeftUnreadResetThePeer) {
  const auto request = pattern(100, 8);
  ASSERT_TRUE(peer().send(client_, request).ok());
  ASSERT_TRUE(net_.run_until([&] { return server().received_bytes(server_) == request.size(); }));
  net_.restart_app(0);
  ASSERT_TRUE(net_.run_until([&] { return peer().error(client_) != 0; }));
  EXPECT_EQ(peer().error(client_), ECONNRESET);
}

// The seat's next process shares the region while the connection drains: bytes it puts in the
// old connection's send ring after the exit never reach that connection's peer.
TEST_F(ProcessExit, ASuccessorsWritesIntoTheDrainingRingAreNotSent) {
  const auto written = write_a_ringful();
  ASSERT_TRUE(server().shutdown_write(server_).ok());
  net_.pump();
  net_.restart_app(0);
  // What a hostile successor could do: move the ring's tail on, past the shutdown.
  formats::TcpSocketPageHeader* page = nullptr;
  for (std::size_t replica = 0; replica < 2 && page == nullptr; ++replica) {
    const formats::TcpRegion region = net_.region(replica, 0);
    for (std::uint32_t index = 0; index < region.page_count(); ++index) {
      if (region.page(index)->send.tail.load() != 0) page = region.page(index);
    }
  }
  ASSERT_NE(page, nullptr);
  page->send.tail.fetch_add(1000);
  EXPECT_EQ(read_to_the_end(), written);
  EXPECT_TRUE(peer().eof(client_));
  EXPECT_EQ(peer().error(client_), 0);
}

}  // namespace
}  // namespace flotilla::sockets

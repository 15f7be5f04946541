// A TCP replica that crashes loses no connection (issue 15), through TcpSockets and the real
// replicas (replica_loopback.hpp): a crashed replica's next incarnation starts over the same state
// store and socket region, carries every connection and listener on, and tells the application
// so; streams both ways arrive whole and no socket sees an error.
#include <cerrno>
#include <vector>

#include <gtest/gtest.h>

#include "sockets/tests/byte_pattern.hpp"
#include "sockets/tests/replica_loopback.hpp"

namespace flotilla::sockets {
namespace {

using testing::kStackAddress;
using testing::pattern;
using testing::ReplicaLoopback;

constexpr std::uint16_t kPort = 5001;

class TcpReplicaRecovery : public ::testing::Test {
 protected:
  TcpReplicaRecovery() : tcp_(net_.sockets()) {}

  int listen_on_every_replica() { return net_.listen_on_every_replica(kPort); }
  std::pair<int, int> connect_to(int listener) { return net_.connect_to(listener, kPort); }

  // One direction of a stream: what is sent, and what arrived.
  struct Stream {
    int from = -1;
    int to = -1;
    std::vector<std::byte> bytes;
    std::size_t sent = 0;
    std::vector<std::byte> got;
  };

  // Moves every stream on as far as the rings allow; false once a socket failed.
  bool move(std::vector<Stream>& streams) {
    std::vector<std::byte> chunk(8192);
    for (Stream& stream : streams) {
      while (stream.sent < stream.bytes.size()) {
        auto took = tcp_.send(stream.from, std::span(stream.bytes).subspan(stream.sent));
        if (!took) {
          EXPECT_EQ(took.error().code, Errc::would_block) << "send: errno " << took.error().sys_errno;
          if (took.error().code != Errc::would_block) return false;
          break;
        }
        stream.sent += took.value();
      }
      for (;;) {
        auto read = tcp_.recv(stream.to, chunk);
        if (!read) {
          EXPECT_EQ(read.error().code, Errc::would_block) << "recv: errno " << read.error().sys_errno;
          if (read.error().code != Errc::would_block) return false;
          break;
        }
        if (read.value() == 0) break;
        stream.got.insert(stream.got.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(read.value()));
      }
    }
    return true;
  }

  static bool arrived(const std::vector<Stream>& streams) {
    for (const Stream& stream : streams) {
      if (stream.got.size() < stream.bytes.size()) return false;
    }
    return true;
  }

  ReplicaLoopback net_;
  TcpSockets& tcp_;
};

TEST_F(TcpReplicaRecovery, StreamsBothWaysArriveWholeAcrossRepeatedCrashesOfBothReplicas) {
  const int listener = listen_on_every_replica();
  std::vector<Stream> streams;
  for (int i = 0; i < 3; ++i) {
    const auto [client, server] = connect_to(listener);
    ASSERT_GE(server, 0);
    streams.push_back(Stream{client, server, pattern(2'000'000, static_cast<std::uint8_t>(2 * i + 1)), 0, {}});
    streams.push_back(Stream{server, client, pattern(2'000'000, static_cast<std::uint8_t>(2 * i + 2)), 0, {}});
  }
  int round = 0;
  int crashes = 0;
  bool failed = false;
  ASSERT_TRUE(net_.run_until([&] {
    if (!move(streams)) failed = true;
    // Every few milliseconds of simulated time one replica or the other dies mid-transfer.
    if (++round % 2 == 0 && crashes < 12) net_.crash(static_cast<std::size_t>(crashes++ % 2));
    return failed || arrived(streams);
  }));
  EXPECT_FALSE(failed);
  EXPECT_EQ(crashes, 12);
  for (const Stream& stream : streams) {
    EXPECT_EQ(stream.got, stream.bytes);
    EXPECT_EQ(tcp_.error(stream.from), 0);
    EXPECT_EQ(tcp_.error(stream.to), 0);
  }
  EXPECT_GT(net_.counter(0, "restored") + net_.counter(1, "restored"), 0u);
}

TEST_F(TcpReplicaRecovery, AListenerSurvivesACrashAndAcceptsNewConnectionsAfterIt) {
  const int listener = listen_on_every_replica();
  const auto [client, server] = connect_to(listener);
  ASSERT_GE(server, 0);
  net_.crash(0);
  net_.crash(1);
  ASSERT_TRUE(net_.run_until([&] { return true; }));
  EXPECT_TRUE(tcp_.listening(listener));
  EXPECT_EQ(tcp_.error(listener), 0);
  // The connection accepted before still carries bytes both ways.
  std::vector<Stream> old{{client, server, pattern(50'000, 7), 0, {}}, {server, client, pattern(50'000, 8), 0, {}}};
  ASSERT_TRUE(net_.run_until([&] { return !move(old) || arrived(old); }));
  EXPECT_EQ(old[0].got, old[0].bytes);
  EXPECT_EQ(old[1].got, old[1].bytes);
  // New ones are accepted, whichever replica their flow lands on.
  for (int i = 0; i < 4; ++i) {
    const auto [another, accepted] = connect_to(listener);
    ASSERT_GE(accepted, 0);
    std::vector<Stream> fresh{{another, accepted, pattern(10'000, static_cast<std::uint8_t>(9 + i)), 0, {}}};
    ASSERT_TRUE(net_.run_until([&] { return !move(fresh) || arrived(fresh); }));
    EXPECT_EQ(fresh[0].got, fresh[0].bytes);
  }
}

TEST_F(TcpReplicaRecovery, AConnectionAwaitingAcceptIsAnnouncedAgainAfterACrash) {
  const int listener = listen_on_every_replica();
  auto client = tcp_.connect(kStackAddress, kPort);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(net_.run_until([&] { return tcp_.connected(client.value()); }));
  net_.crash(0);
  net_.crash(1);
  int server = -1;
  ASSERT_TRUE(net_.run_until([&] {
    if (auto accepted = tcp_.accept(listener); accepted) server = accepted.value();
    return server >= 0;
  }));
  std::vector<Stream> streams{{client.value(), server, pattern(20'000, 5), 0, {}}};
  ASSERT_TRUE(net_.run_until([&] { return !move(streams) || arrived(streams); }));
  EXPECT_EQ(streams[0].got, streams[0].bytes);
  // Exactly one accepted socket for the one connection: the announce again was no second one.
  EXPECT_FALSE(tcp_.accept(listener).ok());
}

// A listener group lives in the slot table: after both replicas crash, the workers that joined it
// still get every new connection, balanced, the opener that never accepted still none, and a
// member that leaves afterwards leaves the rest serving.
TEST(TcpReplicaRecoveryGroups, AListenerGroupIsRebuiltAfterACrash) {
  constexpr std::uint16_t kGroupPort = 8080;
  ReplicaLoopback net(testing::LoopbackSettings{.replicas = 2, .pages = 48, .ring_bytes = 1u << 14, .apps = 3});
  const int home = net.listen_on_every_replica(kGroupPort);
  const int first = net.join_listener(1, 0, home);
  const int second = net.join_listener(2, 0, home);
  ASSERT_GE(first, 0);
  ASSERT_GE(second, 0);
  // Both sleep waiting to accept, which their pages say across the crash.
  net.sockets(1).waiting_to_accept(first, true);
  net.sockets(2).waiting_to_accept(second, true);
  // One connection waits in worker 1's queue across the crash.
  const auto waiting = net.connect_many(0, kGroupPort, 1, {});
  net.crash(0);
  net.crash(1);
  EXPECT_EQ(net.counter(0, "slots_dropped") + net.counter(1, "slots_dropped"), 0u);
  const auto spread = net.connect_many(0, kGroupPort, 12, {{1, first}, {2, second}});
  EXPECT_EQ(spread.per_app[1] + spread.per_app[2], 13);  // the waiting one too
  EXPECT_GE(spread.per_app[1], 4);
  EXPECT_GE(spread.per_app[2], 4);
  EXPECT_FALSE(net.sockets(0).acceptable(home));
  ASSERT_TRUE(net.sockets(1).close(first).ok());
  const auto after = net.connect_many(0, kGroupPort, 4, {{2, second}});
  EXPECT_EQ(after.per_app[2], 4);
  // A join after the crash is proven by a member the predecessor made.
  net.restart_app(1);
  EXPECT_GE(net.join_listener(1, 0, home), 0);
}

}  // namespace
}  // namespace flotilla::sockets

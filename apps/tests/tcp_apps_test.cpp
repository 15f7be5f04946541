// flotilla-perf's and flotilla-tcp-echo's logic: the stream pattern and its check, SHA-256, the
// report, and bulk send, receive and echoing over the real TCP replicas in one process
// (sockets/tests/replica_loopback.hpp), the apps talking to each other through them.
#include <cerrno>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "apps/tcp_common/tcp_component.hpp"
#include "apps/tcp_echo/echo_server.hpp"
#include "apps/tcp_perf/perf_streams.hpp"
#include "sockets/tests/replica_loopback.hpp"

namespace flotilla::apps {
namespace {

using sockets::testing::kStackAddress;
using sockets::testing::ReplicaLoopback;

std::vector<std::byte> pattern(std::uint64_t position, std::size_t length) {
  std::vector<std::byte> bytes(length);
  fill_pattern(position, bytes);
  return bytes;
}

std::string sha256_of(std::span<const std::byte> bytes) {
  Sha256 hash;
  hash.update(bytes);
  return hash.finish();
}

TEST(StreamPattern, FollowsTheDocumentedFormula) {
  // Word 0 is 0; word 1 is the multiplier itself, little-endian.
  for (std::uint64_t i = 0; i < 8; ++i) EXPECT_EQ(pattern_byte(i), std::byte{0});
  EXPECT_EQ(pattern_byte(8), std::byte{0x15});
  EXPECT_EQ(pattern_byte(9), std::byte{0x7c});
  EXPECT_EQ(pattern_byte(15), std::byte{0x9e});
  const std::uint64_t word = 1000 * kPatternMultiplier;
  EXPECT_EQ(pattern_byte(8000 + 3), static_cast<std::byte>(word >> 24));
}

TEST(StreamPattern, FillMatchesByteByByteFromAnyStart) {
  for (const std::uint64_t start : {0ull, 1ull, 7ull, 8ull, 13ull, 4095ull, (1ull << 40) + 5}) {
    const auto bytes = pattern(start, 77);
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      ASSERT_EQ(bytes[i], pattern_byte(start + i)) << "start " << start << " byte " << i;
    }
  }
}

TEST(StreamPattern, MismatchesAreCountedAndTheFirstIsLocated) {
  auto bytes = pattern(100, 10000);
  std::uint64_t first = 0;
  EXPECT_EQ(count_pattern_mismatches(100, bytes, &first), 0u);
  bytes[5000] ^= std::byte{1};
  bytes[9000] ^= std::byte{0x80};
  EXPECT_EQ(count_pattern_mismatches(100, bytes, &first), 2u);
  EXPECT_EQ(first, 5000u);
  // The same bytes placed one position off are nearly all wrong.
  EXPECT_GT(count_pattern_mismatches(101, pattern(100, 1000), nullptr), 900u);
}

TEST(Sha256, KnownDigests) {
  EXPECT_EQ(sha256_of({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const char abc[] = "abc";
  EXPECT_EQ(sha256_of(std::as_bytes(std::span(abc, 3))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Pieces hash like the whole.
  const auto bytes = pattern(0, 5000);
  Sha256 pieces;
  pieces.update(std::span(bytes).first(1234));
  pieces.update(std::span(bytes).subspan(1234));
  EXPECT_EQ(pieces.finish(), sha256_of(bytes));
}

TEST(PerfText, ChannelsProgressAndReport) {
  EXPECT_EQ(split_channels("tcp0-perf,tcp1-perf"), (std::vector<std::string>{"tcp0-perf", "tcp1-perf"}));
  EXPECT_EQ(split_channels("one"), (std::vector<std::string>{"one"}));
  EXPECT_TRUE(split_channels("").empty());
  EXPECT_TRUE(split_channels("a,,b").empty());
  EXPECT_TRUE(split_channels("a,").empty());
  EXPECT_EQ(progress_line(1.0, 0.94), "[ 1.0s] 0.94 Gbps");
  EXPECT_EQ(progress_line(12.04, 9.456), "[12.0s] 9.46 Gbps");
  EXPECT_DOUBLE_EQ(gbps(125'000'000, 1.0), 1.0);

  PerfReport report;
  report.role = "receive";
  report.bytes = 250'000'000;
  report.seconds = 2;
  report.streams = 2;
  report.verify = true;
  report.mismatches = 3;
  report.first_mismatch = 17;
  report.sha256 = {"aa", "bb"};
  report.errors = {0, 104};
  report.replicas = {1, 0};
  report.placed_by_name = 2;
  report.seconds = 2.00000049;
  const std::string line = report_json(report);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(line), nlohmann::json::parse(R"({
      "role": "receive", "bytes": 250000000, "seconds": 2.0, "gbps": 1.0, "streams": 2, "failed_streams": 0,
      "errors": [0, 104], "replicas": [1, 0], "placed_by_name": 2, "placed_by_fallback": 0,
      "mismatches": 3, "first_mismatch": 17, "sha256": ["aa", "bb"]})"));
  // Keys keep the order readers of the line have always seen.
  EXPECT_EQ(line.rfind(R"({"role":"receive","bytes":250000000,"seconds":2.0,"gbps":1.0,)", 0), 0u) << line;
  report.verify = false;
  EXPECT_FALSE(nlohmann::json::parse(report_json(report)).contains("sha256"));
}

constexpr std::uint16_t kPerfPort = 5001;

// Waits until `done`, running the apps' own `pump` at every step.
template <class Pump, class Done>
bool run(ReplicaLoopback& net, Pump&& pump, Done&& done) {
  return net.run_until([&] {
    pump();
    return done();
  });
}

TEST(PerfStreams, TheSenderDeliversThePatternToTheReceiverOnEveryStream) {
  ReplicaLoopback net;
  constexpr std::uint64_t kBytes = 300'000;  // several rings' worth
  PerfReceiver receiver(net.sockets(), kPerfPort, 2, true);
  ASSERT_TRUE(receiver.start().ok());
  PerfSender sender(net.sockets(), kStackAddress, kPerfPort, 2, kBytes, true);
  ASSERT_TRUE(run(net, [&] { receiver.pump(); }, [&] { return receiver.listen_error() == 0 && net.sockets().listening(0); }));
  ASSERT_TRUE(sender.start().ok());
  ASSERT_TRUE(run(net, [&] { sender.pump(); receiver.pump(); },
                  [&] { return sender.finished() && receiver.finished(); }))
      << "sent " << sender.bytes() << ", received " << receiver.bytes();
  sender.close();
  receiver.close();
  net.pump();
  const PerfReport sent = sender.report(1.0), received = receiver.report(1.0);
  EXPECT_EQ(sent.bytes, 2 * kBytes);
  EXPECT_EQ(sent.failed_streams, 0u);
  EXPECT_EQ(sent.retransmits, 0u);  // the loopback loses nothing
  EXPECT_EQ(received.bytes, 2 * kBytes);
  EXPECT_EQ(received.mismatches, 0u);
  ASSERT_EQ(sent.sha256.size(), 2u);
  EXPECT_EQ(sent.sha256[0], sha256_of(pattern(0, kBytes)));
  EXPECT_EQ(sent.sha256[1], sent.sha256[0]);
  EXPECT_EQ(received.sha256, sent.sha256);
}

TEST(PerfStreams, ARefusedStreamEndsAsFailed) {
  ReplicaLoopback net;
  PerfSender sender(net.sockets(), kStackAddress, kPerfPort, 1, 0, false);
  ASSERT_TRUE(sender.start().ok());
  ASSERT_TRUE(run(net, [&] { sender.pump(); }, [&] { return sender.finished(); }));
  EXPECT_EQ(sender.report(1.0).failed_streams, 1u);
}

// A stream whose bytes differ from the pattern (sent by a plain client, since the sender only
// sends the pattern) is counted, and its first wrong byte located.
TEST(PerfStreams, TheReceiverCountsWrongBytes) {
  ReplicaLoopback net;
  auto& tcp = net.sockets();
  PerfReceiver receiver(tcp, kPerfPort, 1, true);
  ASSERT_TRUE(receiver.start().ok());
  ASSERT_TRUE(run(net, [&] { receiver.pump(); }, [&] { return tcp.listening(0); }));
  constexpr std::size_t kBytes = 3000;
  auto bad = pattern(0, kBytes);
  bad[2500] ^= std::byte{0xff};
  auto client = tcp.connect(kStackAddress, kPerfPort);
  ASSERT_TRUE(client.ok());
  std::size_t sent = 0;
  ASSERT_TRUE(run(net, [&] {
    receiver.pump();
    if (!tcp.connected(client.value()) || sent == kBytes) return;
    if (auto took = tcp.send(client.value(), std::span(bad).subspan(sent)); took) sent += took.value();
    if (sent == kBytes) {
      EXPECT_TRUE(tcp.shutdown_write(client.value()).ok());
    }
  }, [&] { return receiver.finished(); }));
  const PerfReport report = receiver.report(1.0);
  EXPECT_EQ(report.bytes, kBytes);
  EXPECT_EQ(report.mismatches, 1u);
  EXPECT_EQ(report.first_mismatch, 2500u);
  ASSERT_EQ(report.sha256.size(), 1u);
  EXPECT_EQ(report.sha256[0], sha256_of(bad));
  // The receiver closed the stream once read to its end: the client sees EOF.
  EXPECT_TRUE(net.run_until([&] { return tcp.eof(client.value()); }));
}

// A client of the echo server: what it sent, and what came back.
struct EchoClient {
  int socket = -1;
  std::vector<std::byte> sent;
  std::vector<std::byte> back;

  // Reads whatever came back.
  void read(sockets::TcpSockets& tcp) {
    std::vector<std::byte> chunk(16 * 1024);
    for (;;) {
      auto got = tcp.recv(socket, chunk);
      if (!got || got.value() == 0) return;
      back.insert(back.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(got.value()));
    }
  }
};

TEST(EchoServer, EchoesEveryConnectionAndHoldsBackWhileItsClientDoesNotRead) {
  ReplicaLoopback net;
  auto& tcp = net.sockets();
  EchoServer server(tcp, 7, 16);
  ASSERT_TRUE(server.start().ok());
  ASSERT_TRUE(run(net, [&] { server.pump(); }, [&] { return server.listening(); }));
  EchoClient clients[2];
  for (auto& client : clients) {
    auto connected = tcp.connect(kStackAddress, 7);
    ASSERT_TRUE(connected.ok());
    client.socket = connected.value();
  }
  ASSERT_TRUE(run(net, [&] { server.pump(); },
                  [&] { return tcp.connected(clients[0].socket) && tcp.connected(clients[1].socket); }));
  clients[0].sent = pattern(0, 100);
  clients[1].sent = pattern(7, 200);
  for (auto& client : clients) ASSERT_EQ(tcp.send(client.socket, client.sent).value(), client.sent.size());
  ASSERT_TRUE(run(net, [&] {
    server.pump();
    for (auto& client : clients) client.read(tcp);
  }, [&] { return clients[0].back.size() == 100 && clients[1].back.size() == 200; }));
  EXPECT_EQ(clients[0].back, clients[0].sent);
  EXPECT_EQ(clients[1].back, clients[1].sent);
  EXPECT_EQ(server.connections(), 2u);

  // The first client sends on and stops reading its echoes: once the server's send ring is full it
  // stops reading too, the windows close, and the client's sends stop being taken.
  EchoClient& slow = clients[0];
  const auto stream = pattern(100, 1u << 20);
  std::size_t offered = 0;
  ASSERT_TRUE(run(net, [&] { server.pump(); }, [&] {
    auto took = tcp.send(slow.socket, std::span(stream).subspan(offered));
    if (took) offered += took.value();
    return !took && took.error().code == Errc::would_block;
  }));
  EXPECT_LT(offered, stream.size());
  slow.sent.insert(slow.sent.end(), stream.begin(), stream.begin() + static_cast<std::ptrdiff_t>(offered));
  const std::uint64_t echoed = server.echoed_bytes();
  net.run_until([] { return false; }, 100'000'000);  // time passes, nobody reads: nothing moves
  server.pump();
  EXPECT_EQ(server.echoed_bytes(), echoed);

  // The client reads again and closes its side: everything comes back, then the server closes.
  ASSERT_TRUE(tcp.shutdown_write(slow.socket).ok());
  ASSERT_TRUE(run(net, [&] {
    server.pump();
    slow.read(tcp);
  }, [&] { return tcp.eof(slow.socket); }));
  EXPECT_EQ(slow.back.size(), slow.sent.size());
  EXPECT_TRUE(slow.back == slow.sent);
  EXPECT_EQ(server.connections(), 1u);
  EXPECT_EQ(server.accepted(), 2u);
}

}  // namespace
}  // namespace flotilla::apps

// flotilla-perf's and flotilla-tcp-echo's logic over fake TCP replicas (sockets/tests/fake_replica.hpp):
// the stream pattern and its check, SHA-256, the report, bulk send and receive, and echoing.
#include <cerrno>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "apps/tcp_common/tcp_component.hpp"
#include "apps/tcp_echo/echo_server.hpp"
#include "apps/tcp_perf/perf_streams.hpp"
#include "sockets/tests/fake_replica.hpp"

namespace flotilla::apps {
namespace {

using formats::TcpSocketStatus;
using sockets::testing::FakeReplica;
using sockets::testing::FakeStack;

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

// Establishes the connection whose open is waiting at `replica`; returns its slot.
std::uint32_t establish(FakeReplica& replica) {
  const std::uint32_t slot = replica.answer_open(replica.take_open());
  replica.set_status(slot, TcpSocketStatus::connected);
  replica.event(slot);
  return slot;
}

TEST(PerfSender, SendsThePatternOnEveryStreamThenShutsDown) {
  FakeStack stack;
  constexpr std::uint64_t kBytes = 10000;  // more than one 4 KiB ring's worth
  PerfSender sender(*stack.sockets, 0x0a000002, 5001, 2, kBytes, true);
  ASSERT_TRUE(sender.start().ok());
  const std::uint32_t slots[2] = {establish(stack.replica(0)), establish(stack.replica(1))};
  std::vector<std::byte> got[2];
  sender.pump();
  EXPECT_FALSE(sender.finished());  // queued, not yet acknowledged (the replica consumes on ACK)
  for (int round = 0; round < 10 && !(got[0].size() == kBytes && got[1].size() == kBytes); ++round) {
    sender.pump();
    for (int r = 0; r < 2; ++r) {
      auto& ring = stack.replica(r).send_ring(slots[r]);
      std::vector<std::byte> chunk(ring.readable());
      ASSERT_EQ(ring.read(chunk), chunk.size());
      got[r].insert(got[r].end(), chunk.begin(), chunk.end());
    }
  }
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(got[r].size(), kBytes);
    EXPECT_EQ(count_pattern_mismatches(0, got[r], nullptr), 0u);
    EXPECT_NE(stack.replica(r).take_requests(slots[r]) & formats::kTcpRequestShutdownWrite, 0u);
  }
  EXPECT_EQ(sender.bytes(), 2 * kBytes);
  EXPECT_TRUE(sender.finished());
  stack.replica(0).control(slots[0]).retransmits.store(3);
  stack.replica(1).control(slots[1]).retransmits.store(4);
  sender.close();
  EXPECT_EQ(stack.replica(0).take_requests(slots[0]) & formats::kTcpRequestClose, formats::kTcpRequestClose);
  const PerfReport report = sender.report(1.0);
  EXPECT_EQ(report.bytes, 2 * kBytes);
  EXPECT_EQ(report.failed_streams, 0u);
  EXPECT_EQ(report.retransmits, 7u);
  ASSERT_EQ(report.sha256.size(), 2u);
  EXPECT_EQ(report.sha256[0], sha256_of(pattern(0, kBytes)));
  EXPECT_EQ(report.sha256[1], report.sha256[0]);
}

TEST(PerfSender, ARefusedStreamEndsAsFailed) {
  FakeStack stack;
  PerfSender sender(*stack.sockets, 0x0a000002, 5001, 1, 0, false);
  ASSERT_TRUE(sender.start().ok());
  const std::uint32_t slot = stack.replica(0).answer_open(stack.replica(0).take_open());
  stack.replica(0).set_status(slot, TcpSocketStatus::closed, ECONNREFUSED);
  stack.replica(0).event(slot);
  sender.pump();
  EXPECT_TRUE(sender.finished());
  EXPECT_EQ(sender.report(1.0).failed_streams, 1u);
}

TEST(PerfReceiver, ReadsEveryStreamToItsEndAndCountsWrongBytes) {
  FakeStack stack;
  PerfReceiver receiver(*stack.sockets, 5001, 2, true);
  ASSERT_TRUE(receiver.start().ok());
  std::uint32_t listener[2];
  for (int r = 0; r < 2; ++r) listener[r] = stack.replica(r).answer_open(stack.replica(r).take_open());
  EXPECT_EQ(receiver.listen_error(), 0);
  const std::uint32_t clean = stack.replica(0).accept_one(listener[0], 40001);
  const std::uint32_t broken = stack.replica(1).accept_one(listener[1], 40002);
  constexpr std::size_t kBytes = 3000;
  auto good = pattern(0, kBytes);
  auto bad = good;
  bad[2500] ^= std::byte{0xff};
  ASSERT_EQ(stack.replica(0).receive_ring(clean).write(good), kBytes);
  ASSERT_EQ(stack.replica(1).receive_ring(broken).write(bad), kBytes);
  EXPECT_TRUE(receiver.pump());
  EXPECT_FALSE(receiver.finished());
  stack.replica(0).control(clean).flags.fetch_or(formats::kTcpPeerClosed);
  stack.replica(1).control(broken).flags.fetch_or(formats::kTcpPeerClosed);
  receiver.pump();
  EXPECT_TRUE(receiver.finished());
  const PerfReport report = receiver.report(1.0);
  EXPECT_EQ(report.bytes, 2 * kBytes);
  EXPECT_EQ(report.mismatches, 1u);
  EXPECT_EQ(report.first_mismatch, 2500u);
  ASSERT_EQ(report.sha256.size(), 2u);
  EXPECT_EQ(report.sha256[0], sha256_of(good));
  EXPECT_EQ(report.sha256[1], sha256_of(bad));
  // Each connection was closed once read to its end.
  EXPECT_NE(stack.replica(0).take_requests(clean) & formats::kTcpRequestClose, 0u);
}

TEST(EchoServer, EchoesEveryConnectionAndHoldsBackWhileTheSendRingIsFull) {
  FakeStack stack;
  EchoServer server(*stack.sockets, 7, 16);
  ASSERT_TRUE(server.start().ok());
  std::uint32_t listener[2];
  for (int r = 0; r < 2; ++r) listener[r] = stack.replica(r).answer_open(stack.replica(r).take_open());
  EXPECT_TRUE(server.listening());
  const std::uint32_t first = stack.replica(0).accept_one(listener[0], 40001);
  const std::uint32_t second = stack.replica(1).accept_one(listener[1], 40002);
  const auto hello = pattern(0, 100), world = pattern(7, 200);
  ASSERT_EQ(stack.replica(0).receive_ring(first).write(hello), 100u);
  ASSERT_EQ(stack.replica(1).receive_ring(second).write(world), 200u);
  EXPECT_TRUE(server.pump());
  EXPECT_EQ(server.connections(), 2u);
  std::vector<std::byte> echoed(200);
  ASSERT_EQ(stack.replica(0).send_ring(first).read(echoed), 100u);
  EXPECT_TRUE(std::equal(hello.begin(), hello.end(), echoed.begin()));
  ASSERT_EQ(stack.replica(1).send_ring(second).read(echoed), 200u);
  EXPECT_EQ(echoed, world);

  // The client stops reading its echoes: the send ring fills, and the server stops reading too.
  const auto big = pattern(0, sockets::testing::kRingBytes);
  ASSERT_EQ(stack.replica(0).receive_ring(first).write(big), big.size());
  server.pump();
  ASSERT_EQ(stack.replica(0).receive_ring(first).write(big), big.size());
  server.pump();
  EXPECT_EQ(stack.replica(0).send_ring(first).readable(), sockets::testing::kRingBytes);
  EXPECT_GT(stack.replica(0).receive_ring(first).free_space(), 0u);  // it read one more ring's worth
  ASSERT_EQ(stack.replica(0).receive_ring(first).write(big), big.size());
  server.pump();
  EXPECT_EQ(stack.replica(0).receive_ring(first).free_space(), 0u);  // ... and no more after that

  // The client reads again and closes: everything comes back, then the server closes.
  std::vector<std::byte> all;
  stack.replica(0).control(first).flags.fetch_or(formats::kTcpPeerClosed);
  for (int round = 0; round < 20 && server.connections() == 2; ++round) {
    auto& ring = stack.replica(0).send_ring(first);
    std::vector<std::byte> chunk(ring.readable());
    ASSERT_EQ(ring.read(chunk), chunk.size());
    all.insert(all.end(), chunk.begin(), chunk.end());
    server.pump();
  }
  auto& ring = stack.replica(0).send_ring(first);
  std::vector<std::byte> rest(ring.readable());
  ASSERT_EQ(ring.read(rest), rest.size());
  all.insert(all.end(), rest.begin(), rest.end());
  EXPECT_EQ(all.size(), 3 * big.size());
  EXPECT_EQ(count_pattern_mismatches(0, std::span(all).first(big.size()), nullptr), 0u);
  EXPECT_EQ(server.connections(), 1u);
  EXPECT_NE(stack.replica(0).take_requests(first) & formats::kTcpRequestClose, 0u);
  EXPECT_EQ(server.accepted(), 2u);
}

}  // namespace
}  // namespace flotilla::apps

// Flotilla's TCP against the Linux kernel's, over the embedded veth pair (root: skipped without).
// Flotilla's end is flotilla-perf or flotilla-tcp-echo running as stack components on the native
// socket API; the kernel's end is tests/support/kernel_tcp.hpp on a thread in the peer namespace.
// Every transfer is checked with SHA-256 against the bytes the sender generated.
//
// Sizes: FLOTILLA_TCP_TEST_MIB (default 256) sets the bulk transfers' size. Bad links come from the
// driver's link emulation (drivers/impaired_port.hpp): this machine's kernel has no sch_netem.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "tests/stack/stack_fixture.hpp"
#include "components/wire/tcp.hpp"
#include "tests/support/kernel_tcp.hpp"

namespace flotilla::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::uint16_t kPort = 5001;

std::uint64_t bulk_bytes() {
  const char* text = std::getenv("FLOTILLA_TCP_TEST_MIB");
  const std::uint64_t mib = text != nullptr && *text != '\0' ? std::strtoull(text, nullptr, 10) : 256;
  return (mib == 0 ? 256 : mib) << 20;
}

// What flotilla-perf wrote to its --report file, once it is there.
struct PerfOutcome {
  bool present = false;
  std::uint64_t bytes = 0;
  std::uint64_t failed_streams = 0;
  std::uint64_t mismatches = 0;
  std::vector<std::string> sha256;
  std::vector<int> errors;
  std::vector<int> replicas;  // by stream: the replica that carried it, -1 for none
  std::uint64_t placed_by_name = 0;
  std::uint64_t placed_by_fallback = 0;
  std::string line;
};

PerfOutcome read_report(const std::string& path) {
  PerfOutcome outcome;
  std::ifstream file(path);
  if (!std::getline(file, outcome.line)) return outcome;
  const auto report = nlohmann::json::parse(outcome.line, nullptr, false);
  if (!report.is_object()) return outcome;
  outcome.present = true;
  outcome.bytes = report.value("bytes", std::uint64_t{0});
  outcome.failed_streams = report.value("failed_streams", std::uint64_t{0});
  outcome.mismatches = report.value("mismatches", std::uint64_t{0});
  outcome.sha256 = report.value("sha256", std::vector<std::string>{});
  outcome.errors = report.value("errors", std::vector<int>{});
  outcome.replicas = report.value("replicas", std::vector<int>{});
  outcome.placed_by_name = report.value("placed_by_name", std::uint64_t{0});
  outcome.placed_by_fallback = report.value("placed_by_fallback", std::uint64_t{0});
  return outcome;
}

enum class Impairment { clean, loss, delay, reorder };

// Loss and reordering hit both directions, so each test direction exercises both ends' recovery;
// the delay is added to what the peer sends (25 ms more round trip), as netem on its veth would.
std::string impairment_spec(Impairment impairment) {
  switch (impairment) {
    case Impairment::clean: return "";
    case Impairment::loss: return "loss=1%,direction=both";
    case Impairment::delay: return "delay=25ms,direction=rx";
    case Impairment::reorder: return "reorder=25%,gap=2ms,direction=both";
  }
  return "";
}

const char* impairment_name(Impairment impairment) {
  switch (impairment) {
    case Impairment::clean: return "Clean";
    case Impairment::loss: return "Loss1Percent";
    case Impairment::delay: return "Delay25ms";
    case Impairment::reorder: return "Reorder";
  }
  return "?";
}

class TcpStack : public StackTest {
 protected:
  void SetUp() override {
    StackTest::SetUp();
    if (IsSkipped()) return;
    char pattern[] = "/tmp/flotilla-tcp-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
  }
  void TearDown() override {
    StackTest::TearDown();
    if (!folder_.empty()) std::filesystem::remove_all(folder_);
  }

  std::string report_path() const { return folder_ + "/perf.json"; }
  std::string peer() const { return names_.peer_address; }

  // The stack with flotilla-perf (args) and flotilla-tcp-echo on port 7, on a link impaired by
  // the driver's link emulation (`impair`: drivers/impaired_port.hpp; this kernel has no netem).
  // With `name_placement` the stack has the name fleet too, and flotilla-perf places its
  // connections by lookups of /net/tcp there.
  [[nodiscard]] ::testing::AssertionResult start_with_perf(const std::vector<std::string>& perf_args,
                                                           std::size_t slots = 16, const std::string& impair = "",
                                                           bool name_placement = false) {
    std::vector<std::string> args = perf_args;
    args.insert(args.end(), {"--report", report_path()});
    return start("pass all",
                 tcp_app_config("perf", "flotilla-perf", args, slots, name_placement) +
                     tcp_app_config("tcpecho", "flotilla-tcp-echo", {"--port", "7", "--channels", "tcp0-tcpecho,tcp1-tcpecho"}) +
                     (name_placement ? recovery::kNameFleetConfig : ""),
                 "af_xdp", impair);
  }

  // The name fleet has both replicas as members of /net/tcp (what a lookup picks from).
  bool replicas_named() const {
    const std::string table = cli("names").output;
    return table.find("/net/tcp/0:") != std::string::npos && table.find("/net/tcp/1:") != std::string::npos &&
           table.find("\n/net/tcp/0 ") != std::string::npos && table.find("\n/net/tcp/1 ") != std::string::npos;
  }

  PerfOutcome wait_for_report(std::chrono::milliseconds deadline) {
    PerfOutcome outcome;
    wait_for([&] { return (outcome = read_report(report_path())).present; }, deadline);
    return outcome;
  }

  // Fails the test with the replicas' counters, for diagnosis.
  std::string tcp_counters() const {
    std::string text;
    for (const auto& [component, values] : all_counters()) {
      if (component.rfind("tcp", 0) != 0 && component != "ip") continue;
      text += component + ":";
      for (const auto& [name, value] : values) text += " " + name + "=" + std::to_string(value);
      text += "\n";
    }
    return text;
  }

  std::string folder_;
};

// ---- bulk transfers under impairments -------------------------------------------------------

class TcpBulk : public TcpStack, public ::testing::WithParamInterface<Impairment> {};

TEST_P(TcpBulk, FlotillaSendsToTheKernel) {
  const std::uint64_t bytes = bulk_bytes();
  ASSERT_TRUE(start_with_perf({"--role", "send", "--peer", "10.79.0.1:5001", "--bytes", std::to_string(bytes),
                               "--connect-retry", "20"},
                              16, impairment_spec(GetParam())));
  const auto sink = in_namespace(names_.peer_namespace, [&] {
    return kernel_sink(KernelSinkOptions{.port = kPort, .deadline = 240s});
  });
  ASSERT_EQ(sink.size(), 1u) << tcp_counters();
  EXPECT_FALSE(sink[0].timed_out) << tcp_counters();
  EXPECT_EQ(sink[0].error, 0);
  EXPECT_EQ(sink[0].bytes, bytes) << tcp_counters();
  EXPECT_EQ(sink[0].sha256, pattern_sha256(bytes));
  const PerfOutcome report = wait_for_report(20s);
  ASSERT_TRUE(report.present) << tcp_counters();
  EXPECT_EQ(report.failed_streams, 0u) << report.line;
  std::printf("%s\nloss recovery: retransmits %lld, fast retransmits %lld, timeouts %lld\n", report.line.c_str(),
              static_cast<long long>(counter("tcp0", "retransmits") + counter("tcp1", "retransmits")),
              static_cast<long long>(counter("tcp0", "fast_retransmits") + counter("tcp1", "fast_retransmits")),
              static_cast<long long>(counter("tcp0", "retransmission_timeouts") +
                                     counter("tcp1", "retransmission_timeouts")));
}

TEST_P(TcpBulk, TheKernelSendsToFlotilla) {
  const std::uint64_t bytes = bulk_bytes();
  ASSERT_TRUE(start_with_perf({"--role", "receive", "--port", "5001", "--verify"}, 16, impairment_spec(GetParam())));
  // The receiver listens once the replicas have its listener; retry until then.
  SourceResult source;
  ASSERT_TRUE(wait_for([&] {
    source = in_namespace(names_.peer_namespace, [&] {
      return kernel_source(KernelSourceOptions{.address = "10.79.0.2", .port = kPort, .bytes = bytes,
                                               .deadline = 240s});
    });
    return source.connected;
  }, 20s)) << "never connected: " << std::strerror(source.sent.error) << "\n" << tcp_counters();
  EXPECT_EQ(source.sent.bytes, bytes);
  EXPECT_EQ(source.sent.error, 0) << std::strerror(source.sent.error);
  const PerfOutcome report = wait_for_report(60s);
  ASSERT_TRUE(report.present) << tcp_counters();
  EXPECT_EQ(report.bytes, bytes) << report.line;
  EXPECT_EQ(report.mismatches, 0u) << report.line;
  ASSERT_EQ(report.sha256.size(), 1u) << report.line;
  EXPECT_EQ(report.sha256[0], source.sent.sha256);
}

INSTANTIATE_TEST_SUITE_P(Links, TcpBulk,
                         ::testing::Values(Impairment::clean, Impairment::loss, Impairment::delay, Impairment::reorder),
                         [](const auto& info) { return std::string(impairment_name(info.param)); });

// ---- connection behaviour --------------------------------------------------------------------

TEST_F(TcpStack, AThousandConcurrentConnections) {
  constexpr std::size_t kConnections = 1000;
  constexpr std::uint64_t kBytes = 64 * 1024;
  ASSERT_TRUE(start_with_perf({"--role", "send", "--peer", "10.79.0.1:5001", "--bytes", std::to_string(kBytes), "--streams",
                               std::to_string(kConnections), "--connect-retry", "20"},
                              kConnections / 2 + 64));
  const auto sink = in_namespace(names_.peer_namespace, [&] {
    return kernel_sink(KernelSinkOptions{.port = kPort, .connections = kConnections, .deadline = 180s});
  });
  ASSERT_EQ(sink.size(), kConnections) << tcp_counters();
  const std::string expected = pattern_sha256(kBytes);
  std::size_t intact = 0;
  for (const StreamResult& stream : sink) intact += stream.bytes == kBytes && stream.sha256 == expected ? 1 : 0;
  EXPECT_EQ(intact, kConnections) << tcp_counters();
  const PerfOutcome report = wait_for_report(30s);
  EXPECT_EQ(report.failed_streams, 0u) << report.line.substr(0, 400);
}

TEST_F(TcpStack, ConnectionRefusedReachesTheApplication) {
  ASSERT_TRUE(start_with_perf({"--role", "send", "--peer", "10.79.0.1:5999", "--bytes", "1000"}));
  const PerfOutcome report = wait_for_report(30s);
  ASSERT_TRUE(report.present) << tcp_counters();
  EXPECT_EQ(report.failed_streams, 1u);
  ASSERT_EQ(report.errors.size(), 1u) << report.line;
  EXPECT_EQ(report.errors[0], ECONNREFUSED) << report.line;
}

TEST_F(TcpStack, ResetInTheMiddleOfATransferReachesTheApplication) {
  ASSERT_TRUE(start_with_perf({"--role", "send", "--peer", "10.79.0.1:5001", "--bytes", std::to_string(64u << 20),
                               "--connect-retry", "20"}));
  const auto sink = in_namespace(names_.peer_namespace, [&] {
    return kernel_sink(KernelSinkOptions{.port = kPort, .deadline = 60s, .reset_after = 4u << 20});
  });
  ASSERT_EQ(sink.size(), 1u);
  EXPECT_TRUE(sink[0].reset);
  const PerfOutcome report = wait_for_report(30s);
  ASSERT_TRUE(report.present) << tcp_counters();
  EXPECT_EQ(report.failed_streams, 1u) << report.line;
  ASSERT_EQ(report.errors.size(), 1u) << report.line;
  EXPECT_EQ(report.errors[0], ECONNRESET) << report.line;
}

TEST_F(TcpStack, HalfCloseStillDeliversTheEcho) {
  constexpr std::uint64_t kBytes = 8u << 20;
  ASSERT_TRUE(start_with_perf({"--role", "receive", "--port", "5001"}));
  SourceResult source;
  ASSERT_TRUE(wait_for([&] {
    source = in_namespace(names_.peer_namespace, [&] {
      return kernel_source(KernelSourceOptions{.address = "10.79.0.2", .port = 7, .bytes = kBytes,
                                               .deadline = 60s, .half_close = true});
    });
    return source.connected;
  }, 20s)) << tcp_counters();
  EXPECT_EQ(source.sent.bytes, kBytes);
  EXPECT_EQ(source.echo.error, 0) << std::strerror(source.echo.error);
  EXPECT_EQ(source.echo.bytes, kBytes) << tcp_counters();
  EXPECT_EQ(source.echo.sha256, source.sent.sha256);
}

TEST_F(TcpStack, APeerThatStopsReadingAndResumesLosesNothing) {
  const std::uint64_t bytes = 32u << 20;
  ASSERT_TRUE(start_with_perf({"--role", "send", "--peer", "10.79.0.1:5001", "--bytes", std::to_string(bytes),
                               "--connect-retry", "20"}));
  // A small receive buffer fills while the reader sleeps: the window closes, the sender probes.
  const auto sink = in_namespace(names_.peer_namespace, [&] {
    return kernel_sink(KernelSinkOptions{.port = kPort, .deadline = 120s, .pause_after = 4u << 20,
                                         .pause = 3000ms, .receive_buffer = 64 * 1024});
  });
  ASSERT_EQ(sink.size(), 1u);
  EXPECT_EQ(sink[0].bytes, bytes) << tcp_counters();
  EXPECT_EQ(sink[0].sha256, pattern_sha256(bytes));
}

// ---- faults under a transfer -----------------------------------------------------------------

TEST_F(TcpStack, ATransferSurvivesFilterAndIpCrashes) {
  const std::uint64_t bytes = bulk_bytes();
  ASSERT_TRUE(start_with_perf({"--role", "send", "--peer", "10.79.0.1:5001", "--bytes", std::to_string(bytes),
                               "--connect-retry", "20"}));
  auto sink = std::async(std::launch::async, [&] {
    return in_namespace(names_.peer_namespace, [&] {
      return kernel_sink(KernelSinkOptions{.port = kPort, .deadline = 240s});
    });
  });
  // Crash the filter a tenth of the way in and IP at a third, while bytes flow (1448 per segment).
  const std::int64_t segments = static_cast<std::int64_t>(bytes / 1448);
  auto sent = [&] { return counter("tcp0", "segments_to_ip") + counter("tcp1", "segments_to_ip"); };
  ASSERT_TRUE(wait_for([&] { return sent() > segments / 10; }, 60s)) << tcp_counters();
  ASSERT_EQ(cli("inject pf crash").exit_code, 0);
  ASSERT_TRUE(wait_for([&] { return sent() > segments / 3; }, 60s)) << tcp_counters();
  ASSERT_EQ(cli("inject ip crash").exit_code, 0);
  const auto streams = sink.get();
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_EQ(streams[0].bytes, bytes) << tcp_counters() << events();
  EXPECT_EQ(streams[0].sha256, pattern_sha256(bytes));
  // Both really restarted (their second incarnations ran).
  EXPECT_NE(events().find("pf#2"), std::string::npos) << events();
  EXPECT_NE(events().find("ip#2"), std::string::npos) << events();
}

TEST_F(TcpStack, AReplicaCrashEndsOnlyItsOwnConnections) {
  constexpr std::size_t kConnections = 20;
  // Every stream sends until this many seconds after flotilla-perf started, so all are still
  // sending when tcp0 crashes, whenever each connected; the sink checks what each delivered.
  constexpr int kSeconds = 10;
  // Each connection is placed by its own lookup of /net/tcp in the name fleet.
  ASSERT_TRUE(start_with_perf({"--role", "send", "--peer", "10.79.0.1:5001", "--bytes", "0", "--seconds",
                               std::to_string(kSeconds), "--streams", std::to_string(kConnections), "--connect-retry", "30"},
                              // Room for a fair pick's uneven share, and for the slots of refused attempts that
                              // the replica has not taken back yet.
                              2 * kConnections, "", true));
  // Until the sink listens every attempt is refused and tried again (every 100 ms) with a new
  // lookup. Attempts placed before the fleet knew the replicas fell back to round robin; two rounds
  // of refusals after it does, every stream's attempt is one the fleet placed.
  ASSERT_TRUE(wait_for([&] { return replicas_named(); }, 20s)) << cli("names").output;
  const auto refusals = [&] { return counter("tcp0", "resets_received") + counter("tcp1", "resets_received"); };
  const std::int64_t refused_before = refusals();
  ASSERT_TRUE(wait_for([&] { return refusals() >= refused_before + 2 * static_cast<std::int64_t>(kConnections); }, 20s))
      << tcp_counters();
  std::atomic<std::size_t> accepted{0};
  auto sink = std::async(std::launch::async, [&] {
    return in_namespace(names_.peer_namespace, [&] {
      return kernel_sink(KernelSinkOptions{.port = kPort, .connections = kConnections, .accepted = &accepted,
                                           .deadline = 180s});
    });
  });
  // Every stream is connected before the crash, so that each is either cut or finishes.
  ASSERT_TRUE(wait_for([&] { return accepted.load() == kConnections; }, 30s)) << tcp_counters();
  // Both replicas carry connections (20 fair picks all alike: 2 in a million); crash tcp0 mid-way.
  ASSERT_TRUE(wait_for([&] { return counter("tcp0", "segments_to_ip") > 2000 && counter("tcp1", "segments_to_ip") > 2000; },
                       60s)) << tcp_counters();
  ASSERT_EQ(cli("inject tcp0 crash").exit_code, 0);
  const auto streams = sink.get();
  const PerfOutcome report = wait_for_report(30s);
  ASSERT_TRUE(report.present);
  RecordProperty("report", report.line);
  ASSERT_EQ(streams.size(), kConnections) << report.line << "\n" << tcp_counters();
  ASSERT_EQ(report.replicas.size(), kConnections) << report.line;
  EXPECT_GE(report.placed_by_name, kConnections) << report.line;
  const auto on_tcp0 = static_cast<std::size_t>(std::count(report.replicas.begin(), report.replicas.end(), 0));
  const auto on_tcp1 = static_cast<std::size_t>(std::count(report.replicas.begin(), report.replicas.end(), 1));
  EXPECT_EQ(on_tcp0 + on_tcp1, kConnections) << report.line;
  EXPECT_GT(on_tcp0, 0u) << report.line;
  EXPECT_GT(on_tcp1, 0u) << report.line;

  std::size_t intact = 0;
  std::size_t cut = 0;
  for (const StreamResult& stream : streams) {
    if (stream.error == 0 && stream.bytes > 0 && stream.sha256 == pattern_sha256(stream.bytes)) {
      ++intact;
    } else {
      ++cut;
    }
  }
  EXPECT_EQ(intact, on_tcp1) << tcp_counters();
  EXPECT_EQ(cut, on_tcp0) << tcp_counters();
  // Exactly the streams on tcp0 failed, each with ECONNRESET.
  EXPECT_EQ(report.failed_streams, on_tcp0) << report.line;
  ASSERT_EQ(report.errors.size(), kConnections) << report.line;
  for (std::size_t i = 0; i < kConnections; ++i) {
    EXPECT_EQ(report.errors[i], report.replicas[i] == 0 ? ECONNRESET : 0) << "stream " << i << ": " << report.line;
  }

  // The restarted replica serves new connections: echo connections spread over both replicas.
  const std::int64_t before = counter("tcp0", "segments_from_ip");
  for (int i = 0; i < 16; ++i) {
    const auto echo = in_namespace(names_.peer_namespace, [&] {
      return kernel_source(KernelSourceOptions{.address = "10.79.0.2", .port = 7, .bytes = 100'000,
                                               .deadline = 20s, .half_close = true});
    });
    EXPECT_TRUE(echo.connected);
    EXPECT_EQ(echo.echo.sha256, echo.sent.sha256) << tcp_counters();
  }
  EXPECT_GT(counter("tcp0", "segments_from_ip"), before);
}

// ---- hostile segments ------------------------------------------------------------------------

namespace hostile {

// Sends one TCP segment (header as given, checksum filled unless `break_checksum`) from the peer
// namespace through a raw socket; the kernel adds the IPv4 header.
bool send_raw(const std::string& destination, std::span<const std::byte> segment) {
  const int fd = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  ::inet_pton(AF_INET, destination.c_str(), &address.sin_addr);
  const ssize_t sent = ::sendto(fd, segment.data(), segment.size(), 0, reinterpret_cast<sockaddr*>(&address),
                                sizeof(address));
  ::close(fd);
  return sent == static_cast<ssize_t>(segment.size());
}

std::vector<std::byte> segment(std::uint16_t source_port, std::uint8_t flags, std::size_t payload = 0,
                               std::span<const std::byte> options = {}) {
  std::vector<std::byte> out(wire::tcp_header_length(options.size()) + payload, std::byte{0x5a});
  const wire::TcpHeader header{.source_port = source_port,
                               .destination_port = 7,
                               .sequence = 0x12345678,
                               .acknowledgment = 0x9abcdef0,
                               .flags = flags,
                               .window = 65535,
                               .urgent_pointer = 0,
                               .options = options};
  wire::emit_tcp(out, header, 0x0a4f0001, 0x0a4f0002, payload);
  return out;
}

}  // namespace hostile

TEST_F(TcpStack, HostileSegmentsAreCountedAndCrashNothing) {
  ASSERT_TRUE(start_with_perf({"--role", "receive", "--port", "5001"}));
  const bool all_sent = in_namespace(names_.peer_namespace, [&] {
    bool ok = true;
    for (std::uint16_t round = 0; round < 8; ++round) {
      const std::uint16_t port = static_cast<std::uint16_t>(40000 + round * 16);
      auto bad_checksum = hostile::segment(port, wire::kTcpSyn, 10);
      bad_checksum[16] ^= std::byte{0xff};
      ok &= hostile::send_raw("10.79.0.2", bad_checksum);
      ok &= hostile::send_raw("10.79.0.2", hostile::segment(port + 1, wire::kTcpSyn | wire::kTcpFin));
      ok &= hostile::send_raw("10.79.0.2", hostile::segment(port + 2, wire::kTcpSyn | wire::kTcpRst));
      ok &= hostile::send_raw("10.79.0.2", hostile::segment(port + 3, 0));
      // A data offset of 60 bytes on a 20-byte segment.
      auto short_header = hostile::segment(port + 4, wire::kTcpSyn);
      short_header[12] = std::byte{0xf0};
      ok &= hostile::send_raw("10.79.0.2", short_header);
      // An option whose length runs past the header.
      const std::byte overflowing[4] = {std::byte{wire::kTcpOptionMss}, std::byte{40}, std::byte{5}, std::byte{0xb4}};
      auto bad_option = hostile::segment(port + 5, wire::kTcpSyn, 0, overflowing);
      wire::TcpSegment::unchecked(bad_option).fill_checksum(0x0a4f0001, 0x0a4f0002);
      ok &= hostile::send_raw("10.79.0.2", bad_option);
      // A RST and an ACK for connections that do not exist.
      ok &= hostile::send_raw("10.79.0.2", hostile::segment(port + 6, wire::kTcpRst));
      ok &= hostile::send_raw("10.79.0.2", hostile::segment(port + 7, wire::kTcpAck, 100));
    }
    return ok;
  });
  ASSERT_TRUE(all_sent);
  auto total = [&](const char* name) {
    return std::max<std::int64_t>(counter("tcp0", name), 0) + std::max<std::int64_t>(counter("tcp1", name), 0);
  };
  ASSERT_TRUE(wait_for([&] { return total("segments_from_ip") >= 48; }, 10s)) << tcp_counters();
  EXPECT_EQ(total("bad_checksum"), 8) << tcp_counters();
  EXPECT_EQ(total("bad_flags"), 24) << tcp_counters();
  EXPECT_EQ(total("bad_header") + total("bad_options"), 16) << tcp_counters();
  EXPECT_GE(total("resets_sent"), 8) << tcp_counters();  // the ACKs for nothing are answered
  // Nothing restarted, and the replicas still serve: an echo round trip through each.
  EXPECT_EQ(events().find("tcp0#2"), std::string::npos) << events();
  EXPECT_EQ(events().find("tcp1#2"), std::string::npos) << events();
  for (int i = 0; i < 4; ++i) {
    const auto echo = in_namespace(names_.peer_namespace, [&] {
      return kernel_source(KernelSourceOptions{.address = "10.79.0.2", .port = 7, .bytes = 10'000,
                                               .deadline = 20s, .half_close = true});
    });
    EXPECT_EQ(echo.echo.sha256, echo.sent.sha256);
  }
}

}  // namespace
}  // namespace flotilla::testing

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
#include <random>
#include <string>
#include <thread>
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

  // Injects `count` faults into `component`, each at a random moment 100-400 ms after the previous
  // incarnation came back (crash, abort or hang, picked at random), and waits for each restart.
  // Returns "" or what went wrong.
  std::string inject_faults(const std::string& component, int count, std::uint32_t seed) const {
    std::mt19937 random(seed);
    const char* kinds[] = {"crash", "abort", "hang"};
    for (int i = 0; i < count; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100 + random() % 300));
      const char* kind = kinds[random() % 3];
      const CommandOutcome injected = cli("inject " + component + " " + kind);
      if (injected.exit_code != 0) return "inject " + component + " " + kind + ": " + injected.output;
      // Incarnations count from 1: the i-th fault's successor is #(i + 2).
      const std::string successor = component + "#" + std::to_string(i + 2);
      if (!wait_for([&] { return events().find(successor) != std::string::npos; }, 10s)) {
        return "no " + successor + " after " + kind + "\n" + events();
      }
    }
    return "";
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

// Connects from the kernel to the stack's `port` until a connection is made (a SYN that IP hands
// to a replica without the listener is refused), then sends for `duration`.
SourceResult kernel_source_retrying(const std::string& ns, std::uint16_t port, std::chrono::milliseconds duration) {
  const auto until = std::chrono::steady_clock::now() + 30s;
  SourceResult source;
  while (std::chrono::steady_clock::now() < until) {
    source = in_namespace(ns, [&] {
      return kernel_source(KernelSourceOptions{.address = "10.79.0.2", .port = port, .bytes = UINT64_MAX / 2,
                                               .deadline = 120s, .duration = duration});
    });
    if (source.connected) return source;
    std::this_thread::sleep_for(20ms);
  }
  return source;
}

// Issue 15's crash test: 20 streams each way, all on tcp0 (flotilla-perf sends to the kernel and
// receives from it through channels to tcp0 alone), while tcp0 is crashed, aborted or hung 20
// times at random moments. Every stream completes with its SHA-256 matching and none sees an
// error: unacknowledged bytes in the send rings and unread ones in the receive rings survive
// each crash, and so does the listener with its accepted connections.
TEST_F(TcpStack, AReplicaCrashedTwentyTimesLosesNoConnection) {
  constexpr std::size_t kStreams = 20;
  constexpr int kCrashes = 20;
  constexpr auto kSending = 20s;
  const std::uint32_t seed = static_cast<std::uint32_t>(::time(nullptr));
  RecordProperty("seed", static_cast<int>(seed));
  std::vector<std::string> send_args = {"--role", "send", "--peer", "10.79.0.1:5001", "--bytes", "0", "--seconds",
                                        std::to_string(std::chrono::seconds(kSending).count()), "--streams",
                                        std::to_string(kStreams), "--connect-retry", "20", "--channels", "tcp0-perf",
                                        "--report", report_path()};
  std::vector<std::string> receive_args = {"--role", "receive", "--port", "5002", "--verify", "--streams",
                                           std::to_string(kStreams), "--channels", "tcp0-perfin", "--report",
                                           folder_ + "/perfin.json"};
  ASSERT_TRUE(start("pass all",
                    tcp_app_config("perf", "flotilla-perf", send_args, kStreams + 8) +
                        tcp_app_config("perfin", "flotilla-perf", receive_args, kStreams + 8) +
                        tcp_app_config("tcpecho", "flotilla-tcp-echo",
                                       {"--port", "7", "--channels", "tcp0-tcpecho,tcp1-tcpecho"})));
  std::atomic<std::size_t> accepted{0};
  auto sink = std::async(std::launch::async, [&] {
    return in_namespace(names_.peer_namespace, [&] {
      return kernel_sink(KernelSinkOptions{.port = kPort, .connections = kStreams, .accepted = &accepted,
                                           .deadline = 120s});
    });
  });
  std::vector<std::future<SourceResult>> sources;
  for (std::size_t i = 0; i < kStreams; ++i) {
    sources.push_back(std::async(std::launch::async, [&] {
      return kernel_source_retrying(names_.peer_namespace, 5002, kSending);
    }));
  }
  // Every stream is connected and moving before the first fault.
  ASSERT_TRUE(wait_for([&] { return accepted.load() == kStreams; }, 30s)) << tcp_counters();
  ASSERT_TRUE(wait_for([&] { return counter("tcp0", "bytes_delivered") > (64 << 20); }, 30s)) << tcp_counters();
  EXPECT_EQ(inject_faults("tcp0", kCrashes, seed), "") << "seed " << seed;

  const auto streams = sink.get();
  ASSERT_EQ(streams.size(), kStreams) << tcp_counters();
  for (std::size_t i = 0; i < kStreams; ++i) {
    EXPECT_EQ(streams[i].error, 0) << "to the kernel, stream " << i << ", seed " << seed;
    EXPECT_GT(streams[i].bytes, 0u) << i;
    EXPECT_EQ(streams[i].sha256, pattern_sha256(streams[i].bytes)) << "to the kernel, stream " << i;
  }
  std::vector<std::string> sent_hashes;
  for (auto& source : sources) {
    const SourceResult result = source.get();
    EXPECT_TRUE(result.connected);
    EXPECT_EQ(result.sent.error, 0) << std::strerror(result.sent.error) << ", seed " << seed;
    EXPECT_FALSE(result.sent.timed_out);
    sent_hashes.push_back(result.sent.sha256);
  }
  const PerfOutcome sent = wait_for_report(30s);
  ASSERT_TRUE(sent.present) << tcp_counters();
  EXPECT_EQ(sent.failed_streams, 0u) << sent.line;
  for (const int error : sent.errors) EXPECT_EQ(error, 0) << sent.line;
  PerfOutcome received;
  ASSERT_TRUE(wait_for([&] { return (received = read_report(folder_ + "/perfin.json")).present; }, 60s))
      << tcp_counters();
  EXPECT_EQ(received.failed_streams, 0u) << received.line;
  EXPECT_EQ(received.mismatches, 0u) << received.line;
  std::vector<std::string> received_hashes = received.sha256;
  std::sort(sent_hashes.begin(), sent_hashes.end());
  std::sort(received_hashes.begin(), received_hashes.end());
  EXPECT_EQ(received_hashes, sent_hashes) << received.line;
  // Every fault restarted tcp0 and its successor carried the connections on.
  EXPECT_NE(events().find("tcp0#" + std::to_string(kCrashes + 1)), std::string::npos) << events();
  EXPECT_GT(counter("tcp0", "restored"), 0) << tcp_counters();
  std::printf("%d faults of tcp0 (seed %u): %zu streams each way intact\n", kCrashes, seed, kStreams);

  // The echo listener, on both replicas, accepts new connections after the faults.
  const std::int64_t before = counter("tcp0", "segments_from_ip");
  for (int i = 0; i < 8; ++i) {
    const auto echo = in_namespace(names_.peer_namespace, [&] {
      return kernel_source(KernelSourceOptions{.address = "10.79.0.2", .port = 7, .bytes = 100'000,
                                               .deadline = 20s, .half_close = true});
    });
    EXPECT_TRUE(echo.connected);
    EXPECT_EQ(echo.echo.sha256, echo.sent.sha256) << tcp_counters();
  }
  EXPECT_GT(counter("tcp0", "segments_from_ip"), before);
}

// The poison rule: a connection whose data crashes tcp0 every time (FLOTILLA_TEST_CRASH_PORT, a
// test-only fault of flotilla-tcp) crashes it once as it arrives and once more as the successor
// brings it back; the third incarnation drops it alone, with a RST and an event-log line. The
// replica is not marked failed and its other connections carry on.
TEST_F(TcpStack, AConnectionThatCrashesItsReplicaEveryTimeIsDroppedAlone) {
  constexpr std::uint16_t kPoisonPort = 5003;
  constexpr std::size_t kStreams = 4;
  // The supervisor, and every replica it starts, inherits it.
  ::setenv("FLOTILLA_TEST_CRASH_PORT", std::to_string(kPoisonPort).c_str(), 1);
  const bool started = start(
      "pass all",
      tcp_app_config("perf", "flotilla-perf",
                     {"--role", "send", "--peer", "10.79.0.1:5001", "--bytes", "0", "--seconds", "8", "--streams",
                      std::to_string(kStreams), "--connect-retry", "20", "--channels", "tcp0-perf", "--report",
                      report_path()}) +
          tcp_app_config("perfin", "flotilla-perf",
                         {"--role", "receive", "--port", std::to_string(kPoisonPort), "--channels", "tcp0-perfin"}));
  ::unsetenv("FLOTILLA_TEST_CRASH_PORT");
  ASSERT_TRUE(started);
  std::atomic<std::size_t> accepted{0};
  auto sink = std::async(std::launch::async, [&] {
    return in_namespace(names_.peer_namespace, [&] {
      return kernel_sink(KernelSinkOptions{.port = kPort, .connections = kStreams, .accepted = &accepted,
                                           .deadline = 60s});
    });
  });
  ASSERT_TRUE(wait_for([&] { return accepted.load() == kStreams; }, 30s)) << tcp_counters();
  const SourceResult poisoned = kernel_source_retrying(names_.peer_namespace, kPoisonPort, 4s);
  ASSERT_TRUE(poisoned.connected);
  EXPECT_TRUE(poisoned.sent.reset) << std::strerror(poisoned.sent.error) << "\n" << events();

  const auto streams = sink.get();
  ASSERT_EQ(streams.size(), kStreams) << tcp_counters();
  for (const StreamResult& stream : streams) {
    EXPECT_EQ(stream.error, 0) << std::strerror(stream.error);
    EXPECT_GT(stream.bytes, 0u);
    EXPECT_EQ(stream.sha256, pattern_sha256(stream.bytes));
  }
  const PerfOutcome report = wait_for_report(30s);
  ASSERT_TRUE(report.present) << tcp_counters();
  EXPECT_EQ(report.failed_streams, 0u) << report.line;
  // Two crashes, then the drop: tcp0#3 runs on, is not failed, and said what it dropped.
  const std::string log = events();
  EXPECT_NE(log.find("tcp0#3"), std::string::npos) << log;
  EXPECT_EQ(log.find("tcp0#4"), std::string::npos) << log;
  EXPECT_NE(log.find("dropped 10.79.0.1:"), std::string::npos) << log;
  EXPECT_EQ(log.find("failed    tcp0"), std::string::npos) << log;
  EXPECT_EQ(counter("tcp0", "poisoned_dropped"), 1) << tcp_counters();
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

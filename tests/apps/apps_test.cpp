// Unmodified iperf3, lighttpd and redis (Debian's binaries) on Flotilla: each runs under
// `flotilla run` (libflotilla-preload.so) on a stack of the test's own with application seats,
// against the kernel's counterpart in the stack's peer namespace (and redis against a
// redis-benchmark on the same stack). Root: skipped without it, and
// when a program or the preload library is missing.
//
// FLOTILLA_APPS_TEST_SIDE=kernel runs the same programs on kernel sockets instead, in a second
// namespace joined to the peer namespace by a veth pair (tests/support/kernel_namespace.hpp): a
// check of the test itself and of the machine, with the same clients and the same assertions.
//
// Every program is bounded in time and stopped (its whole process group) however the test ends.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "apps/cli/program.hpp"
#include "apps/tcp_perf/perf_streams.hpp"
#include "recovery/default_config.hpp"
#include "tests/apps/apps_fixture.hpp"
#include "tests/stack/stack_fixture.hpp"
#include "tests/support/kernel_namespace.hpp"
#include "tests/support/kernel_tcp.hpp"

namespace flotilla::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kSmallFileBytes = 1024;
constexpr std::uint64_t kLargeFileBytes = 10u << 20;

struct HttpReply {
  int status = 0;
  std::string error;  // "" when the reply arrived whole
  std::uint64_t body_bytes = 0;
  std::string body_sha256;
};

// A minimal HTTP/1.0 GET over a kernel socket: the server closes after the reply. Reads to EOF,
// checks the body against Content-Length and hashes it. Gives up after 30 s.
HttpReply http_get(const std::string& address, std::uint16_t port, const std::string& path) {
  HttpReply reply;
  const int fd = connect_blocking(address, port, 10s);
  if (fd < 0) {
    reply.error = std::string("connect: ") + std::strerror(errno);
    return reply;
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    reply.error = std::string("send: ") + std::strerror(errno);
    ::close(fd);
    return reply;
  }
  const auto until = std::chrono::steady_clock::now() + 30s;
  std::string head;
  bool in_body = false;
  apps::Sha256 hash;
  std::vector<char> chunk(256 * 1024);
  for (;;) {
    if (std::chrono::steady_clock::now() > until) {
      reply.error = "no end after 30 s";
      break;
    }
    const ssize_t got = ::recv(fd, chunk.data(), chunk.size(), 0);
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      reply.error = std::string("recv: ") + std::strerror(errno);
      break;
    }
    std::string_view data(chunk.data(), static_cast<std::size_t>(got));
    if (!in_body) {
      head.append(data);
      const std::size_t end = head.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      data = std::string_view(head).substr(end + 4);
      in_body = true;
      reply.body_bytes += data.size();
      hash.update(std::as_bytes(std::span(data.data(), data.size())));
      head.resize(end);
      continue;
    }
    reply.body_bytes += data.size();
    hash.update(std::as_bytes(std::span(data.data(), data.size())));
  }
  ::close(fd);
  reply.body_sha256 = hash.finish();
  std::smatch match;
  if (std::regex_search(head, match, std::regex("^HTTP/1\\.[01] ([0-9]{3})"))) reply.status = std::stoi(match[1]);
  if (reply.error.empty() && !in_body) reply.error = "no end of headers";
  if (reply.error.empty() &&
      std::regex_search(head, match, std::regex("\r\nContent-Length: *([0-9]+)", std::regex::icase)) &&
      std::stoull(match[1]) != reply.body_bytes) {
    reply.error = "body of " + std::to_string(reply.body_bytes) + " bytes, Content-Length " + match[1].str();
  }
  return reply;
}

// The number at `pointer` (e.g. "/end/sum_received/bytes") in iperf3's -J report; nullopt when
// the report does not parse or has no number there.
std::optional<double> iperf_number(const nlohmann::json& report, const char* pointer) {
  const nlohmann::json::json_pointer at(pointer);
  if (!report.is_object() || !report.contains(at) || !report.at(at).is_number()) return std::nullopt;
  return report.at(at).get<double>();
}

std::string iperf_error(const nlohmann::json& report) {
  return report.is_object() && report.contains("error") && report["error"].is_string()
             ? report["error"].get<std::string>()
             : "";
}

// "NAME: 12345.67 requests per second" from redis-benchmark -q (0 when absent).
double redis_rate(const std::string& output, const std::string& name) {
  std::smatch match;
  return std::regex_search(output, match, std::regex(name + ": ([0-9.]+) requests per second")) ? std::stod(match[1]) : 0;
}

class Apps : public AppsTest {
 protected:
  void TearDown() override {
    redis_.reset();  // stopped while its stack still runs
    AppsTest::TearDown();
  }

  // Runs an iperf3 client with `arguments` (after -c ADDRESS) to completion; expects a clean end
  // with bytes received, and returns the rate received. The rate is printed, never asserted: it
  // depends on the machine's load, and speed claims live in the benchmarks (`./dev bench apps`).
  double run_iperf_client(const std::vector<std::string>& command) {
    Program client(command, file("iperf3-client.json"));
    const auto status = client.wait(60s);
    const std::string json = client.output();
    EXPECT_TRUE(status.has_value()) << "iperf3 client overran 60 s\n" << tail(json);
    EXPECT_EQ(status.value_or(-2), 0) << tail(json);
    const auto report = nlohmann::json::parse(json, nullptr, false);
    EXPECT_EQ(iperf_error(report), "");
    const auto received = iperf_number(report, "/end/sum_received/bits_per_second");
    const auto bytes = iperf_number(report, "/end/sum_received/bytes");
    EXPECT_TRUE(received.has_value() && bytes.has_value()) << "no end.sum_received in\n" << tail(json);
    EXPECT_GT(bytes.value_or(0), 0);
    std::printf("iperf3: %.2f Gbit/s received\n", received.value_or(0) / 1e9);
    return received.value_or(0);
  }

  // The program under test as iperf3 client against a kernel `iperf3 -s` in the peer namespace.
  void iperf_client_case(const std::vector<std::string>& options) {
    ASSERT_TRUE(start_apps({"iperf3"}));
    Program server(peer_command({"iperf3", "-s", "-p", "5201", "--forceflush"}), file("iperf3-server.log"));
    ASSERT_TRUE(wait_for([&] { return server.output().find("Server listening") != std::string::npos || !server.running(); }, 10s) &&
                server.running())
        << tail(server.output());
    std::vector<std::string> client{"iperf3", "-c", peer_address(), "-p", "5201", "-t", "3", "-J", "--connect-timeout", "5000"};
    client.insert(client.end(), options.begin(), options.end());
    run_iperf_client(app_command(client));
    EXPECT_TRUE(server.running()) << "the kernel's iperf3 server ended\n" << tail(server.output());
  }

  // redis-server as the program under test, on port 6379, keeping nothing on disk.
  std::vector<std::string> redis_server_command() const {
    return app_command({"redis-server", "--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no",
                        "--bind", "0.0.0.0", "--dir", folder_.string()});
  }

  // Starts redis-server as the program under test (it stays up in redis_), then runs
  // redis-benchmark -t set,get against it: on this stack too when `client_on_stack`, else in the
  // peer namespace. Expects a clean report.
  void run_redis_benchmark(bool client_on_stack, const std::string& requests, const std::string& connections,
                           std::chrono::seconds limit) {
    redis_.emplace(redis_server_command(), file("redis.log"));
    const std::string address = app_address();
    ASSERT_TRUE(wait_for_port(*redis_, address, 6379)) << tail(redis_->output());
    const std::vector<std::string> argv{"redis-benchmark", "-h", address, "-p", "6379", "-q", "-n", requests,
                                        "-c", connections, "-t", "set,get"};
    Program bench(client_on_stack ? app_command(argv) : peer_command(argv), file("redis-benchmark.log"));
    const auto status = bench.wait(limit);
    const std::string report = bench.output();
    std::printf("redis-benchmark: SET %.0f/s, GET %.0f/s\n", redis_rate(report, "SET"), redis_rate(report, "GET"));
    ASSERT_TRUE(status.has_value()) << "redis-benchmark overran\n" << tail(report);
    EXPECT_EQ(*status, 0) << tail(report);
    EXPECT_GT(redis_rate(report, "SET"), 0) << tail(report);
    EXPECT_GT(redis_rate(report, "GET"), 0) << tail(report);
    EXPECT_EQ(std::regex_search(report, std::regex("error", std::regex::icase)), false) << tail(report);
  }

  std::optional<Program> redis_;
};

TEST_F(Apps, Iperf3ClientSends) { iperf_client_case({}); }

TEST_F(Apps, Iperf3ClientReceives) { iperf_client_case({"-R"}); }

TEST_F(Apps, Iperf3ClientFourStreams) { iperf_client_case({"-P", "4"}); }

// Issue 15: iperf3 -P 4, unmodified, with every stream on tcp0 (FLOTILLA_TCP_REPLICA), while tcp0
// is crashed, aborted and hung: iperf3 ends cleanly, as if nothing had happened.
TEST_F(Apps, Iperf3FourStreamsSurviveCrashesOfTheirReplica) {
  if (side_ != Side::flotilla) GTEST_SKIP() << "a replica crash is Flotilla's";
  ASSERT_TRUE(start_apps({"iperf3"}));
  Program server(peer_command({"iperf3", "-s", "-p", "5201", "--forceflush"}), file("iperf3-server.log"));
  ASSERT_TRUE(wait_for([&] { return server.output().find("Server listening") != std::string::npos || !server.running(); }, 10s) &&
              server.running())
      << tail(server.output());
  Program client(app_command({"iperf3", "-c", peer_address(), "-p", "5201", "-t", "8", "-P", "4", "-J",
                              "--connect-timeout", "5000"}),
                 file("iperf3-client.json"), {{"FLOTILLA_TCP_REPLICA", "0"}});
  ASSERT_TRUE(wait_for([&] { return stack_.counter("tcp0", "bytes_acked") > (16 << 20); }, 15s)) << tail(client.output());
  const char* kinds[] = {"crash", "abort", "hang", "crash", "abort", "crash"};
  for (std::size_t i = 0; i < std::size(kinds); ++i) {
    std::this_thread::sleep_for(600ms);
    ASSERT_EQ(cli(std::string("inject tcp0 ") + kinds[i]).exit_code, 0);
    const std::string successor = "tcp0#" + std::to_string(i + 2);
    ASSERT_TRUE(wait_for([&] { return events().find(successor) != std::string::npos; }, 10s)) << events();
  }
  const auto status = client.wait(60s);
  const std::string json = client.output();
  ASSERT_TRUE(status.has_value()) << "iperf3 client overran 60 s\n" << tail(json);
  EXPECT_EQ(*status, 0) << tail(json);
  const auto report = nlohmann::json::parse(json, nullptr, false);
  EXPECT_EQ(iperf_error(report), "");
  EXPECT_GT(iperf_number(report, "/end/sum_received/bytes").value_or(0), 0) << tail(json);
  EXPECT_EQ(events().find("failed    tcp0"), std::string::npos) << events();
  std::printf("iperf3 -P 4 across %zu faults of tcp0: %.2f Gbit/s received\n", std::size(kinds),
              iperf_number(report, "/end/sum_received/bits_per_second").value_or(0) / 1e9);
}

TEST_F(Apps, Iperf3ServerWithKernelClient) {
  ASSERT_TRUE(start_apps({"iperf3"}));
  Program server(app_command({"iperf3", "-s", "-4", "-1", "-p", "5202", "--forceflush"}), file("iperf3-server.log"));
  ASSERT_TRUE(wait_for([&] { return server.output().find("Server listening") != std::string::npos || !server.running(); }, 10s) &&
              server.running())
      << tail(server.output());
  run_iperf_client(peer_command({"iperf3", "-c", app_address(), "-p", "5202", "-t", "3", "-J", "--connect-timeout", "5000"}));
  // -1: the server ends by itself after one test.
  EXPECT_EQ(server.wait(15s).value_or(-2), 0) << tail(server.output());
}

TEST_F(Apps, LighttpdServesFilesUnderWrk) {
  ASSERT_TRUE(start_apps({"lighttpd", "wrk"}));
  const auto root = file("www");
  std::filesystem::create_directory(root);
  for (const auto& [name, bytes] : {std::pair{"small.bin", kSmallFileBytes}, std::pair{"large.bin", kLargeFileBytes}}) {
    std::vector<std::byte> content(bytes);
    apps::fill_pattern(0, content);
    std::ofstream(root / name, std::ios::binary).write(reinterpret_cast<const char*>(content.data()),
                                                       static_cast<std::streamsize>(content.size()));
  }
  constexpr std::uint16_t kPort = 8080;
  std::ofstream(file("lighttpd.conf")) << "server.document-root = \"" << root.string() << "\"\n"
                                       << "server.bind = \"0.0.0.0\"\n"
                                       << "server.port = " << kPort << "\n"
                                       << "server.errorlog = \"" << file("lighttpd-error.log").string() << "\"\n"
                                       << "mimetype.assign = (\".bin\" => \"application/octet-stream\")\n";
  Program server(app_command({"lighttpd", "-D", "-f", file("lighttpd.conf").string()}), file("lighttpd.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kPort)) << tail(server.output());

  const std::string address = app_address();
  auto fetch = [&](const std::string& path) {
    return in_namespace(names_.peer_namespace, [&] { return http_get(address, kPort, path); });
  };
  const HttpReply small = fetch("/small.bin");
  EXPECT_EQ(small.error, "");
  EXPECT_EQ(small.status, 200);
  EXPECT_EQ(small.body_bytes, kSmallFileBytes);
  EXPECT_EQ(small.body_sha256, pattern_sha256(kSmallFileBytes));

  expect_clean(run_wrk({"-c", "64", "-t", "2", "-d", "3s", "--timeout", "2s",
                        "http://" + address + ":" + std::to_string(kPort) + "/small.bin"}));
  if (HasFatalFailure()) return;

  // The large file after the load: sendfile's path, and the server still whole.
  const HttpReply large = fetch("/large.bin");
  EXPECT_EQ(large.error, "");
  EXPECT_EQ(large.status, 200);
  EXPECT_EQ(large.body_bytes, kLargeFileBytes);
  EXPECT_EQ(large.body_sha256, pattern_sha256(kLargeFileBytes));
  EXPECT_TRUE(server.running()) << tail(server.output());
  expect_served_by_flotilla();
}

TEST_F(Apps, RedisUnderRedisBenchmark) {
  ASSERT_TRUE(start_apps({"redis-server", "redis-benchmark", "redis-cli"}));
  run_redis_benchmark(false, "100000", "50", 120s);
  if (HasFatalFailure()) return;
  const std::string address = app_address();

  // The server saw every request, and the data is there.
  Program stats(peer_command({"redis-cli", "-h", address, "-p", "6379", "info", "stats"}), file("redis-stats.log"));
  ASSERT_EQ(stats.wait(20s).value_or(-2), 0) << stats.output();
  std::smatch match;
  const std::string text = stats.output();
  ASSERT_TRUE(std::regex_search(text, match, std::regex("total_commands_processed:([0-9]+)"))) << text;
  EXPECT_GE(std::stoull(match[1]), 200'000u) << text;
  // redis-benchmark SETs one key (no -r) to a value of -d 3 bytes.
  Program length(peer_command({"redis-cli", "-h", address, "-p", "6379", "strlen", "key:__rand_int__"}),
                 file("redis-strlen.log"));
  ASSERT_EQ(length.wait(20s).value_or(-2), 0) << length.output();
  EXPECT_EQ(length.output(), "3\n");
  EXPECT_TRUE(redis_->running()) << tail(redis_->output());
  expect_served_by_flotilla();
}

// Client and server both under `flotilla run` on one stack: the client's segments to the stack's
// own address turn around in IP (issue 14, local delivery). 50 clients: with 10, one epoll pass
// over the benchmark's sockets once skipped some of them for good, and it stalled.
TEST_F(Apps, RedisBenchmarkReachesRedisOnTheSameStack) {
  ASSERT_TRUE(start_apps({"redis-server", "redis-benchmark"}));
  run_redis_benchmark(true, "5000", "50", 60s);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(redis_->running()) << tail(redis_->output());
  expect_served_by_flotilla();
}

}  // namespace
}  // namespace flotilla::testing

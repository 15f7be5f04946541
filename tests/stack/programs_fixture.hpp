// The fixture of tests that run unmodified programs (Debian's binaries) on Flotilla: each runs
// under `flotilla run` (libflotilla-preload.so) on a stack of the test's own with application
// seats, against kernel programs in the stack's peer namespace. Root: skipped without it; a
// program or the preload library that is missing is a failure (./dev installs them).
//
// FLOTILLA_APPS_TEST_SIDE=kernel runs the same programs on kernel sockets instead, in a second
// namespace joined to the peer namespace by a veth pair (tests/support/kernel_namespace.hpp): a
// check of the test itself and of the machine, with the same clients and the same assertions.
#pragma once

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "apps/cli/program.hpp"
#include "apps/tcp_perf/perf_streams.hpp"
#include "recovery/default_config.hpp"
#include "tests/stack/stack_fixture.hpp"
#include "tests/support/kernel_namespace.hpp"

namespace flotilla::testing {

using namespace std::chrono_literals;

// The last `bytes` of a program's output: enough to see why it failed.
inline std::string tail(const std::string& text, std::size_t bytes = 4096) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

using cli::on_path;
using cli::Program;

// Whether a TCP connection to address:port succeeds within 200 ms (from the calling thread's
// namespace).
inline bool port_open(const std::string& address, std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
  bool open = ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0;
  if (!open && errno == EINPROGRESS) {
    pollfd wait{fd, POLLOUT, 0};
    int error = 0;
    socklen_t length = sizeof(error);
    open = ::poll(&wait, 1, 200) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0;
  }
  ::close(fd);
  return open;
}

struct HttpReply {
  int status = 0;
  std::string error;  // "" when the reply arrived whole
  std::uint64_t body_bytes = 0;
  std::string body_sha256;
};

// A minimal HTTP/1.0 GET over a kernel socket: the server closes after the reply. Reads to EOF,
// checks the body against Content-Length and hashes it. Gives up after 30 s.
inline HttpReply http_get(const std::string& address, std::uint16_t port, const std::string& path) {
  HttpReply reply;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    reply.error = "socket failed";
    return reply;
  }
  const timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0 ||
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    reply.error = std::string("connect/send: ") + std::strerror(errno);
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

enum class Side { flotilla, kernel };

inline Side side_from_environment() {
  const char* text = std::getenv("FLOTILLA_APPS_TEST_SIDE");
  return text != nullptr && std::string(text) == "kernel" ? Side::kernel : Side::flotilla;
}

class ProgramsTest : public StackTest {
 protected:
  // Starts the stack with application seats and, on the kernel side, the kernel's namespace; call
  // as ASSERT_TRUE(start_apps(...)). StackTest::SetUp has skipped without root; as root, a program
  // or the preload library that is missing is a failure (./dev installs the programs). `config`
  // is added to the stack's configuration.
  [[nodiscard]] ::testing::AssertionResult start_apps(const std::vector<std::string>& programs,
                                                      const std::string& config = recovery::app_seats_config()) {
    for (const auto& program : programs) {
      if (!on_path(program)) {
        return ::testing::AssertionFailure() << program << " is not installed (./dev installs its Debian package)";
      }
    }
    if (side_ == Side::flotilla) {
      const char* given = std::getenv("FLOTILLA_PRELOAD");
      const std::string library = given != nullptr && *given != '\0' ? given : build_root() + "/sockets/libflotilla-preload.so";
      if (!std::filesystem::exists(library)) return ::testing::AssertionFailure() << library << " is not built";
    }
    char pattern[] = "/tmp/flotilla-programs-test-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) return ::testing::AssertionFailure() << "mkdtemp failed";
    folder_ = pattern;
    if (auto started = start("pass all", config); !started) return started;
    if (side_ == Side::kernel) {
      if (const std::string problem = kernel_.create(names_.peer_namespace); !problem.empty()) {
        return ::testing::AssertionFailure() << "the kernel's namespace: " << problem;
      }
    }
    std::printf("test on %s sockets; files in %s\n", side_ == Side::flotilla ? "Flotilla" : "kernel",
                folder_.c_str());
    return ::testing::AssertionSuccess();
  }

  void TearDown() override {
    StackTest::TearDown();
    kernel_.remove();
    if (!folder_.empty()) std::filesystem::remove_all(folder_);
  }

  // Where clients in the peer namespace reach the program under test.
  std::string app_address() const { return side_ == Side::flotilla ? names_.stack_address : kernel_.server_address; }
  // Where the program under test reaches the peer namespace.
  std::string peer_address() const { return side_ == Side::flotilla ? names_.peer_address : kernel_.client_address; }

  // The program under test: on Flotilla through `flotilla run`, else in the kernel's namespace.
  std::vector<std::string> app_command(std::vector<std::string> argv) const {
    std::vector<std::string> prefix = side_ == Side::flotilla
        ? std::vector<std::string>{build_root() + "/apps/flotilla", "--socket", stack_.socket_path(), "run", "--"}
        : std::vector<std::string>{"ip", "netns", "exec", kernel_.ns};
    prefix.insert(prefix.end(), argv.begin(), argv.end());
    return prefix;
  }
  // A kernel program in the peer namespace.
  std::vector<std::string> peer_command(std::vector<std::string> argv) const {
    std::vector<std::string> prefix{"ip", "netns", "exec", names_.peer_namespace};
    prefix.insert(prefix.end(), argv.begin(), argv.end());
    return prefix;
  }

  std::filesystem::path file(const std::string& name) const { return folder_ / name; }

  // Waits until `server` accepts connections on address:port from the peer namespace.
  bool wait_for_port(Program& server, const std::string& address, std::uint16_t port) const {
    return wait_for(
        [&] {
          return !server.running() ||
                 in_namespace(names_.peer_namespace, [&] { return port_open(address, port); });
        },
        15s) &&
        server.running();
  }

  // On Flotilla, the program under test must have gone through an application seat: the preload
  // library's counters there (summed over the slots) show its reads and writes, and how many were
  // served without a system call.
  void expect_served_by_flotilla() const {
    if (side_ != Side::flotilla) return;
    std::map<std::string, std::uint64_t> sums;
    for (const auto& [component, counters] : stack_.all_counters()) {
      if (component.rfind("app", 0) != 0) continue;
      for (const auto& [name, value] : counters) sums[name] += value;
    }
    EXPECT_GT(sums["io_calls"], 0u) << "no application seat counted a read or write: did the program run on Flotilla?";
    std::printf("preload: %llu of %llu reads/writes and %llu of %llu readiness checks without a system call\n",
                static_cast<unsigned long long>(sums["io_no_syscall"]), static_cast<unsigned long long>(sums["io_calls"]),
                static_cast<unsigned long long>(sums["readiness_no_syscall"]),
                static_cast<unsigned long long>(sums["readiness_checks"]));
  }

  Side side_ = side_from_environment();
  KernelNamespace kernel_;
  std::filesystem::path folder_;
};

}  // namespace flotilla::testing

// The fixture of the tests that run unmodified Debian programs under `flotilla run`
// (tests/apps/apps_test.cpp, tests/compat/): a stack of the test's own with application seats,
// the program under test on it (or, with FLOTILLA_APPS_TEST_SIDE=kernel, on kernel sockets in a
// namespace of its own), and kernel clients in the stack's peer namespace.
#pragma once

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "apps/cli/program.hpp"
#include "recovery/default_config.hpp"
#include "tests/stack/stack_fixture.hpp"
#include "tests/support/kernel_namespace.hpp"

namespace flotilla::testing {

using namespace std::chrono_literals;
using cli::on_path;
using cli::Program;

// The last `bytes` of a program's output: enough to see why it failed.
inline std::string tail(const std::string& text, std::size_t bytes = 4096) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

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

// A blocking kernel TCP connection to address:port whose sends and receives give up after
// `timeout`; -1 with errno set when it cannot be had.
inline int connect_blocking(const std::string& address, std::uint16_t port, std::chrono::seconds timeout) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const timeval limit{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

enum class Side { flotilla, kernel };

inline Side side_from_environment() {
  const char* text = std::getenv("FLOTILLA_APPS_TEST_SIDE");
  return text != nullptr && std::string(text) == "kernel" ? Side::kernel : Side::flotilla;
}

class AppsTest : public StackTest {
 protected:
  // Starts the stack with application seats and, on the kernel side, the kernel's namespace; call
  // as ASSERT_TRUE(start_apps(...)). StackTest::SetUp has skipped without root; as root, a program
  // or the preload library that is missing is a failure (./dev installs the programs).
  // `seats`: the stack's [limits] app_seats (each process that uses the stack leases one);
  // `limits`: more keys of the [limits] table, one `key = value` per line.
  [[nodiscard]] ::testing::AssertionResult start_apps(const std::vector<std::string>& programs, int seats = 4,
                                                      const std::string& limits = "") {
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
    char pattern[] = "/tmp/flotilla-apps-test-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) return ::testing::AssertionFailure() << "mkdtemp failed";
    folder_ = pattern;
    if (auto started = start("pass all", recovery::app_seats_config(seats) + limits); !started) return started;
    if (side_ == Side::kernel) {
      if (const std::string problem = kernel_.create(names_.peer_namespace); !problem.empty()) {
        return ::testing::AssertionFailure() << "the kernel's namespace: " << problem;
      }
    }
    std::printf("apps test on %s sockets; files in %s\n", side_ == Side::flotilla ? "Flotilla" : "kernel",
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

  // The counters of the stack's components whose names start with `prefix` ("app": the seats,
  // "tcp": the replicas), summed by name.
  std::map<std::string, std::uint64_t> summed_counters(const std::string& prefix) const {
    std::map<std::string, std::uint64_t> sums;
    for (const auto& [component, counters] : stack_.all_counters()) {
      if (component.rfind(prefix, 0) != 0) continue;
      for (const auto& [name, value] : counters) sums[name] += value;
    }
    return sums;
  }

  // On Flotilla, the program under test must have gone through an application seat: the preload
  // library's counters there (summed over the slots) show its reads and writes, and how many were
  // served without a system call.
  void expect_served_by_flotilla() const {
    if (side_ != Side::flotilla) return;
    std::map<std::string, std::uint64_t> sums = summed_counters("app");
    EXPECT_GT(sums["io_calls"], 0u) << "no application seat counted a read or write: did the program run on Flotilla?";
    std::printf("preload: %llu of %llu reads/writes and %llu of %llu readiness checks without a system call\n",
                static_cast<unsigned long long>(sums["io_no_syscall"]), static_cast<unsigned long long>(sums["io_calls"]),
                static_cast<unsigned long long>(sums["readiness_no_syscall"]),
                static_cast<unsigned long long>(sums["readiness_checks"]));
  }

  // wrk's report, run in the peer namespace with `arguments` (within 60 s).
  struct WrkReport {
    std::optional<int> status;
    std::string text;
    std::uint64_t requests = 0;
  };
  WrkReport run_wrk(const std::vector<std::string>& arguments, const std::string& log_name = "wrk.log") const {
    std::vector<std::string> argv{"wrk"};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    Program wrk(peer_command(argv), file(log_name));
    WrkReport report;
    report.status = wrk.wait(60s);
    report.text = wrk.output();
    std::printf("%s", report.text.c_str());
    std::smatch match;
    if (std::regex_search(report.text, match, std::regex("([0-9]+) requests in"))) report.requests = std::stoull(match[1]);
    return report;
  }
  // A clean wrk run: it ended by itself, served requests, and counted no socket error and no
  // reply other than 2xx (it prints those lines only when there is something to count).
  static void expect_clean(const WrkReport& report) {
    ASSERT_TRUE(report.status.has_value()) << "wrk overran 60 s\n" << tail(report.text);
    EXPECT_EQ(*report.status, 0) << report.text;
    EXPECT_GT(report.requests, 0u) << report.text;
    EXPECT_EQ(report.text.find("Socket errors"), std::string::npos) << report.text;
    EXPECT_EQ(report.text.find("Non-2xx"), std::string::npos) << report.text;
  }

  Side side_ = side_from_environment();
  KernelNamespace kernel_;
  std::filesystem::path folder_;
};

}  // namespace flotilla::testing

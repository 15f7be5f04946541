// The compatibility suite, sockets passed between processes with SCM_RIGHTS (issue 14): Node's
// cluster module with both scheduling policies (rr: the primary accepts and passes each
// connection to a worker; none: the primary binds and passes the socket, each worker listens on
// it), and a prefork server passing each connection to a worker and closing its own copy
// (tests/compat/pass_server.cpp). Kernel clients in the peer namespace; on Flotilla each passed
// connection must be claimed by the worker that serves it. The fixture, and
// FLOTILLA_APPS_TEST_SIDE=kernel (the same cases on kernel sockets): tests/apps/apps_fixture.hpp.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "tests/apps/apps_fixture.hpp"
#include "tests/compat/echo_fixture.hpp"

namespace flotilla::testing {
namespace {

constexpr std::uint16_t kNodePort = 8002;
constexpr int kRequests = 40;

// A primary forking 2 workers, each serving HTTP on PORT (argv) and answering with its pid; the
// primary prints "listening PID" as each worker listens.
constexpr const char* kClusterScript = R"(const cluster = require('cluster');
const http = require('http');
const port = Number(process.argv[2]);
if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('listening', (worker) => console.log('listening ' + worker.process.pid));
  cluster.on('exit', (worker, code, signal) => console.log('worker exit ' + worker.process.pid + ' ' + code + ' ' + signal));
} else {
  http.createServer((request, response) => response.end('worker ' + process.pid + '\n')).listen(port, '0.0.0.0');
}
)";

// One HTTP/1.0 GET to address:port: the pid the answer names (-1 when none came).
pid_t pid_answering(const std::string& address, std::uint16_t port) {
  const int fd = connect_blocking(address, port, 10s);
  if (fd < 0) return -1;
  const std::string request = "GET / HTTP/1.0\r\n\r\n";
  std::string answer;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
    char chunk[4096];
    for (ssize_t got = 0; (got = ::recv(fd, chunk, sizeof(chunk), 0)) > 0;) answer.append(chunk, static_cast<std::size_t>(got));
  }
  ::close(fd);
  std::smatch match;
  return std::regex_search(answer, match, std::regex("worker ([0-9]+)")) ? static_cast<pid_t>(std::stol(match[1])) : -1;
}

class Handoff : public EchoServersTest {
 protected:
  // tests/compat/pass_server.cpp on `port` with two workers and `options`: `rounds` of 10
  // connections echo through it, both workers serve, and neither it nor the library complains.
  void run_pass_server(std::uint16_t port, const std::vector<std::string>& options, int rounds) {
    ASSERT_TRUE(start_apps({}));
    std::vector<std::string> argv{build_root() + "/tests/flotilla-pass-server", std::to_string(port), "2"};
    argv.insert(argv.end(), options.begin(), options.end());
    Program server(app_command(argv), file("pass-server.log"));
    ASSERT_TRUE(wait_for_port(server, app_address(), port)) << tail(server.output());
    echo_rounds(port, rounds);
    EXPECT_TRUE(server.running()) << tail(server.output());
    const std::string output = server.output();
    EXPECT_NE(output.find("worker 0 served"), std::string::npos) << tail(output);
    EXPECT_NE(output.find("worker 1 served"), std::string::npos) << tail(output);
    EXPECT_EQ(output.find("flotilla-pass-server:"), std::string::npos) << tail(output);
    EXPECT_EQ(output.find("flotilla: "), std::string::npos) << tail(output);
  }

  // The pids the primary said listen, from its output.
  static std::set<pid_t> listening_workers(const std::string& output) {
    std::set<pid_t> workers;
    const std::regex line("listening ([0-9]+)");
    for (auto it = std::sregex_iterator(output.begin(), output.end(), line); it != std::sregex_iterator(); ++it) {
      workers.insert(static_cast<pid_t>(std::stol((*it)[1])));
    }
    return workers;
  }

  // Node's cluster with NODE_CLUSTER_SCHED_POLICY=`policy`: kRequests requests one after another,
  // each answered, by both workers; then wrk with no error.
  void run_cluster(const std::string& policy) {
    ASSERT_TRUE(start_apps({"node", "wrk"}));
    const auto script = file("cluster.js");
    std::ofstream(script) << kClusterScript;
    Program primary(app_command({"node", script.string(), std::to_string(kNodePort)}), file("cluster.log"),
                    {{"NODE_CLUSTER_SCHED_POLICY", policy}});
    ASSERT_TRUE(wait_for([&] { return !primary.running() || listening_workers(primary.output()).size() == 2; }, 30s))
        << tail(primary.output());
    const std::set<pid_t> workers = listening_workers(primary.output());
    const std::string address = app_address();
    std::map<pid_t, int> served;
    for (int i = 0; i < kRequests; ++i) {
      const pid_t pid = in_namespace(names_.peer_namespace, [&] { return pid_answering(address, kNodePort); });
      ++served[pid];
      if (pid < 0) break;  // one unanswered request says enough (each waits up to 10 s)
    }
    for (const auto& [pid, count] : served) {
      std::printf("%s: pid %d answered %d requests\n", policy.c_str(), static_cast<int>(pid), count);
      EXPECT_TRUE(workers.contains(pid)) << "pid " << pid << " (-1: no answer) is not a worker\n" << tail(primary.output());
    }
    for (const pid_t pid : workers) EXPECT_GT(served.contains(pid) ? served.at(pid) : 0, 0) << "worker " << pid;
    expect_clean(run_wrk({"-c", "20", "-t", "2", "-d", "3s", "--timeout", "2s",
                          "http://" + address + ":" + std::to_string(kNodePort) + "/"}));
    EXPECT_TRUE(primary.running()) << tail(primary.output());
    EXPECT_EQ(primary.output().find("worker exit"), std::string::npos) << tail(primary.output());
    EXPECT_EQ(primary.output().find("flotilla: "), std::string::npos) << tail(primary.output());
  }
};

// rr, Node's default on Linux: the primary accepts each connection and passes it to a worker over
// the IPC channel (a unix socket pair, SCM_RIGHTS), then closes its copy. Each worker claims the
// connections it is given.
TEST_F(Handoff, NodeClusterRoundRobinEveryWorkerServes) {
  run_cluster("rr");
  expect_replica_counts(kRequests, 0);
}

// none: the primary binds the server socket and passes it, not listening, to each worker, and
// each worker listens on it: the workers share the port as a listener group, as processes sharing
// one socket do on Linux.
TEST_F(Handoff, NodeClusterSharedHandleEveryWorkerServes) {
  run_cluster("none");
}

// A prefork server passing each connection it accepts to one of 2 workers (SCM_RIGHTS into room
// for exactly one descriptor) and closing its copy at once: 50 connections, 10 at a time, each
// echoing 64 KiB, SHA-256 checked, both workers serving, every connection claimed.
TEST_F(Handoff, APreforkServerPassingConnectionsEchoesFiftyConnections) {
  run_pass_server(7006, {}, 5);
  expect_replica_counts(50, 0);
}

// The same server with workers that changed their root to an empty folder (vsftpd's session
// child gets its data connections so): no /proc to tell the record and the sockets by.
TEST_F(Handoff, ConnectionsPassedToChrootedWorkersEchoFiftyConnections) {
  const std::string empty = "/tmp/flotilla-pass-server-root-" + std::to_string(::getpid());
  std::filesystem::create_directories(empty);
  run_pass_server(7008, {"--chroot", empty}, 5);
  expect_replica_counts(50, 0);
  std::filesystem::remove(empty);
}

// The same server passing its listener to both workers (keeping its own, as a server handing its
// listeners to its successor does): each worker joins the listener's group and accepts on it.
TEST_F(Handoff, AListenerPassedToTwoWorkersIsSharedByBoth) {
  run_pass_server(7007, {"--pass-listener"}, 3);
  expect_replica_counts(0, 2);
}

// tests/compat/handoff_probe.cpp: every kind of socket, with its options, across exec,
// SCM_RIGHTS, system() and popen().
class HandoffProbe : public EchoServersTest {
 protected:
  std::vector<std::string> probe(std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(), build_root() + "/tests/flotilla-handoff-probe");
    return app_command(arguments);
  }

  // The probe, and the library, said nothing went wrong.
  static void expect_quiet(const std::string& output) {
    EXPECT_EQ(output.find("flotilla-handoff-probe:"), std::string::npos) << tail(output);
    EXPECT_EQ(output.find("flotilla: "), std::string::npos) << tail(output);
  }

  // What the probe's lines starting with `prefix` say after it, by their first word.
  static std::map<std::string, std::string> lines_after(const std::string& output, const std::string& prefix) {
    std::map<std::string, std::string> lines;
    std::istringstream text(output);
    for (std::string line; std::getline(text, line);) {
      if (!line.starts_with(prefix)) continue;
      const std::string rest = line.substr(prefix.size());
      lines[rest.substr(0, rest.find(' '))] = rest;
    }
    return lines;
  }

  // One datagram to the probe's `port` from the peer namespace and the answer (empty: none within
  // `wait`).
  std::string ask(std::uint16_t port, const std::string& payload, std::chrono::milliseconds wait = 2s) const {
    const std::string address = app_address();
    return in_namespace(names_.peer_namespace, [&] {
      const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(port);
      ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
      std::string answer;
      if (::sendto(fd, payload.data(), payload.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) ==
          static_cast<ssize_t>(payload.size())) {
        pollfd look{fd, POLLIN, 0};
        char bytes[512];
        if (::poll(&look, 1, static_cast<int>(wait.count())) == 1) {
          const ssize_t got = ::recv(fd, bytes, sizeof(bytes), 0);
          if (got > 0) answer.assign(bytes, static_cast<std::size_t>(got));
        }
      }
      ::close(fd);
      return answer;
    });
  }

  // The probe's `mode` serving each connection through a shell on `port`: `rounds` of 10
  // connections echo, the server still runs and said neither `fault` nor anything else went
  // wrong. Its output.
  std::string run_shell_server(const std::string& mode, std::uint16_t port, int rounds, const std::string& fault) {
    if (!start_apps({"sh", "cat"})) {
      ADD_FAILURE() << "the stack did not start";
      return {};
    }
    Program server(probe({mode, std::to_string(port)}), file(mode + ".log"));
    if (!wait_for_port(server, app_address(), port)) {
      ADD_FAILURE() << tail(server.output());
      return {};
    }
    echo_rounds(port, rounds);
    EXPECT_TRUE(server.running()) << tail(server.output());
    const std::string output = server.output();
    EXPECT_EQ(output.find(fault), std::string::npos) << tail(output);
    expect_quiet(output);
    return output;
  }

  // The probe's UDP `mode` on `port`, once it says it serves.
  std::unique_ptr<Program> start_udp_probe(const std::string& mode, std::uint16_t port) {
    if (!start_apps({})) return nullptr;
    auto server = std::make_unique<Program>(probe({mode, std::to_string(port)}), file(mode + ".log"));
    if (!wait_for([&] { return !server->running() || server->output().find("serving") != std::string::npos; }, 15s)) {
      return nullptr;
    }
    return server;
  }

  // Asks `payload` until the answer is `wanted` (datagrams sent while the socket changes hands
  // may be lost, as UDP may lose any), for at most 15 s; the last answer.
  std::string ask_until(std::uint16_t port, const std::string& payload, const std::string& wanted) const {
    std::string answer;
    const auto until = std::chrono::steady_clock::now() + 15s;
    while (answer != wanted && std::chrono::steady_clock::now() < until) answer = ask(port, payload, 500ms);
    return answer;
  }
};

// A TCP socket, a TCP listener and a UDP socket (bound and connected) with many options set: after
// an exec, then after SCM_RIGHTS to another process, getsockopt, fcntl, getsockname and
// getpeername read back what they read before.
TEST_F(HandoffProbe, OptionsGoOnAcrossExecAndScmRights) {
  ASSERT_TRUE(start_apps({}));
  Program program(probe({"options", peer_address()}), file("options.log"));
  const auto status = program.wait(60s);
  const std::string output = program.output();
  ASSERT_TRUE(status.has_value()) << tail(output);
  EXPECT_EQ(*status, 0) << tail(output);
  const auto before = lines_after(output, "before ");
  ASSERT_EQ(before.size(), 3u) << tail(output);
  // The options took (else there is nothing to compare).
  EXPECT_NE(before.at("socket").find("TCP_KEEPIDLE=30"), std::string::npos) << before.at("socket");
  EXPECT_NE(before.at("datagram").find("IP_PKTINFO=1"), std::string::npos) << before.at("datagram");
  EXPECT_NE(before.at("datagram").find(" peer="), std::string::npos) << before.at("datagram");
  for (const char* after : {"exec ", "rights "}) {
    const auto lines = lines_after(output, after);
    for (const auto& [which, line] : before) {
      EXPECT_EQ(lines.contains(which) ? lines.at(which) : "(none)", line) << after << which;
    }
  }
  expect_quiet(output);
}

// inetd's way through system(): each connection is echoed by `exec cat <&N >&N`, which the shell
// system() starts inherits (50 connections, 10 at a time, 64 KiB each, served one by one).
TEST_F(HandoffProbe, AServerEchoesEachConnectionThroughSystem) {
  const std::string output = run_shell_server("system", 7011, 5, "system status");
  EXPECT_NE(output.find("system(NULL) 1"), std::string::npos) << tail(output);
  expect_replica_counts(50, 0);
}

// The same through vfork() (a shell's way, and some servers'): the child, running in the server's
// memory, execs the shell with the server's own connection, which it pins as a fork would.
TEST_F(HandoffProbe, AServerEchoesEachConnectionThroughAVforkedShell) {
  (void)run_shell_server("vfork", 7016, 3, "vfork status");
  expect_replica_counts(30, 0);
}

// The same through popen(), "r" and "w" in turn: the shell echoes the connection it inherited and
// talks to the server over the pipe; pclose returns that shell's status. (dash runs `cat` of
// `cat ... && echo done` in a vfork child.)
TEST_F(HandoffProbe, AServerEchoesEachConnectionThroughPopen) {
  (void)run_shell_server("popen", 7012, 3, "popen:");
}

// A UDP server that execs itself with its socket keeps answering on the same port, with the
// option it set.
TEST_F(HandoffProbe, AUdpServerReExecutingItselfKeepsAnswering) {
  constexpr std::uint16_t kPort = 7013;
  const auto started = start_udp_probe("udp", kPort);
  ASSERT_NE(started, nullptr);
  Program& server = *started;
  EXPECT_EQ(ask_until(kPort, "one", "0 one"), "0 one") << tail(server.output());
  EXPECT_EQ(ask(kPort, "reexec"), "0 stopping reexec") << tail(server.output());
  EXPECT_EQ(ask_until(kPort, "two", "1 two"), "1 two") << tail(server.output());
  EXPECT_EQ(ask(kPort, "three"), "1 three") << tail(server.output());
  const auto generations = lines_after(server.output(), "serving generation ");
  ASSERT_TRUE(generations.contains("1")) << tail(server.output());
  EXPECT_EQ(generations.at("1"), "1 port " + std::to_string(kPort) + " tos 40");
  EXPECT_TRUE(server.running()) << tail(server.output());
  expect_quiet(server.output());
}

// A UDP socket passed over SCM_RIGHTS to a worker (the sender closing its copy) is answered by
// the worker on the same port.
TEST_F(HandoffProbe, AUdpSocketPassedToAWorkerIsAnsweredThere) {
  constexpr std::uint16_t kPort = 7014;
  const auto started = start_udp_probe("udp-pass", kPort);
  ASSERT_NE(started, nullptr);
  Program& server = *started;
  EXPECT_EQ(ask_until(kPort, "a", "primary stopping a"), "primary stopping a") << tail(server.output());
  EXPECT_EQ(ask_until(kPort, "b", "worker b"), "worker b") << tail(server.output());
  EXPECT_EQ(ask(kPort, "c"), "worker c") << tail(server.output());
  expect_quiet(server.output());
}

// A TCP connection still connecting when the program execs (or passes it and closes its copy)
// goes on: the new image (the receiver) sees it become writable, SO_ERROR 0, and talks over it.
// Refused (a closed port first): the new image's SO_ERROR says so once, and the socket connects
// again.
class HandoffConnecting : public HandoffProbe, public ::testing::WithParamInterface<std::tuple<const char*, bool>> {};

TEST_P(HandoffConnecting, AConnectionStillConnectingGoesOn) {
  const auto [how, refused_first] = GetParam();
  ASSERT_TRUE(start_apps({}));
  constexpr std::uint16_t kPort = 7015;
  const std::string address = peer_address();
  // A kernel server in the peer namespace answering one line with "echo LINE".
  const int listener = in_namespace(names_.peer_namespace, [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(kPort);
    ::inet_pton(AF_INET, address.c_str(), &at.sin_addr);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&at), sizeof(at)) != 0 || ::listen(fd, 4) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  });
  ASSERT_GE(listener, 0);
  std::string heard;
  std::thread server([&] {
    pollfd look{listener, POLLIN, 0};
    if (::poll(&look, 1, 20000) != 1) return;
    const int connection = ::accept(listener, nullptr, nullptr);
    if (connection < 0) return;
    const timeval limit{10, 0};
    (void)::setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    char byte = 0;
    while (heard.size() < 64 && ::read(connection, &byte, 1) == 1 && byte != '\n') heard += byte;
    const std::string answer = "echo " + heard + "\n";
    (void)::write(connection, answer.data(), answer.size());
    ::close(connection);
  });
  std::vector<std::string> arguments{"connecting", address, std::to_string(kPort), how};
  if (refused_first) arguments.push_back(std::to_string(kPort + 1));  // nothing listens there
  Program program(probe(arguments), file("connecting.log"));
  const auto status = program.wait(30s);
  server.join();
  ::close(listener);
  const std::string output = program.output();
  ASSERT_TRUE(status.has_value()) << tail(output);
  EXPECT_EQ(*status, 0) << tail(output);
  EXPECT_EQ(heard, "hello");
  EXPECT_NE(output.find("reply: echo hello"), std::string::npos) << tail(output);
  if (refused_first) {
    EXPECT_NE(output.find("first connect: " + std::string(std::strerror(ECONNREFUSED)) + ", then 0"), std::string::npos)
        << tail(output);
    EXPECT_NE(output.find("reconnect: " + std::string(std::strerror(ECONNABORTED))), std::string::npos) << tail(output);
  }
  expect_quiet(output);
}

INSTANTIATE_TEST_SUITE_P(Handoff, HandoffConnecting,
                         ::testing::Combine(::testing::Values("exec", "rights"), ::testing::Bool()));

}  // namespace
}  // namespace flotilla::testing

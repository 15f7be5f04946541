// The compatibility suite, sockets passed between processes with SCM_RIGHTS (issue 14): Node's
// cluster module with both scheduling policies (rr: the primary accepts and passes each
// connection to a worker; none: the primary binds and passes the socket, each worker listens on
// it), and a prefork server passing each connection to a worker and closing its own copy
// (tests/compat/pass_server.cpp). Kernel clients in the peer namespace; on Flotilla each passed
// connection must be claimed by the worker that serves it. The fixture, and
// FLOTILLA_APPS_TEST_SIDE=kernel (the same cases on kernel sockets): tests/apps/apps_fixture.hpp.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
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

// The same server passing its listener to both workers (keeping its own, as a server handing its
// listeners to its successor does): each worker joins the listener's group and accepts on it.
TEST_F(Handoff, AListenerPassedToTwoWorkersIsSharedByBoth) {
  run_pass_server(7007, {"--pass-listener"}, 3);
  expect_replica_counts(0, 2);
}

}  // namespace
}  // namespace flotilla::testing

// The compatibility suite: Debian's servers that nobody tuned for Flotilla, each run unmodified
// under `flotilla run` and checked against kernel clients in the peer namespace (issue 14):
// memcached's threads, an idle threaded server, a fork-per-connection server, redis with 2,000
// clients, two programs on one stack, a server whose stack goes down under it, git daemon and sshd. Each case takes
// seconds. The fixture, and FLOTILLA_APPS_TEST_SIDE=kernel (the same cases on kernel sockets):
// tests/apps/apps_fixture.hpp.
//
// Times are printed, never asserted; the kernel-against-Flotilla ratios are `./dev bench apps`.
#include <gtest/gtest.h>

#include <dirent.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "perf/cpu_ticks.hpp"
#include "tests/apps/apps_fixture.hpp"
#include "tests/compat/echo_fixture.hpp"
#include "tests/support/kernel_tcp.hpp"

namespace flotilla::testing {
namespace {

constexpr std::uint16_t kMemcachedPort = 11211;

// CPU time (user + system, in clock ticks) of every process in process group `group`.
std::uint64_t group_cpu_ticks(pid_t group) {
  std::uint64_t ticks = 0;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return 0;
  while (const dirent* entry = ::readdir(proc)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    const bench::ProcessTicks process = bench::ProcessTicks::read(static_cast<pid_t>(std::atol(entry->d_name)));
    if (process.alive && process.group == group) ticks += process.own;
  }
  ::closedir(proc);
  return ticks;
}

// What one memcached client connection saw.
struct MemcachedOutcome {
  std::uint64_t verified = 0;  // set + get pairs whose get returned what the set stored
  std::string error;           // "" when every pair was verified
  std::chrono::nanoseconds elapsed{0};
};

// One kernel connection to memcached at address:port doing `pairs` set-then-get pairs on keys of
// its own, each get checked against its set. Gives up after 30 s.
MemcachedOutcome memcached_pairs(const std::string& address, std::uint16_t port, int connection, int pairs) {
  MemcachedOutcome outcome;
  const int fd = connect_blocking(address, port, 30s);
  if (fd < 0) {
    outcome.error = std::string("connect: ") + std::strerror(errno);
    return outcome;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  std::string pending;  // bytes received and not yet consumed
  char chunk[4096];
  // Reads until `expected` has arrived whole, and checks it is exactly what came.
  auto expect_reply = [&](const std::string& expected) -> bool {
    while (pending.size() < expected.size()) {
      const ssize_t got = ::recv(fd, chunk, sizeof(chunk), 0);
      if (got <= 0) {
        outcome.error = got == 0 ? "memcached closed the connection" : std::string("recv: ") + std::strerror(errno);
        return false;
      }
      pending.append(chunk, static_cast<std::size_t>(got));
    }
    if (pending.compare(0, expected.size(), expected) != 0) {
      outcome.error = "expected \"" + expected + "\", got \"" + pending.substr(0, expected.size()) + "\"";
      return false;
    }
    pending.erase(0, expected.size());
    return true;
  };
  auto send_all = [&](const std::string& request) -> bool {
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) return true;
    outcome.error = std::string("send: ") + std::strerror(errno);
    return false;
  };
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < pairs; ++i) {
    const std::string key = "c" + std::to_string(connection) + "k" + std::to_string(i);
    const std::string value = "value-" + std::to_string(i * 7919 + connection);
    if (!send_all("set " + key + " 0 0 " + std::to_string(value.size()) + "\r\n" + value + "\r\n") ||
        !expect_reply("STORED\r\n") || !send_all("get " + key + "\r\n") ||
        !expect_reply("VALUE " + key + " 0 " + std::to_string(value.size()) + "\r\n" + value + "\r\nEND\r\n")) {
      break;
    }
    ++outcome.verified;
  }
  outcome.elapsed = std::chrono::steady_clock::now() - start;
  ::close(fd);
  return outcome;
}

class Compat : public EchoServersTest {
 protected:
  // `argv` run in the peer namespace for at most `seconds`, its standard input from `input` (a
  // file's path, "" for none), its output and errors together.
  CommandOutcome run_in_peer(const std::vector<std::string>& argv, int seconds, const std::string& input = "") {
    return run_shell("timeout " + std::to_string(seconds) + " " + shell_words(peer_command(argv)) +
                     (input.empty() ? "" : " < " + input) + " 2>&1");
  }
  // `fetch(name)` ("" when it went well, else why) three times one after the other, then twice at
  // once: a server that forks per connection, serving clients in turn and side by side.
  template <class Fetch>
  void expect_fetched_in_turn_and_at_once(Fetch&& fetch, const std::string& prefix) {
    for (int i = 1; i <= 3; ++i) EXPECT_EQ(fetch(prefix + std::to_string(i)), "");
    std::string first, second;
    std::thread other([&] { second = fetch(prefix + "5"); });
    first = fetch(prefix + "4");
    other.join();
    EXPECT_EQ(first, "");
    EXPECT_EQ(second, "");
  }

  // redis with thousands of clients at once, on the default limits: a program's sockets per replica
  // (limits.tcp_sockets_per_seat, 16,384) are sparse memory, so nothing is raised but the number of
  // descriptors (prlimit on both sides, as an administrator would raise ulimit -n).
  void serve_redis_clients(int clients, int requests) {
    ASSERT_TRUE(start_apps({"redis-server", "redis-benchmark", "prlimit"}, 4));
    auto with_descriptors = [](std::vector<std::string> argv) {
      argv.insert(argv.begin(), {"prlimit", "--nofile=16384", "--"});
      return argv;
    };
    Program server(app_command(with_descriptors({"redis-server", "--port", "6379", "--save", "", "--appendonly", "no",
                                                 "--protected-mode", "no", "--bind", "0.0.0.0", "--maxclients",
                                                 std::to_string(clients + 2000), "--dir", folder_.string()})),
                   file("redis.log"));
    ASSERT_TRUE(wait_for_port(server, app_address(), 6379)) << tail(server.output());
    std::vector<std::string> bench = peer_command(
        with_descriptors({"redis-benchmark", "-h", app_address(), "-p", "6379", "-q", "-n", std::to_string(requests),
                          "-c", std::to_string(clients), "-t", "set,get"}));
    Program client(bench, file("redis-benchmark.log"));
    const auto status = client.wait(180s);
    const std::string report = client.output();
    ASSERT_TRUE(status.has_value()) << "redis-benchmark overran 180 s\n" << tail(report);
    EXPECT_EQ(*status, 0) << tail(report);
    EXPECT_NE(report.find("SET: "), std::string::npos) << tail(report);
    EXPECT_NE(report.find("GET: "), std::string::npos) << tail(report);
    EXPECT_EQ(report.find("rror"), std::string::npos) << tail(report);
    EXPECT_EQ(server.output().find("flotilla:"), std::string::npos) << tail(server.output());
    EXPECT_TRUE(server.running()) << tail(server.output());
  }

  // tests/compat/exec_server.cpp on `port` with `option`: `rounds` of 10 connections echo through
  // it, each claimed by the process that serves it.
  void run_exec_server(std::uint16_t port, const std::string& option, int rounds) {
    std::vector<std::string> argv{build_root() + "/tests/flotilla-exec-server", std::to_string(port)};
    if (!option.empty()) argv.push_back(option);
    Program server(app_command(argv), file("exec-server.log"));
    ASSERT_TRUE(wait_for_port(server, app_address(), port)) << tail(server.output());
    echo_rounds(port, rounds);
    EXPECT_TRUE(server.running()) << tail(server.output());
    // (A child waiting for a seat says so: 10 children at once share the stack's 4 seats.)
    EXPECT_EQ(server.output().find("cannot take over"), std::string::npos) << tail(server.output());
    EXPECT_EQ(server.output().find("flotilla-exec-server:"), std::string::npos) << tail(server.output());
    expect_replica_counts(10 * static_cast<std::uint64_t>(rounds), 0);
  }

  std::vector<std::string> memcached_command(int threads) const {
    return app_command({"memcached", "-u", "root", "-t", std::to_string(threads), "-p", std::to_string(kMemcachedPort),
                        "-U", "0", "-l", "0.0.0.0"});
  }

  // `connections` kernel clients at once, each doing `pairs` verified set+get pairs; expects every
  // pair verified and returns the mean time of one pair over all of them.
  std::chrono::nanoseconds run_memcached_clients(int connections, int pairs) {
    std::vector<MemcachedOutcome> outcomes(static_cast<std::size_t>(connections));
    std::vector<std::thread> clients;
    const std::string address = app_address();
    for (int c = 0; c < connections; ++c) {
      clients.emplace_back([&, c] {
        outcomes[static_cast<std::size_t>(c)] =
            in_namespace(names_.peer_namespace, [&] { return memcached_pairs(address, kMemcachedPort, c, pairs); });
      });
    }
    for (auto& client : clients) client.join();
    std::chrono::nanoseconds total{0};
    std::uint64_t verified = 0;
    for (int c = 0; c < connections; ++c) {
      const auto& outcome = outcomes[static_cast<std::size_t>(c)];
      EXPECT_EQ(outcome.error, "") << "connection " << c;
      EXPECT_EQ(outcome.verified, static_cast<std::uint64_t>(pairs)) << "connection " << c;
      total += outcome.elapsed;
      verified += outcome.verified;
    }
    return verified == 0 ? std::chrono::nanoseconds{0} : total / static_cast<std::int64_t>(verified);
  }
};

// memcached's worker threads share the listener and hand connections to each other: 8 clients at
// once, 2,500 set+get pairs each (20,000 sets and 20,000 gets), every get checked.
TEST_F(Compat, MemcachedWithFourThreadsServesEightConnections) {
  ASSERT_TRUE(start_apps({"memcached"}));
  Program server(memcached_command(4), file("memcached.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kMemcachedPort)) << tail(server.output());
  const auto per_pair = run_memcached_clients(8, 2500);
  std::printf("memcached -t 4, 8 connections: %.1f us per set+get pair\n",
              std::chrono::duration<double, std::micro>(per_pair).count());
  EXPECT_TRUE(server.running()) << tail(server.output());
  expect_served_by_flotilla();
}

// One thread serving one connection at a time: a request never waits on another thread's wake-up.
TEST_F(Compat, MemcachedWithOneThreadAnswersEveryRequest) {
  ASSERT_TRUE(start_apps({"memcached"}));
  Program server(memcached_command(1), file("memcached.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kMemcachedPort)) << tail(server.output());
  const auto per_pair = run_memcached_clients(2, 2000);
  std::printf("memcached -t 1, 2 connections: %.1f us per set+get pair\n",
              std::chrono::duration<double, std::micro>(per_pair).count());
  EXPECT_TRUE(server.running()) << tail(server.output());
}

// A threaded server with nothing to do sleeps: under 1% of a CPU over 5 s (its threads wait in
// the kernel for the stack's wake-up, none polls).
TEST_F(Compat, AnIdleThreadedServerUsesNoCpu) {
  ASSERT_TRUE(start_apps({"memcached"}));
  Program server(memcached_command(4), file("memcached.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kMemcachedPort)) << tail(server.output());
  run_memcached_clients(4, 50);  // every thread has served, and holds a connection that went idle
  std::this_thread::sleep_for(500ms);
  const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
  const std::uint64_t before = group_cpu_ticks(server.pid());
  std::this_thread::sleep_for(5s);
  const std::uint64_t used = group_cpu_ticks(server.pid()) - before;
  std::printf("idle memcached -t 4: %llu ticks of CPU in 5 s (%ld per second)\n",
              static_cast<unsigned long long>(used), ticks_per_second);
  EXPECT_LT(used * 100, static_cast<std::uint64_t>(5 * ticks_per_second)) << "over 1% of a CPU while idle";
  EXPECT_TRUE(server.running()) << tail(server.output());
}

// The stack taken down under servers waiting for connections, socat in poll(2) on its listener and
// memcached's threads in epoll: the listener stops being ready, so neither spins, and each still
// ends at once on SIGTERM (a server once kept running after it).
TEST_F(Compat, TheStackGoingDownUnderWaitingServersMakesNoneSpin) {
  if (side_ != Side::flotilla) GTEST_SKIP() << "the stack going down is Flotilla's";
  ASSERT_TRUE(start_apps({"memcached", "socat"}));
  Program memcached(memcached_command(4), file("memcached.log"));
  // Without `fork` socat serves one connection: it is not probed, it says when it listens.
  Program socat(app_command({"socat", "-d", "-d", "TCP-LISTEN:7001,reuseaddr", "EXEC:cat"}), file("socat.log"));
  ASSERT_TRUE(wait_for_port(memcached, app_address(), kMemcachedPort)) << tail(memcached.output());
  ASSERT_TRUE(wait_for([&] { return socat.output().find("listening on") != std::string::npos; }, 10s))
      << tail(socat.output());

  const CommandOutcome down = cli("down");
  ASSERT_EQ(down.exit_code, 0) << down.output;
  const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
  const std::uint64_t memcached_before = group_cpu_ticks(memcached.pid());
  const std::uint64_t socat_before = group_cpu_ticks(socat.pid());
  std::this_thread::sleep_for(3s);
  const std::uint64_t memcached_used = group_cpu_ticks(memcached.pid()) - memcached_before;
  const std::uint64_t socat_used = group_cpu_ticks(socat.pid()) - socat_before;
  std::printf("with the stack down, 3 s: memcached %llu ticks, socat %llu ticks of CPU (%ld per second)\n",
              static_cast<unsigned long long>(memcached_used), static_cast<unsigned long long>(socat_used),
              ticks_per_second);
  const auto five_percent = static_cast<std::uint64_t>(3 * ticks_per_second) * 5;
  EXPECT_LT(memcached_used * 100, five_percent) << "memcached spins";
  EXPECT_LT(socat_used * 100, five_percent) << "socat spins";

  for (auto [name, server] : {std::pair{"memcached", &memcached}, std::pair{"socat", &socat}}) {
    ASSERT_TRUE(server->running()) << name << " ended with the stack\n" << tail(server->output());
    ::kill(-server->pid(), SIGTERM);
    EXPECT_TRUE(wait_for([&] { return !server->running(); }, 3s)) << name << " still running 3 s after SIGTERM";
  }
}

// Client and server both under `flotilla run`: memccp stores a file in memcached and memccat reads
// it back through the same stack (IP turns the segments around), byte for byte.
TEST_F(Compat, TwoProgramsOnOneStackReachEachOther) {
  ASSERT_TRUE(start_apps({"memcached", "memccp", "memccat"}));
  Program server(memcached_command(2), file("memcached.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kMemcachedPort)) << tail(server.output());
  const std::string servers = "--servers=" + app_address() + ":" + std::to_string(kMemcachedPort);
  std::string content;
  for (int line = 0; line < 4000; ++line) content += "line " + std::to_string(line * 31) + " of the stored file\n";
  const auto stored = file("stored.txt");
  std::ofstream(stored) << content;
  Program copy(app_command({"memccp", servers, stored.string()}), file("memccp.log"));
  ASSERT_EQ(copy.wait(30s).value_or(-2), 0) << tail(copy.output());
  Program read_back(app_command({"memccat", servers, "stored.txt"}), file("memccat.log"));
  ASSERT_EQ(read_back.wait(30s).value_or(-2), 0) << tail(read_back.output());
  const std::string fetched = read_back.output();
  const std::string expected = content + "\n";  // memccat ends each value it prints with a newline
  EXPECT_EQ(fetched.size(), expected.size());
  EXPECT_TRUE(fetched == expected) << "memccat gave back other bytes than memccp stored: " << tail(fetched, 300);
  EXPECT_TRUE(server.running()) << tail(server.output());
}

// A fork-per-connection server (socat's fork option: the parent accepts, forks and closes its copy;
// the child serves the inherited connection): 50 connections, 10 at a time, each echoing 64 KiB.
TEST_F(Compat, AForkPerConnectionServerEchoesFiftyConnections) {
  ASSERT_TRUE(start_apps({"socat"}));
  constexpr std::uint16_t kPort = 7000;
  Program server(app_command({"socat", "TCP-LISTEN:7000,reuseaddr,fork,backlog=64", "EXEC:cat"}), file("socat.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kPort)) << tail(server.output());
  echo_rounds(kPort, 5);
  EXPECT_TRUE(server.running()) << tail(server.output());
  EXPECT_EQ(server.output().find(" E "), std::string::npos) << tail(server.output());
  // Each child took its connection over from the parent (a claim), none was refused (the probe of
  // wait_for_port is one more connection).
  expect_replica_counts(50, 0);
}

// The accept-fork-exec server of inetd: each child puts its connection on stdin and stdout and
// execs cat (tests/compat/exec_server.cpp). The exec hands the connection over to cat's image,
// which claims it: 50 connections, 10 at a time, each echoing 64 KiB through cat.
TEST_F(Compat, AnAcceptForkExecServerEchoesThroughCat) {
  ASSERT_TRUE(start_apps({"cat"}));
  run_exec_server(7001, {}, 5);
}

// The same through a shell (`sh -c 'exec cat'`, as inetd services often are scripts): the
// connection passes through two execs before cat claims it.
TEST_F(Compat, AnAcceptForkExecServerEchoesThroughAShell) {
  ASSERT_TRUE(start_apps({"sh", "cat"}));
  run_exec_server(7004, "--shell", 2);
}

// A server that hands each connection to a handler it starts with posix_spawn (closing the
// listener in the child by a file action): the handler claims the connection it inherited.
TEST_F(Compat, AServerSpawningAHandlerPerConnectionEchoes) {
  ASSERT_TRUE(start_apps({}));
  run_exec_server(7003, "--spawn", 2);
}

// A server that execs itself in place with its listener (a daemon re-executing after an upgrade):
// the new image joins the listener the old one left, then serves as above.
TEST_F(Compat, AServerReExecutingItselfKeepsItsListener) {
  ASSERT_TRUE(start_apps({"cat"}));
  constexpr std::uint16_t kPort = 7002;
  Program server(app_command({build_root() + "/tests/flotilla-exec-server", std::to_string(kPort), "--reexec"}),
                 file("reexec-server.log"));
  ASSERT_TRUE(wait_for([&] { return !server.running() || server.output().find("serving") != std::string::npos; }, 15s));
  ASSERT_TRUE(server.running()) << tail(server.output());
  ASSERT_TRUE(wait_for_port(server, app_address(), kPort)) << tail(server.output());
  echo_rounds(kPort, 2);
  EXPECT_TRUE(server.running()) << tail(server.output());
  EXPECT_EQ(server.output().find("cannot take over"), std::string::npos) << tail(server.output());
  expect_replica_counts(20, 1);
}

// A forking Python server (socketserver.ForkingTCPServer): each child echoes its connection, shuts
// it down and leaves with os._exit, so what it wrote last is still in flight when its process is
// gone. As on Linux, the exit closes the connection after those bytes, never with a RST.
TEST_F(Compat, AForkingServerWhoseChildrenExitAtOnceLosesNoByte) {
  ASSERT_TRUE(start_apps({"python3"}));
  constexpr std::uint16_t kPort = 7005;
  const std::string script =
      "import socketserver\n"
      "class Echo(socketserver.BaseRequestHandler):\n"
      "    def handle(self):\n"
      "        while data := self.request.recv(65536):\n"
      "            self.request.sendall(data)\n"
      "class Server(socketserver.ForkingTCPServer):\n"
      "    allow_reuse_address = True\n"
      "    request_queue_size = 64\n"
      "Server(('0.0.0.0', 7005), Echo).serve_forever()\n";
  Program server(app_command({"python3", "-c", script}), file("python.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kPort)) << tail(server.output());
  echo_rounds(kPort, 3);
  EXPECT_TRUE(server.running()) << tail(server.output());
  EXPECT_EQ(server.output().find("Traceback"), std::string::npos) << tail(server.output());
}

// git daemon forks per connection and execs `git daemon --serve`, which runs git upload-pack
// (another fork and exec) on the connection as stdin and stdout; upload-pack writes through stdio
// too, which the C library does with its internal write (on Flotilla it said "fflush error:
// Invalid argument" and every clone failed). Three clones one after the other, then two at once,
// each checked file by file against the repository.
TEST_F(Compat, GitDaemonServesClonesThroughItsExecutedHelpers) {
  ASSERT_TRUE(start_apps({"git"}, 16));  // each clone is served by two processes with a seat each
  constexpr std::uint16_t kPort = 9418;
  const std::filesystem::path source = folder_ / "source";
  std::filesystem::create_directories(source);
  for (int i = 0; i < 40; ++i) {
    std::ofstream(source / ("file" + std::to_string(i))) << std::string(5000 + i * 97, static_cast<char>('a' + i % 26));
  }
  const std::string git = "git -c user.name=flotilla -c user.email=test@flotilla -c init.defaultBranch=main ";
  const CommandOutcome made = run_shell("cd " + source.string() + " && " + git + "init -q && " + git + "add . && " +
                                        git + "commit -q -m tree && " + git + "clone -q --bare . " +
                                        (folder_ / "repo.git").string() + " 2>&1");
  ASSERT_EQ(made.exit_code, 0) << made.output;
  Program daemon(app_command({"git", "daemon", "--reuseaddr", "--export-all", "--base-path=" + folder_.string(),
                              "--port=" + std::to_string(kPort), "--listen=0.0.0.0", folder_.string()}),
                 file("git-daemon.log"));
  ASSERT_TRUE(wait_for_port(daemon, app_address(), kPort)) << tail(daemon.output());
  auto clone = [&](const std::string& name) {
    const std::filesystem::path target = folder_ / name;
    const CommandOutcome cloned = run_in_peer(
        {"git", "clone", "-q", "git://" + app_address() + ":" + std::to_string(kPort) + "/repo.git", target.string()}, 60);
    if (cloned.exit_code != 0) return name + ": " + cloned.output;
    for (int i = 0; i < 40; ++i) {
      const std::string file_name = "file" + std::to_string(i);
      std::ifstream copy(target / file_name), original(source / file_name);
      const std::string got((std::istreambuf_iterator<char>(copy)), std::istreambuf_iterator<char>());
      const std::string want((std::istreambuf_iterator<char>(original)), std::istreambuf_iterator<char>());
      if (got != want) return name + ": " + file_name + " differs";
    }
    return std::string();
  };
  expect_fetched_in_turn_and_at_once(clone, "clone");
  EXPECT_TRUE(daemon.running()) << tail(daemon.output());
  // (wait_for_port's probe connection closes without a request: "the remote end hung up", as on Linux.)
  EXPECT_EQ(daemon.output().find("error"), std::string::npos) << tail(daemon.output());
  EXPECT_EQ(daemon.output().find("flotilla:"), std::string::npos) << "[" << daemon.output() << "]";
}

// rsync's daemon forks a child per connection, which chroots into the module and drops to nobody
// before it sends the tree: three syncs one after the other, then two at once, each compared file
// by file (a 2 MB file among 30 small ones).
TEST_F(Compat, RsyncDaemonServesAChrootedModule) {
  ASSERT_TRUE(start_apps({"rsync"}, 16));
  constexpr std::uint16_t kPort = 8730;
  const std::filesystem::path module = folder_ / "module";
  std::filesystem::create_directories(module);
  ASSERT_EQ(run_shell("head -c 2000000 /dev/urandom > " + (module / "big.bin").string()).exit_code, 0);
  for (int i = 0; i < 30; ++i) std::ofstream(module / ("file" + std::to_string(i))) << "file " << i << "\n";
  // The module must be readable by nobody (the test's folder is root's alone).
  std::filesystem::permissions(folder_, std::filesystem::perms::others_exec | std::filesystem::perms::group_exec,
                               std::filesystem::perm_options::add);
  std::ofstream(file("rsyncd.conf")) << "port = " << kPort << "\naddress = " << app_address()
                                     << "\nuse chroot = yes\nuid = nobody\ngid = nogroup\nlog file = "
                                     << file("rsyncd.log").string() << "\n[data]\n  path = " << module.string()
                                     << "\n  read only = yes\n";
  Program daemon(app_command({"rsync", "--daemon", "--no-detach", "--config=" + file("rsyncd.conf").string()}),
                 file("rsync.out"));
  ASSERT_TRUE(wait_for_port(daemon, app_address(), kPort)) << tail(daemon.output());
  auto sync = [&](const std::string& name) {
    const std::filesystem::path target = folder_ / name;
    const CommandOutcome synced = run_in_peer(
        {"rsync", "-a", "rsync://" + app_address() + ":" + std::to_string(kPort) + "/data/", target.string() + "/"}, 60);
    if (synced.exit_code != 0) return name + ": " + synced.output;
    const CommandOutcome compared = run_shell("diff -r " + module.string() + " " + target.string() + " 2>&1");
    return compared.exit_code == 0 ? std::string() : name + ": " + compared.output;
  };
  expect_fetched_in_turn_and_at_once(sync, "sync");
  EXPECT_TRUE(daemon.running()) << tail(daemon.output());
}

// mosquitto, a single-threaded MQTT broker: a subscriber gets every one of 300 messages a
// publisher sends at QoS 1, in order.
TEST_F(Compat, MosquittoRelaysEveryMessageToASubscriber) {
  ASSERT_TRUE(start_apps({"mosquitto", "mosquitto_sub", "mosquitto_pub"}));
  constexpr std::uint16_t kPort = 1883;
  std::ofstream(file("mosquitto.conf")) << "listener " << kPort << " " << app_address()
                                        << "\nallow_anonymous true\nlog_type all\nlog_dest stderr\n";
  Program broker(app_command({"mosquitto", "-c", file("mosquitto.conf").string()}), file("mosquitto.out"));
  ASSERT_TRUE(wait_for_port(broker, app_address(), kPort)) << tail(broker.output());
  const std::string port = std::to_string(kPort);
  Program subscriber(peer_command({"mosquitto_sub", "-h", app_address(), "-p", port, "-t", "flotilla/test", "-q", "1",
                                   "-C", "300", "-W", "30"}),
                     file("subscriber.out"));
  // The broker logs (log_type all) when it acknowledged the subscription.
  ASSERT_TRUE(wait_for([&] { return broker.output().find("Sending SUBACK") != std::string::npos; }, 15s))
      << tail(broker.output());
  std::string expected;
  for (int i = 0; i < 300; ++i) expected += "message " + std::to_string(i) + "\n";
  std::ofstream(file("messages")) << expected;
  const CommandOutcome published = run_in_peer(
      {"mosquitto_pub", "-h", app_address(), "-p", port, "-t", "flotilla/test", "-q", "1", "-l"}, 30, file("messages").string());
  EXPECT_EQ(published.exit_code, 0) << published.output;
  EXPECT_TRUE(wait_for([&] { return !subscriber.running(); }, 30s));
  EXPECT_EQ(subscriber.output(), expected);
  EXPECT_TRUE(broker.running()) << tail(broker.output());
}

// sshd shares its connection over fork (issue 14's holders): the process it re-executes for the
// connection forks a pre-authentication child, confined with seccomp, that does the key exchange
// and the public-key authentication and exits; the monitor, its parent, then carries on with the
// connection for a root login's session. A command run over ssh answers through it.
TEST_F(Compat, SshdRunsACommandForAPublicKeyLogin) {
  if (!std::filesystem::exists("/usr/sbin/sshd") || !on_path("ssh") || !on_path("ssh-keygen")) {
    GTEST_SKIP() << "sshd or ssh is not installed (./dev installs openssh-server and openssh-client)";
  }
  ASSERT_TRUE(start_apps({}, 16));
  constexpr std::uint16_t kPort = 2222;
  const std::string folder = folder_.string();
  const CommandOutcome keys = run_shell("ssh-keygen -q -t ed25519 -N '' -f " + folder + "/host_key && ssh-keygen -q " +
                                        "-t ed25519 -N '' -f " + folder + "/client_key && cp " + folder +
                                        "/client_key.pub " + folder + "/authorized_keys 2>&1");
  ASSERT_EQ(keys.exit_code, 0) << keys.output;
  std::filesystem::create_directories("/run/sshd");  // its privilege separation directory
  std::ofstream(file("sshd_config")) << "Port " << kPort << "\nListenAddress 0.0.0.0\nHostKey " << folder
                                     << "/host_key\nPidFile none\nUsePAM no\nStrictModes no\nAuthorizedKeysFile "
                                     << folder << "/authorized_keys\nPasswordAuthentication no\n"
                                     << "KbdInteractiveAuthentication no\n";
  Program sshd(app_command({"/usr/sbin/sshd", "-D", "-e", "-f", folder + "/sshd_config"}), file("sshd.log"));
  ASSERT_TRUE(wait_for_port(sshd, app_address(), kPort)) << tail(sshd.output());
  std::string line = "timeout 60 ";
  for (const std::string& word :
       peer_command({"ssh", "-p", std::to_string(kPort), "-i", folder + "/client_key", "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o",
                     "ConnectTimeout=20", "root@" + app_address(), "echo", "hello"})) {
    line += word + " ";
  }
  const CommandOutcome logged = run_shell(line + "2>&1");
  EXPECT_EQ(logged.exit_code, 0) << logged.output << "\nsshd: " << tail(sshd.output());
  EXPECT_EQ(logged.output, "hello\n") << tail(sshd.output());
  EXPECT_TRUE(sshd.running()) << tail(sshd.output());
}

TEST_F(Compat, RedisServesTwoThousandClients) { serve_redis_clients(2000, 20000); }

TEST_F(Compat, RedisServesTenThousandClients) { serve_redis_clients(10000, 20000); }

}  // namespace
}  // namespace flotilla::testing

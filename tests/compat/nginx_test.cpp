// Debian's nginx under `flotilla run` (issue 14's compat suite): a master and 2 or 4 pre-forked
// workers sharing one listener (a listener group on every TCP replica), plain and with
// `reuseport` (a listener per worker on one address:port), and nginx's own daemonizing. wrk in the
// stack's peer namespace drives it; every worker must serve (nginx's access log names the pid that
// served each request), wrk must count no error, and after a reload (SIGHUP: new workers join, the
// old ones leave) the new workers serve as cleanly, and a reload while wrk runs loses no request.
// Root: skipped without; a missing nginx, wrk or
// preload library is a failure.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/apps/apps_fixture.hpp"

namespace flotilla::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::uint16_t kPort = 8080;
constexpr const char* kNginx = "/usr/sbin/nginx";
// A master and 4 workers, and during a reload 4 more workers until the old ones are gone (they
// wait for a seat: Runtime::lease_own_seat).
constexpr int kSeats = 7;

struct Case {
  int workers;
  bool reuseport;
  bool daemon;
  bool as_nobody = false;  // workers switch to the user nobody, as nginx's packaged configuration does
  int worker_connections = 1024;
  bool crash_replica_between_rounds = false;  // tcp0 crashes while the connections are held
};

// What `count` keep-alive connections held open at once saw over `rounds` rounds of one request
// on each.
struct HeldConnectionsOutcome {
  int connected = 0;
  std::vector<int> answered;               // per round: replies that were nginx's 200 with its body
  std::map<std::string, int> failures;     // what went wrong, counted by kind
  std::chrono::duration<double> connecting{0};
  std::vector<std::chrono::duration<double>> rounds;
};

// Opens `count` kernel connections to address:port from the calling thread's namespace (at most
// kConnectsInFlight in the handshake at a time, so the ramp stays under nginx's listen backlog),
// holds them all, then `rounds` times sends one request on every one and reads every reply, with
// `between_rounds` called before each round but the first. A connection that fails is closed and
// counted; all of it ends by `limit`.
HeldConnectionsOutcome hold_connections_and_ask(const std::string& address, std::uint16_t port, int count, int rounds,
                                                std::chrono::seconds limit, const std::function<void()>& between_rounds) {
  constexpr int kConnectsInFlight = 400;
  constexpr std::string_view kRequest = "GET / HTTP/1.1\r\nHost: flotilla\r\n\r\n";
  HeldConnectionsOutcome outcome;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  const auto past_deadline = [&] { return std::chrono::steady_clock::now() >= deadline; };
  const int poller = ::epoll_create1(EPOLL_CLOEXEC);
  if (poller < 0) {
    ++outcome.failures[std::string("epoll_create1: ") + std::strerror(errno)];
    return outcome;
  }
  std::vector<int> fds(static_cast<std::size_t>(count), -1);
  const auto unwatch = [&](int index) { (void)::epoll_ctl(poller, EPOLL_CTL_DEL, fds[static_cast<std::size_t>(index)], nullptr); };
  const auto drop = [&](int index, const std::string& why) {
    ++outcome.failures[why];
    unwatch(index);
    ::close(fds[static_cast<std::size_t>(index)]);
    fds[static_cast<std::size_t>(index)] = -1;
  };
  // `call` failed on connection `index`, with errno saying why.
  const auto drop_after = [&](int index, const char* call) { drop(index, std::string(call) + ": " + std::strerror(errno)); };
  // Watches connection `index` for `events`; false, the connection dropped, when epoll refuses.
  const auto watch = [&](int index, std::uint32_t events) {
    epoll_event event{};
    event.events = events;
    event.data.u32 = static_cast<std::uint32_t>(index);
    if (::epoll_ctl(poller, EPOLL_CTL_ADD, fds[static_cast<std::size_t>(index)], &event) == 0) return true;
    drop_after(index, "epoll_ctl");
    return false;
  };
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
  std::vector<epoll_event> events(512);

  const auto connecting_since = std::chrono::steady_clock::now();
  int next = 0;
  int in_flight = 0;
  while ((next < count || in_flight > 0) && !past_deadline()) {
    for (; next < count && in_flight < kConnectsInFlight; ++next) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        ++outcome.failures[std::string("socket: ") + std::strerror(errno)];
        continue;
      }
      fds[static_cast<std::size_t>(next)] = fd;
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0 && errno != EINPROGRESS) {
        drop_after(next, "connect");
        continue;
      }
      if (watch(next, EPOLLOUT)) ++in_flight;
    }
    const int ready = ::epoll_wait(poller, events.data(), static_cast<int>(events.size()), 100);
    for (int e = 0; e < ready; ++e) {
      const int index = static_cast<int>(events[static_cast<std::size_t>(e)].data.u32);
      --in_flight;
      int error = 0;
      socklen_t length = sizeof(error);
      (void)::getsockopt(fds[static_cast<std::size_t>(index)], SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0) {
        drop(index, std::string("connect: ") + std::strerror(error));
        continue;
      }
      unwatch(index);
      ++outcome.connected;
    }
  }
  if (in_flight > 0) outcome.failures["connect: not established in time"] += in_flight;
  outcome.connecting = std::chrono::steady_clock::now() - connecting_since;

  std::vector<std::string> replies(static_cast<std::size_t>(count));
  for (int round = 0; round < rounds; ++round) {
    if (round > 0) between_rounds();
    const auto round_since = std::chrono::steady_clock::now();
    int answered = 0;
    int waiting = 0;
    for (int index = 0; index < count; ++index) {
      const int fd = fds[static_cast<std::size_t>(index)];
      if (fd < 0) continue;
      replies[static_cast<std::size_t>(index)].clear();
      if (::send(fd, kRequest.data(), kRequest.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(kRequest.size())) {
        drop_after(index, "send");
        continue;
      }
      if (watch(index, EPOLLIN)) ++waiting;
    }
    while (waiting > 0 && !past_deadline()) {
      const int ready = ::epoll_wait(poller, events.data(), static_cast<int>(events.size()), 100);
      for (int e = 0; e < ready; ++e) {
        const int index = static_cast<int>(events[static_cast<std::size_t>(e)].data.u32);
        std::string& reply = replies[static_cast<std::size_t>(index)];
        char buffer[1024];
        const ssize_t got = ::recv(fds[static_cast<std::size_t>(index)], buffer, sizeof(buffer), 0);
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (got <= 0) {
          drop(index, got == 0 ? "closed by the server" : std::string("recv: ") + std::strerror(errno));
          --waiting;
          continue;
        }
        reply.append(buffer, static_cast<std::size_t>(got));
        // nginx's reply: a 200 whose body is "served\n" (Content-Length 7).
        const std::size_t head_end = reply.find("\r\n\r\n");
        if (head_end == std::string::npos || reply.size() < head_end + 4 + 7) continue;
        --waiting;
        if (reply.rfind("HTTP/1.1 200 ", 0) != 0 || reply.compare(head_end + 4, std::string::npos, "served\n") != 0) {
          drop(index, "a wrong reply: " + reply.substr(0, 40));
          continue;
        }
        unwatch(index);
        ++answered;
      }
    }
    if (waiting > 0) outcome.failures["no reply in time"] += waiting;
    outcome.answered.push_back(answered);
    outcome.rounds.push_back(std::chrono::steady_clock::now() - round_since);
  }
  for (const int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
  ::close(poller);
  return outcome;
}

class Nginx : public AppsTest, public ::testing::WithParamInterface<Case> {
 protected:
  void TearDown() override {
    stop_master();
    AppsTest::TearDown();
  }

  // nginx.conf for `setting`: requests are answered from memory, and the access log says which
  // worker served each.
  void write_config(const Case& setting) {
    std::filesystem::create_directories(file("temp"));
    std::ofstream(file("nginx.conf"))
        << "user " << (setting.as_nobody ? "nobody nogroup" : "root") << ";\n"
        << "daemon " << (setting.daemon ? "on" : "off") << ";\n"
        << "master_process on;\n"
        << "worker_processes " << setting.workers << ";\n"
        // Room for every connection and nginx's own files.
        << (setting.worker_connections > 1024
                ? "worker_rlimit_nofile " + std::to_string(setting.worker_connections + 1024) + ";\n"
                : "")
        << "pid " << file("nginx.pid").string() << ";\n"
        << "error_log " << file("error.log").string() << " notice;\n"
        << "events { worker_connections " << setting.worker_connections << "; }\n"
        << "http {\n"
        << "  log_format served '$pid $status';\n"
        << "  access_log " << file("access.log").string() << " served;\n"
        << "  client_body_temp_path " << file("temp").string() << "/body;\n"
        << "  proxy_temp_path " << file("temp").string() << "/proxy;\n"
        << "  fastcgi_temp_path " << file("temp").string() << "/fastcgi;\n"
        << "  uwsgi_temp_path " << file("temp").string() << "/uwsgi;\n"
        << "  scgi_temp_path " << file("temp").string() << "/scgi;\n"
        << "  server {\n"
        << "    listen " << app_address() << ":" << kPort << (setting.reuseport ? " reuseport" : "") << ";\n"
        << "    location / { return 200 \"served\\n\"; }\n"
        << "  }\n"
        << "}\n";
  }

  // What nginx said: its output and the end of its error log.
  std::string said(const Program& server) const {
    std::ifstream errors(file("error.log"));
    const std::string log((std::istreambuf_iterator<char>(errors)), std::istreambuf_iterator<char>());
    return tail(server.output()) + "\nerror.log:\n" + tail(log);
  }

  pid_t master() const {
    std::ifstream pid_file(file("nginx.pid"));
    pid_t pid = 0;
    pid_file >> pid;
    return pid;
  }

  // The master's children (its workers), from /proc.
  std::set<pid_t> workers() const {
    std::set<pid_t> children;
    const pid_t parent = master();
    if (parent <= 0) return children;
    std::ifstream list("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) + "/children");
    for (pid_t child = 0; list >> child;) children.insert(child);
    return children;
  }

  // nginx under `flotilla run` (or in the kernel's namespace) with the config write_config made.
  // nginx installed, the stack (or the kernel side) up with wrk, and the configuration written.
  ::testing::AssertionResult prepare(const Case& setting) {
    if (!std::filesystem::exists(kNginx)) {
      return ::testing::AssertionFailure() << kNginx << " is not installed (./dev installs its Debian package)";
    }
    ::testing::AssertionResult started = start_apps({"wrk"}, kSeats);
    if (!started) return started;
    write_config(setting);
    return ::testing::AssertionSuccess();
  }

  Program start_nginx() const {
    return Program(app_command({kNginx, "-p", folder_.string(), "-c", file("nginx.conf").string(), "-e",
                                file("error.log").string()}),
                   file("nginx.log"));
  }

  // Whether `server` (not daemonized) came up with `count` workers and listens.
  ::testing::AssertionResult serving_with(Program& server, int count) {
    if (!wait_for([&] { return static_cast<int>(workers().size()) == count || !server.running(); }, 15s) ||
        !wait_for_port(server, app_address(), kPort)) {
      return ::testing::AssertionFailure() << workers().size() << " workers\n" << said(server);
    }
    return ::testing::AssertionSuccess();
  }

  // SIGHUP to the master: `count` new workers, none of `before`, must take over and serve.
  void reload_and_expect_new_workers_serve(const std::set<pid_t>& before, int count, const Program& server) {
    ASSERT_EQ(::kill(master(), SIGHUP), 0);
    ASSERT_TRUE(wait_for(
        [&] {
          const std::set<pid_t> now = workers();
          if (static_cast<int>(now.size()) != count) return false;
          for (const pid_t pid : now) {
            if (before.contains(pid)) return false;
          }
          return true;
        },
        20s))
        << "the old workers did not give way to new ones\n"
        << said(server);
    expect_every_worker_serves(workers());
  }

  // nginx's error log names no emergency, alert or crashed worker.
  void expect_clean_error_log() const {
    std::ifstream errors(file("error.log"));
    const std::string text((std::istreambuf_iterator<char>(errors)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text.find("[emerg]"), std::string::npos) << tail(text);
    EXPECT_EQ(text.find("[alert]"), std::string::npos) << tail(text);
    EXPECT_EQ(text.find("exited on signal"), std::string::npos) << tail(text);
  }

  // Whether `pid` exited (a zombie included: the daemon is not our child).
  static bool gone(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    const std::size_t end = line.rfind(')');
    return end == std::string::npos || end + 2 >= line.size() || line[end + 2] == 'Z' || line[end + 2] == 'X';
  }

  // The real user id of `pid`, from /proc; -1 when it cannot be read.
  static int real_uid_of(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Uid:", 0) == 0) return std::atoi(line.c_str() + 4);
    }
    return -1;
  }

  void stop_master() {
    const pid_t pid = master();
    if (pid <= 0 || ::kill(pid, 0) != 0) return;
    (void)::kill(pid, SIGTERM);
    if (!wait_for([&] { return ::kill(pid, 0) != 0; }, 10s)) (void)::kill(pid, SIGKILL);
  }

  // Requests each pid served, from the access log lines past `from` (a byte offset).
  std::map<pid_t, int> served_since(std::size_t from) const {
    std::ifstream log(file("access.log"));
    log.seekg(static_cast<std::streamoff>(from));
    std::map<pid_t, int> served;
    pid_t pid = 0;
    int status = 0;
    while (log >> pid >> status) ++served[pid];
    return served;
  }
  std::size_t access_log_bytes() const {
    std::error_code error;
    const auto bytes = std::filesystem::file_size(file("access.log"), error);
    return error ? 0 : static_cast<std::size_t>(bytes);
  }

  // wrk against nginx; then every one of `expected` served some of it, and nobody else did.
  void expect_every_worker_serves(const std::set<pid_t>& expected) {
    const std::size_t from = access_log_bytes();
    const auto report = run_wrk({"-c", "32", "-t", "2", "-d", "3s", "--timeout", "2s",
                                 "http://" + app_address() + ":" + std::to_string(kPort) + "/"});
    expect_clean(report);
    // nginx writes its access log as each request ends; wrk's last ones are in by now.
    const auto served = served_since(from);
    for (const auto& [pid, count] : served) {
      std::printf("worker %d served %d requests\n", static_cast<int>(pid), count);
      EXPECT_TRUE(expected.contains(pid)) << "pid " << pid << " served, not one of the workers";
    }
    for (const pid_t pid : expected) EXPECT_GT(served.contains(pid) ? served.at(pid) : 0, 0) << "worker " << pid;
  }
};

TEST_P(Nginx, EveryWorkerServesAndAReloadKeepsServing) {
  const Case setting = GetParam();
  if (side_ != Side::flotilla && setting.daemon) GTEST_SKIP() << "the daemon case is Flotilla's (lease adoption)";
  ASSERT_TRUE(prepare(setting));
  Program server = start_nginx();
  const auto server_up = [&] { return server.running() || setting.daemon; };
  ASSERT_TRUE(wait_for([&] { return static_cast<int>(workers().size()) == setting.workers || !server_up(); }, 15s))
      << workers().size() << " workers of master " << master() << "\n" << said(server);
  ASSERT_TRUE(wait_for_port(server, app_address(), kPort) || setting.daemon) << said(server);
  if (setting.daemon) {
    ASSERT_TRUE(wait_for([&] { return in_namespace(names_.peer_namespace, [&] { return port_open(app_address(), kPort); }); },
                         15s));
  }
  const std::set<pid_t> first = workers();
  expect_every_worker_serves(first);
  // Looked at once they served: a worker changes its user after it starts.
  if (setting.as_nobody) {
    for (const pid_t worker : first) EXPECT_EQ(real_uid_of(worker), 65534) << "worker " << worker;
  }

  // A reload: nginx starts new workers, which join the group, and tells the old ones to leave.
  reload_and_expect_new_workers_serve(first, setting.workers, server);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(server_up()) << said(server);
  expect_clean_error_log();
  expect_served_by_flotilla();
}

// nginx's binary upgrade: USR2 makes the master fork and exec the binary again, passing its
// listeners by number (the NGINX environment variable); the new master's workers serve beside the
// old ones, QUIT ends the old master and its workers, and the new generation serves alone, and
// through a reload of its own.
// nginx changes binary only daemonized: it ignores USR2 while the process that started it (here
// `flotilla run`) lives.
class NginxUpgrade : public Nginx {};

TEST_P(NginxUpgrade, ABinaryUpgradeKeepsServing) {
  const Case setting = GetParam();
  ASSERT_TRUE(prepare(setting));
  Program server = start_nginx();
  ASSERT_TRUE(wait_for([&] { return static_cast<int>(workers().size()) == setting.workers; }, 15s)) << said(server);
  ASSERT_TRUE(wait_for([&] { return in_namespace(names_.peer_namespace, [&] { return port_open(app_address(), kPort); }); },
                       15s));
  const pid_t old_master = master();
  const std::set<pid_t> old_workers = workers();
  expect_every_worker_serves(old_workers);

  ASSERT_EQ(::kill(old_master, SIGUSR2), 0);
  ASSERT_TRUE(wait_for([&] { return master() != old_master && master() > 0 && static_cast<int>(workers().size()) == setting.workers; },
                       20s))
      << "no new master with " << setting.workers << " workers\n" << said(server);
  const std::set<pid_t> new_workers = workers();
  ASSERT_EQ(::kill(old_master, SIGQUIT), 0);
  ASSERT_TRUE(wait_for([&] { return gone(old_master); }, 20s)) << "the old master did not quit\n" << said(server);
  expect_every_worker_serves(new_workers);

  reload_and_expect_new_workers_serve(new_workers, setting.workers, server);
  if (HasFatalFailure()) return;
  expect_clean_error_log();
  expect_served_by_flotilla();
}

// A reload while wrk runs, one connection per request (what a leaving worker could take along are
// the connections queued at it): wrk must count no socket error and no reply other than 2xx.
class NginxReloadUnderLoad : public Nginx {};

TEST_P(NginxReloadUnderLoad, AReloadWhileWrkRunsLosesNoRequest) {
  const Case setting = GetParam();
  ASSERT_TRUE(prepare(setting));
  Program server = start_nginx();
  ASSERT_TRUE(serving_with(server, setting.workers));
  const std::set<pid_t> first = workers();
  const std::size_t from = access_log_bytes();
  WrkReport report;
  std::thread load([&] {
    report = run_wrk({"-c", "16", "-t", "2", "-d", "5s", "--timeout", "2s", "-H", "Connection: close",
                      "http://" + app_address() + ":" + std::to_string(kPort) + "/"},
                     "wrk-reload.log");
  });
  // Under load: the reload comes once the first workers served.
  const bool serving = wait_for([&] { return access_log_bytes() > from; }, 10s);
  const bool signalled = serving && ::kill(master(), SIGHUP) == 0;
  const bool replaced = signalled && wait_for(
                                         [&] {
                                           const std::set<pid_t> now = workers();
                                           return static_cast<int>(now.size()) == setting.workers &&
                                                  std::none_of(now.begin(), now.end(),
                                                               [&](pid_t pid) { return first.contains(pid); });
                                         },
                                         20s);
  load.join();
  ASSERT_TRUE(serving) << "wrk's requests were not served\n" << said(server);
  ASSERT_TRUE(signalled);
  ASSERT_TRUE(replaced) << "the old workers did not give way to new ones\n" << said(server);
  expect_clean(report);
  const auto served = served_since(from);
  const std::set<pid_t> second = workers();
  EXPECT_TRUE(std::any_of(served.begin(), served.end(), [&](const auto& entry) { return second.contains(entry.first); }))
      << "no new worker served during the run";
  EXPECT_TRUE(server.running()) << said(server);
  expect_clean_error_log();
  expect_served_by_flotilla();
}

// 10,000 connections at once (issue 14's c10k): 2 workers sharing the listener, or each with its
// own (reuseport), hold 10,000 keep-alive connections from the peer namespace; every connection
// gets an answer to a request, twice, every worker serves some, and nothing fails; in the third
// case tcp0 crashes between the two rounds. 10-20 s each, so in the suite `slow`
// (compat-nginx-c10k).
class NginxTenThousand : public Nginx {};

TEST_P(NginxTenThousand, TwoWorkersHoldTenThousandConnectionsAndAnswerEach) {
  constexpr int kConnections = 10000;
  constexpr int kRounds = 2;
  const Case setting = GetParam();
  if (setting.crash_replica_between_rounds && side_ != Side::flotilla) GTEST_SKIP() << "a replica crash is Flotilla's";
  // This process holds every client connection: its soft limit goes up to the hard one.
  rlimit files{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_max < static_cast<rlim_t>(setting.worker_connections + 1024) ||
      files.rlim_max < static_cast<rlim_t>(kConnections + 256)) {
    GTEST_SKIP() << "the hard limit of open files (" << files.rlim_max << ") is below what 10,000 connections need";
  }
  files.rlim_cur = files.rlim_max;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &files), 0);
  ASSERT_TRUE(prepare(setting));
  Program server = start_nginx();
  ASSERT_TRUE(serving_with(server, setting.workers));
  const std::set<pid_t> serving = workers();
  const std::size_t from = access_log_bytes();

  // Issue 15 under c10k: the held connections, each with TCP_NODELAY set by nginx, survive their
  // replica's crash.
  bool crashed = true;
  const auto between_rounds = [&] {
    if (!setting.crash_replica_between_rounds) return;
    crashed = cli("inject tcp0 crash").exit_code == 0 &&
              wait_for([&] { return events().find("tcp0#2") != std::string::npos; }, 10s);
  };
  const HeldConnectionsOutcome outcome = in_namespace(names_.peer_namespace, [&] {
    return hold_connections_and_ask(app_address(), kPort, kConnections, kRounds, 150s, between_rounds);
  });
  EXPECT_TRUE(crashed) << "tcp0 was not crashed and restarted\n" << events();
  std::printf("%d connections held in %.1f s", outcome.connected, outcome.connecting.count());
  for (std::size_t round = 0; round < outcome.rounds.size(); ++round) {
    std::printf("; round %zu: %d answered in %.1f s", round + 1, outcome.answered[round], outcome.rounds[round].count());
  }
  std::printf("\n");
  EXPECT_EQ(outcome.connected, kConnections);
  ASSERT_EQ(outcome.answered.size(), static_cast<std::size_t>(kRounds));
  for (const int answered : outcome.answered) EXPECT_EQ(answered, kConnections);
  for (const auto& [why, count] : outcome.failures) ADD_FAILURE() << count << " connections: " << why;

  // nginx logged every request, each served by one of its workers, and each worker served some.
  const auto served = served_since(from);
  int logged = 0;
  for (const auto& [pid, count] : served) {
    std::printf("worker %d served %d requests\n", static_cast<int>(pid), count);
    EXPECT_TRUE(serving.contains(pid)) << "pid " << pid << " served, not one of the workers";
    logged += count;
  }
  EXPECT_EQ(logged, kConnections * kRounds);
  for (const pid_t pid : serving) EXPECT_GT(served.contains(pid) ? served.at(pid) : 0, 0) << "worker " << pid;
  EXPECT_TRUE(server.running()) << said(server);
  expect_clean_error_log();
  expect_served_by_flotilla();
}

INSTANTIATE_TEST_SUITE_P(Workers, NginxTenThousand,
                         ::testing::Values(Case{2, false, false, false, 10240}, Case{2, true, false, false, 10240},
                                           Case{2, false, false, false, 10240, true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.reuseport ? "2WorkersReuseport" : "2Workers") +
                                  (info.param.crash_replica_between_rounds ? "ThroughAReplicaCrash" : "");
                         });

INSTANTIATE_TEST_SUITE_P(Workers, Nginx,
                         ::testing::Values(Case{2, false, false}, Case{4, false, false}, Case{2, true, false},
                                           Case{4, true, false}, Case{2, false, true},
                                           Case{2, false, false, true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::to_string(info.param.workers) + "Workers" +
                                  (info.param.reuseport ? "Reuseport" : "") + (info.param.daemon ? "Daemon" : "") +
                                  (info.param.as_nobody ? "AsNobody" : "");
                         });

INSTANTIATE_TEST_SUITE_P(Workers, NginxReloadUnderLoad, ::testing::Values(Case{2, false, false}, Case{4, false, false}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::to_string(info.param.workers) + "Workers";
                         });

INSTANTIATE_TEST_SUITE_P(Daemon, NginxUpgrade, ::testing::Values(Case{2, false, true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::to_string(info.param.workers) + "Workers";
                         });

}  // namespace
}  // namespace flotilla::testing

// The compatibility suite's web servers beyond nginx, each Debian's package run unmodified under
// `flotilla run` against kernel clients in the peer namespace:
//   - apache2 with the event MPM: a master, two children of 8 threads each running as www-data
//     (a fork child that changes user leases through its parent), TCP_DEFER_ACCEPT set on the
//     listener, a request the moment the port opens (the master's listener alone, which never
//     accepts, is placed it), and a graceful restart (SIGUSR1) whose new children serve;
//   - haproxy with two threads proxying to a kernel server in the peer namespace (Flotilla as the
//     client side too);
//   - varnish caching a kernel server in the peer namespace: its backend connections are made as
//     varnish makes them (FIONBIO, then a poll for POLLWRNORM alone);
//   - Python's http.server on a dual-stack socket ([::], IPV6_V6ONLY off), as Java's servers and
//     programs that listen on :: make theirs: IPv4 clients of the stack reach it.
// FLOTILLA_APPS_TEST_SIDE=kernel runs the same cases on kernel sockets (tests/apps/apps_fixture.hpp).
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/apps/apps_fixture.hpp"

namespace flotilla::testing {
namespace {

// GET `path` over HTTP/1.0 from address:port: the body of a 200 answer, or what went wrong.
struct Fetched {
  std::string body;
  std::string problem;  // "" for a 200 answer
};

Fetched http_get(const std::string& address, std::uint16_t port, const std::string& path,
                 std::chrono::seconds timeout = 10s) {
  const int fd = connect_blocking(address, port, timeout);
  if (fd < 0) return {"", std::string("connect: ") + std::strerror(errno)};
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: test\r\n\r\n";
  std::string response;
  int error = 0;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    error = errno;
  } else {
    char chunk[16384];
    ssize_t got = 0;
    while ((got = ::recv(fd, chunk, sizeof(chunk), 0)) > 0) response.append(chunk, static_cast<std::size_t>(got));
    if (got < 0) error = errno;
  }
  ::close(fd);
  const auto end_of_headers = response.find("\r\n\r\n");
  if (error != 0 || response.rfind("HTTP/1.", 0) != 0 || response.find(" 200 ") != 8 || end_of_headers == std::string::npos) {
    return {"", "after " + std::to_string(response.size()) + " bytes (" + response.substr(0, 40) + "): " +
                    (error != 0 ? std::strerror(error) : "no 200 answer")};
  }
  return {response.substr(end_of_headers + 4), ""};
}

std::string random_bytes(std::size_t count, unsigned seed) {
  std::mt19937 random(seed);
  std::string bytes(count, '\0');
  for (char& byte : bytes) byte = static_cast<char>(random());
  return bytes;
}

class WebServers : public AppsTest {
 protected:
  // A document root readable by other users (the servers' workers run as www-data) holding a
  // small page and a 200 KB file of random bytes.
  void make_documents() {
    ::chmod(folder().c_str(), 0755);
    std::filesystem::create_directories(file("htdocs"));
    ::chmod(file("htdocs").c_str(), 0755);
    std::ofstream(file("htdocs/index.html")) << page_;
    std::ofstream(file("htdocs/blob"), std::ios::binary) << blob_;
  }

  // `rounds` fetches of each document from the peer namespace, each compared with what was written.
  // `query`: each round asks for other URLs (a cache in front of the server misses each time).
  int fetches_intact(const std::string& address, std::uint16_t port, int rounds, bool query = false) {
    return in_namespace(names_.peer_namespace, [&] {
      int intact = 0;
      for (int round = 0; round < rounds; ++round) {
        const std::string suffix = query ? "?round=" + std::to_string(round) : "";
        for (const auto& [path, expected] : {std::pair<std::string, const std::string*>{"/index.html", &page_},
                                             std::pair<std::string, const std::string*>{"/blob", &blob_}}) {
          const Fetched fetched = http_get(address, port, path + suffix);
          if (fetched.problem.empty() && fetched.body == *expected) {
            ++intact;
          } else {
            std::printf("round %d %s: %s\n", round, path.c_str(),
                        fetched.problem.empty() ? "other bytes than written" : fetched.problem.c_str());
          }
        }
      }
      return intact;
    });
  }

  const std::filesystem::path& folder() const { return folder_; }

  // Two seconds of wrk (8 connections) on the page: every answer a 2xx.
  void expect_wrk_served(std::uint16_t port) const {
    const auto load = run_wrk({"-t2", "-c8", "-d2s", "http://" + app_address() + ":" + std::to_string(port) + "/index.html"});
    EXPECT_EQ(load.status.value_or(-1), 0);
    EXPECT_GT(load.requests, 0u);
    EXPECT_EQ(load.text.find("Non-2xx"), std::string::npos) << load.text;
  }

  // The documents, and a kernel HTTP server of them in the peer namespace for the proxies to
  // reach: null when it did not start listening.
  std::unique_ptr<Program> serve_documents_from_peer(std::uint16_t port) {
    make_documents();
    auto backend = std::make_unique<Program>(
        peer_command({"python3", "-m", "http.server", std::to_string(port), "--bind", peer_address(), "--directory",
                      file("htdocs").string()}),
        file("backend.log"));
    const bool listening = wait_for([&] {
      return !backend->running() || in_namespace(names_.peer_namespace, [&] { return port_open(peer_address(), port); });
    }, 15s) && backend->running();
    return listening ? std::move(backend) : nullptr;
  }

  // The TCP replicas' listener-group counters, summed: what became of the connections placed with
  // members that left or did not accept.
  void print_group_counters() const {
    if (side_ != Side::flotilla) return;
    std::map<std::string, std::uint64_t> sums = summed_counters("tcp");
    for (const char* name : {"group_held", "group_held_announced", "group_moved_to_acceptor",
                             "group_moved_on_leave", "group_reset_on_leave"}) {
      std::printf("%s %llu\n", name, static_cast<unsigned long long>(sums[name]));
    }
  }


  const std::string page_ = "served by a web server on Flotilla\n";
  const std::string blob_ = random_bytes(200'000, 7);
};

TEST_F(WebServers, ApacheEventMpmServesAsWwwDataAndRestartsGracefully) {
  ASSERT_TRUE(start_apps({"apache2"}, 8));
  make_documents();
  constexpr std::uint16_t kPort = 8003;
  const std::string modules = "/usr/lib/apache2/modules/";
  std::ofstream(file("httpd.conf"))
      << "ServerRoot " << folder().string() << "\nPidFile " << file("httpd.pid").string()
      << "\nLoadModule mpm_event_module " << modules << "mod_mpm_event.so\nLoadModule authz_core_module " << modules
      << "mod_authz_core.so\nLoadModule dir_module " << modules << "mod_dir.so\nLoadModule mime_module " << modules
      << "mod_mime.so\nTypesConfig /etc/mime.types\nUser www-data\nGroup www-data\nServerName test\nListen "
      << app_address() << ":" << kPort << "\nDocumentRoot " << file("htdocs").string() << "\nErrorLog "
      << file("error.log").string()
      << "\nLogLevel notice\nStartServers 2\nServerLimit 2\nThreadsPerChild 8\nMaxRequestWorkers 16\n"
         "MinSpareThreads 2\nMaxSpareThreads 16\n<Directory "
      << file("htdocs").string() << ">\n  Require all granted\n</Directory>\n";
  Program server(app_command({"apache2", "-f", file("httpd.conf").string(), "-D", "FOREGROUND"}), file("apache2.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kPort)) << tail(server.output());
  // The moment the port opens, the master's listener may be the only member of its group: the
  // connection is held until a child accepts, and that child serves it.
  const Fetched first = in_namespace(names_.peer_namespace, [&] { return http_get(app_address(), kPort, "/index.html"); });
  EXPECT_EQ(first.problem, "");
  EXPECT_EQ(first.body, page_);
  ASSERT_TRUE(server.running()) << tail(server.output());
  EXPECT_EQ(fetches_intact(app_address(), kPort, 10), 20);
  expect_wrk_served(kPort);

  // A graceful restart: the old children stop accepting and leave while the new ones start; the
  // requests in between wait for the new ones.
  std::string pid_text;
  std::ifstream(file("httpd.pid")) >> pid_text;
  ASSERT_FALSE(pid_text.empty());
  const auto resumed = [&] {
    std::ifstream log(file("error.log"));
    std::string line;
    int count = 0;
    while (std::getline(log, line)) count += line.find("resuming normal operations") != std::string::npos ? 1 : 0;
    return count;
  };
  const int before = resumed();
  ASSERT_EQ(::kill(std::stoi(pid_text), SIGUSR1), 0);
  EXPECT_EQ(fetches_intact(app_address(), kPort, 10), 20);
  ASSERT_TRUE(wait_for([&] { return resumed() > before || !server.running(); }, 15s));
  EXPECT_EQ(fetches_intact(app_address(), kPort, 10), 20);
  print_group_counters();
  EXPECT_TRUE(server.running()) << tail(server.output());
  std::ifstream log(file("error.log"));
  const std::string errors((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_EQ(errors.find(":error]"), std::string::npos) << errors;
  EXPECT_EQ(errors.find(":crit]"), std::string::npos) << errors;
  EXPECT_EQ(errors.find("Failed to enable"), std::string::npos) << errors;  // TCP_DEFER_ACCEPT is taken
  expect_served_by_flotilla();
}

TEST_F(WebServers, HaproxyWithTwoThreadsProxiesToAKernelServer) {
  ASSERT_TRUE(start_apps({"haproxy", "python3"}));
  constexpr std::uint16_t kFrontPort = 8004;
  constexpr std::uint16_t kBackendPort = 9000;
  const auto backend = serve_documents_from_peer(kBackendPort);
  ASSERT_NE(backend, nullptr);
  std::ofstream(file("haproxy.cfg")) << "global\n  nbthread 2\ndefaults\n  mode http\n  timeout connect 5s\n"
                                        "  timeout client 30s\n  timeout server 30s\nfrontend web\n  bind "
                                     << app_address() << ":" << kFrontPort
                                     << "\n  default_backend peers\nbackend peers\n  server one " << peer_address()
                                     << ":" << kBackendPort << "\n";
  Program server(app_command({"haproxy", "-db", "-f", file("haproxy.cfg").string()}), file("haproxy.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kFrontPort)) << tail(server.output());
  EXPECT_EQ(fetches_intact(app_address(), kFrontPort, 10), 20);
  expect_wrk_served(kFrontPort);
  EXPECT_TRUE(server.running()) << tail(server.output());
  expect_served_by_flotilla();
}

TEST_F(WebServers, VarnishCachesAKernelServer) {
  ASSERT_TRUE(start_apps({"varnishd", "python3"}));
  constexpr std::uint16_t kFrontPort = 8005;
  constexpr std::uint16_t kBackendPort = 9001;
  const auto backend = serve_documents_from_peer(kBackendPort);
  ASSERT_NE(backend, nullptr);
  std::filesystem::create_directories(file("varnish"));
  Program server(app_command({"varnishd", "-F", "-n", file("varnish").string(), "-a",
                              app_address() + ":" + std::to_string(kFrontPort), "-b",
                              peer_address() + ":" + std::to_string(kBackendPort), "-s", "malloc,32m", "-T", "none"}),
                 file("varnish.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kFrontPort)) << tail(server.output());
  // Every round misses the cache (its own URLs), so each fetch is a backend connection's.
  EXPECT_EQ(fetches_intact(app_address(), kFrontPort, 5, true), 10) << tail(server.output());
  EXPECT_EQ(fetches_intact(app_address(), kFrontPort, 5), 10);
  expect_wrk_served(kFrontPort);
  EXPECT_TRUE(server.running()) << tail(server.output());
  expect_served_by_flotilla();
}

TEST_F(WebServers, PythonHttpServerOnADualStackSocketServesIpv4Clients) {
  ASSERT_TRUE(start_apps({"python3"}));
  make_documents();
  constexpr std::uint16_t kPort = 8006;
  Program server(app_command({"python3", "-m", "http.server", std::to_string(kPort), "--bind", "::", "--directory",
                              file("htdocs").string()}),
                 file("http-server.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kPort)) << tail(server.output());
  EXPECT_EQ(fetches_intact(app_address(), kPort, 5), 10) << tail(server.output());
  // It names its clients by their IPv4-mapped addresses, as Linux's dual-stack socket does.
  EXPECT_NE(server.output().find("::ffff:" + peer_address()), std::string::npos) << tail(server.output());
  EXPECT_TRUE(server.running()) << tail(server.output());
  expect_served_by_flotilla();
}

}  // namespace
}  // namespace flotilla::testing

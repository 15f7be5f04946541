// The compatibility suite's datagram servers: Debian's dnsmasq, unmodified under `flotilla run`,
// answering DNS queries over UDP from a kernel client in the peer namespace. dnsmasq listens on the
// wildcard address, asks for IP_PKTINFO to learn where each query was sent and on which interface,
// and answers with sendmsg carrying IP_PKTINFO: the control messages Linux gives and takes. Over
// TCP it forks a child per connection, and serves one only when the connection's local address is
// one of its interfaces' (its own netlink dump of addresses, which must show the stack's). BIND's
// named binds every address its interfaces have (getifaddrs): the stack's on Flotilla, the others
// on the kernel. unbound runs two threads, each with a socket of its own on the DNS port
// (SO_REUSEPORT): the clients spread over both. iperf2's UDP server connects its listener to the
// first client and binds a new listener on the port (SO_REUSEADDR) for the next ones.
// FLOTILLA_APPS_TEST_SIDE=kernel runs the same case on kernel sockets (tests/apps/apps_fixture.hpp).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <array>
#include <fstream>
#include <cstdint>
#include <functional>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/apps/apps_fixture.hpp"

namespace flotilla::testing {
namespace {

constexpr std::uint16_t kDnsPort = 5353;
constexpr std::uint16_t kIperfPort = 5001;

// The line of iperf2's UDP report: "... 6.25 MBytes  52.4 Mbits/sec   0.002 ms 0/4461 (0%)".
const std::regex kIperfReportLine(R"(([0-9.]+) ([KMG]?)Bytes +[0-9.]+ [KMG]?bits/sec +[0-9.]+ ms +(-?[0-9]+)/([0-9]+) \()");

struct IperfReport {
  double bytes = 0;
  long lost = 0;
  long total = 0;
};

// The report an iperf2 UDP client printed after "Server Report:" (what the server measured);
// nullopt when it got none.
std::optional<IperfReport> iperf_server_report(const std::string& output) {
  const auto at = output.find("Server Report:");
  if (at == std::string::npos) return std::nullopt;
  std::smatch found;
  const std::string rest = output.substr(at);
  if (!std::regex_search(rest, found, kIperfReportLine)) return std::nullopt;
  const std::string unit = found[2].str();
  const double scale = unit == "K" ? 1024.0 : unit == "M" ? 1024.0 * 1024 : unit == "G" ? 1024.0 * 1024 * 1024 : 1.0;
  return IperfReport{std::stod(found[1].str()) * scale, std::stol(found[3].str()), std::stol(found[4].str())};
}

// How many clients' reports an iperf2 server printed.
std::size_t iperf_reports(const std::string& output) {
  return static_cast<std::size_t>(
      std::distance(std::sregex_iterator(output.begin(), output.end(), kIperfReportLine), std::sregex_iterator()));
}

// A DNS query for `name`, type A, class IN, recursion desired.
std::vector<std::uint8_t> dns_query(std::uint16_t id, const std::string& name) {
  std::vector<std::uint8_t> packet{static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id), 0x01, 0x00,
                                   0, 1, 0, 0, 0, 0, 0, 0};
  std::size_t start = 0;
  while (start <= name.size()) {
    const std::size_t dot = std::min(name.find('.', start), name.size());
    packet.push_back(static_cast<std::uint8_t>(dot - start));
    packet.insert(packet.end(), name.begin() + static_cast<std::ptrdiff_t>(start), name.begin() + static_cast<std::ptrdiff_t>(dot));
    start = dot + 1;
  }
  packet.push_back(0);
  for (const std::uint8_t byte : {0, 1, 0, 1}) packet.push_back(byte);  // type A, class IN
  return packet;
}

// The IPv4 address of the answer to query `id`, "" when the reply is not one (checked: id, a
// response without error, one question, at least one answer, the last answer's data 4 bytes).
std::string dns_answer(const std::vector<std::uint8_t>& reply, std::size_t length, std::uint16_t id) {
  if (length < 12 + 4) return "";
  if (reply[0] != (id >> 8) || reply[1] != (id & 0xff)) return "";
  if ((reply[2] & 0x80) == 0 || (reply[3] & 0x0f) != 0) return "";
  const unsigned answers = (static_cast<unsigned>(reply[6]) << 8) | reply[7];
  if (answers == 0) return "";
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, reply.data() + length - 4, text, sizeof(text));
  return text;
}

class DatagramServers : public AppsTest {
 protected:
  std::vector<std::string> dnsmasq_command() {
    return app_command({"dnsmasq", "--keep-in-foreground", "--log-facility=-", "--port=" + std::to_string(kDnsPort),
                        "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--user=root",
                        "--pid-file=" + file("dnsmasq.pid").string(), "--address=/test.flotilla/10.1.2.3"});
  }
  // BIND's named with two worker threads, authoritative for the test domain (every name in it is
  // 10.1.2.3), listening on every address of every interface it finds (the stack's among them).
  std::vector<std::string> named_command() {
    const std::string folder = folder_.string();
    std::ofstream(file("zone")) << "$TTL 300\n@ IN SOA ns.test.flotilla. admin.test.flotilla. 1 3600 600 86400 300\n"
                                << "@ IN NS ns.test.flotilla.\nns IN A 10.1.2.3\n* IN A 10.1.2.3\n";
    std::ofstream(file("named.conf")) << "options {\n  directory \"" << folder << "\";\n  listen-on port " << kDnsPort
                                      << " { any; };\n  listen-on-v6 { none; };\n  recursion no;\n  pid-file \""
                                      << folder << "/named.pid\";\n  session-keyfile \"" << folder
                                      << "/session.key\";\n  managed-keys-directory \"" << folder
                                      << "\";\n  allow-query { any; };\n};\nzone \"test.flotilla\" { type master; file \""
                                      << file("zone").string() << "\"; };\n";
    return app_command({"named", "-g", "-u", "root", "-n", "2", "-c", file("named.conf").string()});
  }
  // unbound with two threads, each reading a socket of its own on the DNS port (SO_REUSEPORT),
  // answering every name of the test domain with 10.1.2.3 from a local zone (no upstream), and a
  // control socket for unbound-control.
  std::vector<std::string> unbound_command() {
    const std::string folder = folder_.string();
    std::ofstream(file("unbound.conf")) << "server:\n  verbosity: 1\n  interface: " << app_address()
                                        << "\n  port: " << kDnsPort
                                        << "\n  num-threads: 2\n  so-reuseport: yes\n  do-daemonize: no\n"
                                        << "  username: \"\"\n  chroot: \"\"\n  directory: \"" << folder
                                        << "\"\n  pidfile: \"" << folder << "/unbound.pid\"\n"
                                        << "  use-syslog: no\n  logfile: \"\"\n  do-ip6: no\n  do-tcp: no\n"
                                        << "  access-control: 0.0.0.0/0 allow\n  module-config: \"iterator\"\n"
                                        << "  local-zone: \"test.flotilla.\" redirect\n"
                                        << "  local-data: \"test.flotilla. 300 IN A 10.1.2.3\"\n"
                                        << "remote-control:\n  control-enable: yes\n  control-interface: \"" << folder
                                        << "/unbound.ctl\"\n";
    return app_command({"unbound", "-d", "-c", file("unbound.conf").string()});
  }
  // The queries each of unbound's threads took, from `unbound-control stats_noreset`
  // (thread0.num.queries=...); empty when it did not answer. `output`: what it said.
  std::vector<std::uint64_t> unbound_thread_queries(std::string& output) {
    Program control({"unbound-control", "-c", file("unbound.conf").string(), "stats_noreset"},
                    file("unbound-control.log"));
    std::vector<std::uint64_t> queries;
    const auto status = control.wait(10s);
    output = control.output();
    if (status != 0) return queries;
    std::istringstream lines(output);
    for (std::string line; std::getline(lines, line);) {
      const std::string prefix = "thread" + std::to_string(queries.size()) + ".num.queries=";
      if (line.rfind(prefix, 0) == 0) queries.push_back(std::stoull(line.substr(prefix.size())));
    }
    return queries;
  }

  // The server `command` starts (`program`, made once the test's folder exists) answers `over_udp`
  // queries for names of the test domain over UDP, then `over_tcp` over TCP (each on a connection
  // of its own), and keeps running; `while_running` then looks at it further.
  template <class Command>
  void expect_answers(const std::string& program, Command&& command, int over_udp, int over_tcp,
                      const std::function<void()>& while_running = {}) {
    ASSERT_TRUE(start_apps({program}));
    Program server(command(), file(program + ".log"));
    // The server is up once it answers.
    ASSERT_TRUE(wait_for([&] { return !server.running() || ask("up.test.flotilla", 1).has_value(); }, 15s));
    ASSERT_TRUE(server.running()) << tail(server.output());
    int answered = 0;
    for (int query = 0; query < over_udp + over_tcp; ++query) {
      const auto id = static_cast<std::uint16_t>(100 + query);
      const std::string name = "host" + std::to_string(id) + ".test.flotilla";
      const auto answer = query >= over_udp ? std::optional<std::string>(ask_over_tcp(name, id)) : ask(name, id);
      if (answer == "10.1.2.3") ++answered;
    }
    EXPECT_EQ(answered, over_udp + over_tcp) << tail(server.output());
    EXPECT_TRUE(server.running()) << tail(server.output());
    if (while_running) while_running();
    expect_served_by_flotilla();
  }
  // The same query over TCP (two length bytes first), on a connection of its own; "" when no
  // answer came within 2 s.
  std::string ask_over_tcp(const std::string& name, std::uint16_t id) {
    return in_namespace(names_.peer_namespace, [&]() -> std::string {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return "";
      const timeval limit{2, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
      sockaddr_in server{};
      server.sin_family = AF_INET;
      server.sin_port = htons(kDnsPort);
      ::inet_pton(AF_INET, app_address().c_str(), &server.sin_addr);
      std::vector<std::uint8_t> query = dns_query(id, name);
      query.insert(query.begin(), {static_cast<std::uint8_t>(query.size() >> 8), static_cast<std::uint8_t>(query.size())});
      std::vector<std::uint8_t> reply(2 + 65535);
      std::size_t got = 0;
      if (::connect(fd, reinterpret_cast<sockaddr*>(&server), sizeof(server)) == 0 &&
          ::send(fd, query.data(), query.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(query.size())) {
        for (;;) {
          const std::size_t wanted = got < 2 ? 2 : 2 + ((std::size_t{reply[0]} << 8) | reply[1]);
          if (got >= wanted) break;
          const ssize_t n = ::recv(fd, reply.data() + got, wanted - got, 0);
          if (n <= 0) break;
          got += static_cast<std::size_t>(n);
        }
      }
      ::close(fd);
      if (got < 2) return "";
      const std::vector<std::uint8_t> message(reply.begin() + 2, reply.begin() + static_cast<std::ptrdiff_t>(got));
      return dns_answer(message, message.size(), id);
    });
  }

  // Sends a query for `name` from the peer namespace and waits up to 1 s for its answer.
  std::optional<std::string> ask(const std::string& name, std::uint16_t id) {
    return in_namespace(names_.peer_namespace, [&]() -> std::optional<std::string> {
      const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return std::nullopt;
      sockaddr_in server{};
      server.sin_family = AF_INET;
      server.sin_port = htons(kDnsPort);
      ::inet_pton(AF_INET, app_address().c_str(), &server.sin_addr);
      const auto query = dns_query(id, name);
      std::optional<std::string> answer;
      if (::sendto(fd, query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&server), sizeof(server)) ==
          static_cast<ssize_t>(query.size())) {
        pollfd entry{fd, POLLIN, 0};
        std::vector<std::uint8_t> reply(1500);
        sockaddr_in from{};
        socklen_t from_length = sizeof(from);
        if (::poll(&entry, 1, 1000) == 1) {
          const ssize_t got = ::recvfrom(fd, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), &from_length);
          // The answer comes from the address the query went to (dnsmasq's IP_PKTINFO source).
          if (got > 0 && from.sin_addr.s_addr == server.sin_addr.s_addr) {
            answer = dns_answer(reply, static_cast<std::size_t>(got), id);
          }
        }
      }
      ::close(fd);
      return answer;
    });
  }
};

TEST_F(DatagramServers, DnsmasqAnswersQueriesOverUdp) {
  expect_answers("dnsmasq", [this] { return dnsmasq_command(); }, 50, 0);
}

// Over TCP dnsmasq forks a child for each connection, and answers only a client that came in on one
// of its interfaces' addresses.
TEST_F(DatagramServers, DnsmasqAnswersQueriesOverTcp) {
  expect_answers("dnsmasq", [this] { return dnsmasq_command(); }, 0, 30);
}

// named finds its interfaces' addresses (getifaddrs) and binds each: the kernel's on kernel
// sockets, the stack's on Flotilla's; its threads read datagrams in batches with the kernel's
// recvmmsg by number (libuv), and serve TCP too.
TEST_F(DatagramServers, NamedAnswersQueriesOverUdpAndTcp) {
  expect_answers("named", [this] { return named_command(); }, 30, 20);
}

// unbound's two threads each bind the DNS port with SO_REUSEPORT; each query comes from a socket
// of its own (a new source port), and the stack spreads the clients over both threads' sockets. On
// Flotilla the UDP server is then crashed: its successor keeps the group, and both threads go on
// taking queries.
TEST_F(DatagramServers, UnboundThreadsShareItsPortWithReusePort) {
  ASSERT_TRUE(on_path("unbound-control")) << "unbound-control is not installed (./dev installs unbound)";
  expect_answers("unbound", [this] { return unbound_command(); }, 60, 0, [this] {
    std::string output;
    const auto queries = unbound_thread_queries(output);
    ASSERT_EQ(queries.size(), 2u) << "unbound-control gave no per-thread counts: " << tail(output);
    EXPECT_GT(queries[0], 0u) << "thread 0 took no query";
    EXPECT_GT(queries[1], 0u) << "thread 1 took no query";
    EXPECT_GE(queries[0] + queries[1], 61u);  // the first, which found it up, and 60 more
    std::printf("unbound: thread0 took %llu queries, thread1 %llu\n", static_cast<unsigned long long>(queries[0]),
                static_cast<unsigned long long>(queries[1]));
    if (side_ != Side::flotilla) return;

    ASSERT_EQ(cli("inject udp crash").exit_code, 0);
    ASSERT_TRUE(wait_for([&] { return events().find("udp#2") != std::string::npos; }, 10s)) << events();
    // Datagrams sent while the successor claims the ports again may be lost: wait for one answer.
    ASSERT_TRUE(wait_for([&] { return ask("again.test.flotilla", 1).has_value(); }, 10s)) << events();
    int answered = 0;
    for (int query = 0; query < 40; ++query) {
      const auto id = static_cast<std::uint16_t>(1000 + query);
      if (ask("after" + std::to_string(id) + ".test.flotilla", id) == "10.1.2.3") ++answered;
    }
    EXPECT_EQ(answered, 40);
    const auto later = unbound_thread_queries(output);
    ASSERT_EQ(later.size(), 2u) << tail(output);
    EXPECT_GT(later[0], queries[0]) << "thread 0 took no query after the UDP server's restart";
    EXPECT_GT(later[1], queries[1]) << "thread 1 took no query after the UDP server's restart";
    std::printf("after the UDP server's restart: thread0 took %llu more, thread1 %llu\n",
                static_cast<unsigned long long>(later[0] - queries[0]),
                static_cast<unsigned long long>(later[1] - queries[1]));
  });
}

// iperf2's UDP server: on a client's first datagram its listener connects to the client and serves
// it, and a new listener binds the same port with SO_REUSEADDR for the next clients. Each client,
// one after another and then two at once, gets the server's report of what it received; the
// server keeps running. On Flotilla the UDP server then crashes while a client sends, and that
// client still gets its report.
TEST_F(DatagramServers, IperfServesUdpClientsOneAfterAnotherAndTwoAtOnce) {
  ASSERT_TRUE(start_apps({"iperf"}));
  Program server(app_command({"iperf", "-s", "-u", "-p", std::to_string(kIperfPort)}), file("iperf-server.log"));
  ASSERT_TRUE(wait_for([&] { return !server.running() || server.output().find("Server listening") != std::string::npos; }, 15s));
  ASSERT_TRUE(server.running()) << tail(server.output());
  const auto client_command = [this] {
    return peer_command({"iperf", "-c", app_address(), "-u", "-p", std::to_string(kIperfPort), "-b", "50M", "-t", "1"});
  };
  const auto expect_report = [&](Program& client, const std::string& name) {
    const auto status = client.wait(30s);
    const std::string output = client.output();
    EXPECT_EQ(status, 0) << name << ": " << tail(output);
    const auto report = iperf_server_report(output);
    ASSERT_TRUE(report.has_value()) << name << " got no server report: " << tail(output) << "\nserver: " << tail(server.output());
    EXPECT_GT(report->bytes, 0) << name;
    EXPECT_GT(report->total, 0) << name;
    EXPECT_LE(report->lost, report->total) << name;
    std::printf("%s: the server got %.0f bytes, lost %ld of %ld datagrams\n", name.c_str(), report->bytes, report->lost,
                report->total);
  };
  for (int round = 1; round <= 3; ++round) {
    const std::string name = "client" + std::to_string(round);
    Program client(client_command(), file(name + ".log"));
    expect_report(client, name);
    EXPECT_TRUE(wait_for([&] { return !server.running() || iperf_reports(server.output()) >= static_cast<std::size_t>(round); }, 10s))
        << tail(server.output());
    // iperf 2.1.8's server crashes on Linux's sockets too when the next client comes within some
    // 50 ms of the last one's end (its thread for that client still winds down); a pause spares it.
    std::this_thread::sleep_for(1s);
    ASSERT_TRUE(server.running()) << tail(server.output());
  }
  Program first(client_command(), file("client4.log"));
  Program second(client_command(), file("client5.log"));
  expect_report(first, "client4");
  expect_report(second, "client5");
  EXPECT_TRUE(server.running()) << tail(server.output());
  expect_served_by_flotilla();
  if (side_ != Side::flotilla) return;

  // The UDP server crashes while a client sends: its successor still knows which socket is
  // connected to that client (the state store), so the rest of the client's datagrams and its
  // last one reach the socket serving it, not the new listener.
  std::this_thread::sleep_for(1s);  // iperf's pause between clients, as above
  const auto client_lines = [&] {
    const std::string output = server.output();
    std::size_t lines = 0;
    for (auto at = output.find("connected with"); at != std::string::npos; at = output.find("connected with", at + 1)) ++lines;
    return lines;
  };
  Program during({peer_command({"iperf", "-c", app_address(), "-u", "-p", std::to_string(kIperfPort), "-b", "20M", "-t", "3"})},
                 file("client6.log"));
  ASSERT_TRUE(wait_for([&] { return client_lines() >= 6; }, 10s)) << tail(server.output());
  ASSERT_EQ(cli("inject udp crash").exit_code, 0);
  ASSERT_TRUE(wait_for([&] { return events().find("udp#2") != std::string::npos; }, 10s)) << events();
  expect_report(during, "client6 (the UDP server crashed meanwhile)");
  EXPECT_TRUE(server.running()) << tail(server.output());
}

}  // namespace
}  // namespace flotilla::testing

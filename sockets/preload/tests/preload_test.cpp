// libflotilla-preload.so with a plain program (preload_probe) run on it. The unit test needs no
// stack: socket() must fail with ENETDOWN and say so once on stderr. The integration tests start
// a stack of their own (root, network namespaces) with application seats, a kernel echo server
// in the peer namespace, and run the probe's client and server scenarios with `flotilla run`.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/component_host.hpp"
#include "sockets/preload/sanitizer_runtime.hpp"
#include "tests/support/stack_harness.hpp"

namespace flotilla::testing {
namespace {

constexpr int kEchoPort = 7007;
constexpr int kClosedPort = 7008;
constexpr int kProbeServerPort = 8088;

// This test sits three folders below the build root (build_root() assumes two) unless
// FLOTILLA_BUILD_ROOT says where it is, as meson test does.
const bool g_build_root_known = [] {
  std::error_code error;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) ::setenv("FLOTILLA_BUILD_ROOT", self.parent_path().parent_path().parent_path().parent_path().c_str(), 0);
  return !error;
}();

std::string probe_path() { return build_root() + "/sockets/preload/tests/preload-probe"; }
// What LD_PRELOAD names: the library (after the sanitizer runtime in a sanitized build).
std::string library_path() { return preload::preload_list(build_root() + "/sockets/libflotilla-preload.so"); }

std::size_t count_of(const std::string& text, const std::string& word) {
  std::size_t count = 0;
  for (std::size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++count;
  return count;
}

TEST(PreloadDown, SocketFailsWithEnetdownAndOneMessage) {
  const std::string command = "env LD_PRELOAD=" + library_path() + " FLOTILLA_SOCKET=/nonexistent/flotilla.sock " +
                              probe_path() + " down 2>&1";
  const auto [exit_code, output] = run_shell(command);
  EXPECT_EQ(exit_code, 0) << output;
  EXPECT_NE(output.find("ok down"), std::string::npos) << output;
  EXPECT_EQ(count_of(output, "flotilla: "), 1u) << output;
  EXPECT_NE(output.find("not running"), std::string::npos) << output;
}

// The probe run on a hand-over record of exec (`record`, where EVENTFD stands for the number of
// an eventfd made for it), as an exec'd image finds it: what the probe says, and stderr.
std::string run_handed(const std::string& record) {
  const int placeholder = ::eventfd(0, 0);
  const int memfd = ::memfd_create("flotilla-exec", 0);
  std::string text = record;
  for (std::size_t at = text.find("EVENTFD"); at != std::string::npos; at = text.find("EVENTFD")) {
    text.replace(at, 7, std::to_string(placeholder));
  }
  if (placeholder < 0 || memfd < 0 || ::write(memfd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return "cannot make the record";
  }
  const std::string command = "env LD_PRELOAD=" + library_path() + " FLOTILLA_SOCKET=/nonexistent/flotilla.sock " +
                              "FLOTILLA_INHERIT=" + std::to_string(memfd) + " " + probe_path() + " handed " +
                              std::to_string(placeholder) + " " + std::to_string(memfd) + " 2>&1";
  const auto [exit_code, output] = run_shell(command);
  ::close(placeholder);
  ::close(memfd);
  return output;
}

// A fresh socket's options: nonblocking, bound, address, port, port picked, the two shuts, reuse
// address and port, keepalive, nodelay, cork, keepalive timing, linger, buffers, timeouts, UDP,
// TCP_MAXSEG, reno, IP_PKTINFO, peer address and port, the error of a failed connect, how many
// kept options follow (none).
constexpr const char* kFreshOptions = "0 0 0 0 0 0 0 0 0 0 0 0 7200 75 9 0 0 1048576 1048576 0 0 0 0 0 0 0 0 0 0";
// The same up to the kept options, for a UDP socket, then the kept table up to IP_TOS (0x10).
constexpr const char* kUdpWithTos = "0 0 0 0 0 0 0 0 0 0 0 0 7200 75 9 0 0 1048576 1048576 0 0 1 0 0 0 0 0 0 "
                                    "13 0 0 0 0 0 0 0 0 0 0 1 1 16";

TEST(PreloadDown, AnExecRecordIsTakenAndDropped) {
  const std::string output = run_handed(std::string("flotilla-exec 2\nsocket 1 EVENTFD 0 ") + kFreshOptions + "\n");
  EXPECT_NE(output.find("inherit=unset record=closed socket=flotilla"), std::string::npos) << output;
  EXPECT_EQ(output.find("flotilla: "), std::string::npos) << output;
}

// The options travel with a socket: a UDP one, with IP_TOS set, reads them back.
TEST(PreloadDown, AnExecRecordsOptionsAreReadBack) {
  const std::string output = run_handed(std::string("flotilla-exec 2\nsocket 1 EVENTFD 0 ") + kUdpWithTos + "\n");
  EXPECT_NE(output.find("socket=flotilla type=2 tos=16"), std::string::npos) << output;
  EXPECT_EQ(output.find("flotilla: "), std::string::npos) << output;
}

TEST(PreloadDown, AMalformedExecRecordLeavesBareDescriptors) {
  // The UDP line of the test above with one value changed at a time.
  const std::string udp(kUdpWithTos);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string line = udp;
    const std::size_t at = line.find(from);
    return at == std::string::npos ? std::string("(not found)") : line.replace(at, from.size(), to);
  };
  // A flag of 2, a missing field, a number past 64 bits, an unknown line, a listener with no
  // port; a TCP_MAXSEG below Linux's least, more kept options than the table has, a kept flag of
  // 2, IP_TOS past 255, a read-only option (SO_SNDLOWAT) set, a UDP socket as a listener, a
  // datagram kind with no bound port, a fresh UDP socket with a peer, a UDP socket with the error
  // of a failed connect, a field too many, an error past errno's range.
  for (const std::string& socket_line :
       {std::string("socket 1 EVENTFD 0 2") + (kFreshOptions + 1), std::string("socket 1 EVENTFD 0 0"),
        std::string("socket 1 EVENTFD 0 ") + kFreshOptions + " 99999999999999999999999",
        std::string("listen 1 EVENTFD"), std::string("socket 1 EVENTFD 1 ") + kFreshOptions + " 0 0 0 0 0",
        "socket 1 EVENTFD 0 " + with(" 1 0 0 0 0 0 0 13", " 1 50 0 0 0 0 0 13"),
        "socket 1 EVENTFD 0 " + with(" 13 ", " 99 "), "socket 1 EVENTFD 0 " + with(" 13 0 ", " 13 2 "),
        "socket 1 EVENTFD 0 " + with(" 1 1 16", " 1 1 256"), "socket 1 EVENTFD 0 " + with(" 1 1 16", " 1 2 16"),
        "socket 1 EVENTFD 1 " + udp + " 0 0 0 0 0", "socket 1 EVENTFD 3 " + udp + " 0",
        "socket 1 EVENTFD 0 " + with(" 1 0 0 0 0 0 0 13", " 1 0 0 0 167772161 53 0 13"),
        "socket 1 EVENTFD 0 " + with(" 1 0 0 0 0 0 0 13", " 1 0 0 0 0 0 111 13"),
        std::string("socket 1 EVENTFD 0 ") + kFreshOptions + " 0",
        "socket 1 EVENTFD 0 " + with(" 1 0 0 0 0 0 0 13", " 0 0 0 0 0 0 4096 13")}) {
    const std::string output = run_handed("flotilla-exec 2\n" + socket_line + "\n");
    EXPECT_NE(output.find("inherit=unset record=closed socket=kernel"), std::string::npos) << socket_line << "\n" << output;
    EXPECT_EQ(count_of(output, "malformed"), 1u) << socket_line << "\n" << output;
  }
  const std::string other = run_handed(std::string("flotilla-exec 1\nsocket 1 EVENTFD 0 ") + kFreshOptions + "\n");
  EXPECT_NE(other.find("socket=kernel"), std::string::npos) << other;
}

// system(), popen() and pclose() are the library's (so that the shells inherit its sockets) and
// behave as the C library's: the probe says the same of both.
TEST(PreloadDown, SystemAndPopenAreTheLibrarysAndBehaveAsTheCLibrarys) {
  const auto [libc_code, libc] = run_shell(probe_path() + " shells 2>&1");
  const auto [code, output] = run_shell("env LD_PRELOAD=" + library_path() +
                                        " FLOTILLA_SOCKET=/nonexistent/flotilla.sock " + probe_path() + " shells 2>&1");
  EXPECT_EQ(libc_code, 0) << libc;
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(libc.find("system from libc"), std::string::npos) << libc;
  EXPECT_NE(output.find("system from flotilla"), std::string::npos) << output;
  const auto after_first = [](const std::string& text) { return text.substr(std::min(text.size(), text.find('\n') + 1)); };
  EXPECT_EQ(after_first(output), after_first(libc));
  // The answers the comparison relies on (the C library's, here).
  for (const char* answer : {"system(NULL)=1", "system(exit 3)=768", "system(kill parent)=1024",
                             "signalled=1 signal=2", "pclose w=1792", "popen r: from-the-shell", "cloexec=1"}) {
    EXPECT_NE(libc.find(answer), std::string::npos) << answer << "\n" << libc;
  }
}

TEST(PreloadDown, AnInheritVariableNamingAnotherFileIsLeftAlone) {
  // The variable names a regular file of the program's (the probe's binary): not read, not closed.
  const int placeholder = ::eventfd(0, 0);
  const std::string command = "env LD_PRELOAD=" + library_path() + " FLOTILLA_SOCKET=/nonexistent/flotilla.sock " +
                              "FLOTILLA_INHERIT=9 " + probe_path() + " handed " + std::to_string(placeholder) +
                              " 9 2>&1 9<" + probe_path();
  const auto [exit_code, output] = run_shell(command);
  ::close(placeholder);
  EXPECT_NE(output.find("record=open socket=kernel"), std::string::npos) << output;
}

TEST(PreloadDown, AnExecRecordNamingNoEventfdIsIgnored) {
  // Descriptor 0 is not an eventfd, 999999 is not open: neither becomes a socket.
  const std::string output = run_handed(std::string("flotilla-exec 2\nsocket 2 0 999999 0 ") + kFreshOptions + "\n");
  EXPECT_EQ(output.find("flotilla: "), std::string::npos) << output;
  EXPECT_NE(output.find("socket=kernel"), std::string::npos) << output;
}

// A memfd named as the library names the record of a message, holding `text`.
int rights_record(const std::string& text) {
  const int memfd = ::memfd_create("flotilla-rights", MFD_CLOEXEC);
  if (memfd >= 0 && ::write(memfd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) return -1;
  return memfd;
}

// The probe receiving one message whose SCM_RIGHTS pass `passed` (closed here once sent), as a
// process under the library receives from one that is not: what the probe says, and stderr.
std::string run_received(const std::vector<int>& passed) {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, ends) != 0) return "cannot make the socket pair";
  (void)::fcntl(ends[0], F_SETFD, FD_CLOEXEC);
  char byte = 'm';
  iovec vector{&byte, 1};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * passed.size()));
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control.data();
  message.msg_controllen = control.size();
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int) * passed.size());
  std::memcpy(CMSG_DATA(header), passed.data(), sizeof(int) * passed.size());
  const bool sent = ::sendmsg(ends[0], &message, 0) == 1;
  for (const int fd : passed) ::close(fd);
  ::close(ends[0]);
  if (!sent) return "cannot send";
  const std::string command = "env LD_PRELOAD=" + library_path() + " FLOTILLA_SOCKET=/nonexistent/flotilla.sock " +
                              probe_path() + " received " + std::to_string(ends[1]) + " 2>&1";
  const auto [exit_code, output] = run_shell(command);
  ::close(ends[1]);
  return output;
}

int placeholder() { return ::eventfd(0, EFD_CLOEXEC); }

TEST(PreloadDown, AMessagesRecordIsTakenOffAndItsSocketInstalled) {
  const std::string fresh = std::string("socket 1 0 0 ") + kFreshOptions + "\n";
  const std::string alone = run_received({placeholder(), rights_record("flotilla-rights 2 1\n" + fresh)});
  EXPECT_NE(alone.find("received=1 truncated=0 socket=flotilla extra=0"), std::string::npos) << alone;
  EXPECT_EQ(alone.find("flotilla: "), std::string::npos) << alone;
  // With a token after the program's descriptor: taken off too (and closed, nothing to claim).
  int token[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, token), 0);
  ::close(token[1]);
  const std::string tokened =
      run_received({placeholder(), token[0], rights_record("flotilla-rights 2 1\ntoken 1\n" + fresh)});
  EXPECT_NE(tokened.find("received=1 truncated=0 socket=flotilla extra=0"), std::string::npos) << tokened;
  EXPECT_EQ(tokened.find("flotilla: "), std::string::npos) << tokened;
}

TEST(PreloadDown, AMalformedMessageRecordLeavesBareDescriptors) {
  // More program descriptors than passed, a position past the program's, a missing field, a
  // token naming the program's descriptor, another header.
  for (const std::string& record :
       {std::string("flotilla-rights 2 5\nsocket 1 0 0 ") + kFreshOptions,
        std::string("flotilla-rights 2 1\nsocket 1 1 0 ") + kFreshOptions,
        std::string("flotilla-rights 2 1\nsocket 1 0 0 0"),
        std::string("flotilla-rights 2 1\ntoken 0\nsocket 1 0 0 ") + kFreshOptions,
        std::string("flotilla-rights 1 1\nsocket 1 0 0 ") + kFreshOptions}) {
    const std::string output = run_received({placeholder(), rights_record(record + "\n")});
    EXPECT_NE(output.find("received=1 truncated=0 socket=kernel extra=0"), std::string::npos) << record << "\n" << output;
    EXPECT_EQ(count_of(output, "malformed"), 1u) << record << "\n" << output;
  }
}

TEST(PreloadDown, AMessageWithoutARecordIsReceivedAsTheKernelGivesIt) {
  // Three eventfds into room for one (CMSG_SPACE(sizeof(int)) holds two): the last is not a
  // record; it does not fit, so it is closed and the message says it was truncated, as the
  // kernel does.
  const std::string three = run_received({placeholder(), placeholder(), placeholder()});
  EXPECT_NE(three.find("received=2 truncated=1 socket=kernel extra=0"), std::string::npos) << three;
  // A memfd of another name last is the program's.
  const int other = ::memfd_create("flotilla-rights-not", MFD_CLOEXEC);
  const std::string named = run_received({placeholder(), placeholder(), other});
  EXPECT_NE(named.find("received=2 truncated=1 socket=kernel extra=0"), std::string::npos) << named;
  EXPECT_EQ(named.find("flotilla: "), std::string::npos) << named;
}

TEST(PreloadDown, KernelDescriptorsPassThrough) {
  const auto [exit_code, output] =
      run_shell("env LD_PRELOAD=" + library_path() + " " + probe_path() + " kernel 2>&1");
  EXPECT_EQ(exit_code, 0) << output;
  EXPECT_NE(output.find("ok kernel"), std::string::npos) << output;
  EXPECT_EQ(output.find("flotilla: "), std::string::npos) << output;  // no lease was tried
}

// A kernel echo server in a namespace: every connection gets back what it sends, until EOF, and
// every UDP datagram to the same port goes back to its sender.
class KernelEcho {
 public:
  KernelEcho(const std::string& space, int port) {
    thread_ = std::thread([this, space, port] {
      const int ns = ::open(("/run/netns/" + space).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) return;
      ::close(ns);
      const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const int one = 1;
      ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      sockaddr_in any{};
      any.sin_family = AF_INET;
      any.sin_port = htons(static_cast<std::uint16_t>(port));
      if (::bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0 || ::listen(listener, 16) != 0) return;
      // And a UDP echo on the same port number.
      const int datagrams = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (::bind(datagrams, reinterpret_cast<sockaddr*>(&any), sizeof(any)) != 0) return;
      std::thread udp([this, datagrams] {
        char buffer[2048];
        while (!stop_) {
          pollfd entry{datagrams, POLLIN, 0};
          if (::poll(&entry, 1, 100) != 1) continue;
          sockaddr_in from{};
          socklen_t length = sizeof(from);
          const ssize_t got = ::recvfrom(datagrams, buffer, sizeof(buffer), 0, reinterpret_cast<sockaddr*>(&from), &length);
          if (got > 0) ::sendto(datagrams, buffer, static_cast<std::size_t>(got), 0, reinterpret_cast<sockaddr*>(&from), length);
        }
        ::close(datagrams);
      });
      listening_ = true;
      std::vector<std::thread> workers;
      while (!stop_) {
        pollfd entry{listener, POLLIN, 0};
        if (::poll(&entry, 1, 100) != 1) continue;
        const int connection = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (connection < 0) continue;
        workers.emplace_back([this, connection] {
          char buffer[65536];
          while (!stop_) {
            pollfd entry{connection, POLLIN, 0};
            if (::poll(&entry, 1, 100) != 1) continue;
            const ssize_t got = ::read(connection, buffer, sizeof(buffer));
            if (got <= 0) break;
            for (ssize_t sent = 0; sent < got;) {
              const ssize_t n = ::write(connection, buffer + sent, static_cast<std::size_t>(got - sent));
              if (n <= 0) break;
              sent += n;
            }
          }
          ::close(connection);
        });
      }
      for (auto& worker : workers) worker.join();
      udp.join();
      ::close(listener);
    });
  }
  ~KernelEcho() {
    stop_ = true;
    thread_.join();
  }
  bool listening() const { return listening_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> listening_{false};
  std::thread thread_;
};

// A connection to the probe's server at `address` (retried while it starts), reads timing out
// after 10 s; -1 when none was made.
int connect_to_probe(const std::string& address) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in target{};
    target.sin_family = AF_INET;
    target.sin_port = htons(kProbeServerPort);
    ::inet_pton(AF_INET, address.c_str(), &target.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&target), sizeof(target)) == 0) {
      timeval limit{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
      return fd;
    }
    ::close(fd);
    std::this_thread::sleep_for(100ms);
  }
  return -1;
}

class PreloadStack : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, AF_XDP)";
    names_ = unique_names();
    const std::string problem = stack_.start(names_, stack_config(names_, "pass all", recovery::app_seats_config()));
    ASSERT_EQ(problem, "");
  }
  void TearDown() override { stack_.stop(); }

  std::vector<std::string> run_argv(std::vector<std::string> command) const {
    std::vector<std::string> argv = {build_root() + "/apps/flotilla", "--socket", stack_.socket_path(), "run", "--"};
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  }

  StackNames names_;
  RunningStack stack_;
};

TEST_F(PreloadStack, ClientScenariosAgainstAKernelPeer) {
  KernelEcho echo(names_.peer_namespace, kEchoPort);
  ASSERT_TRUE(wait_for([&] { return echo.listening(); }, std::chrono::seconds(5)));
  const std::string done_file = "/tmp/flotilla-probe-done-" + std::to_string(::getpid());
  BackgroundCommand probe(run_argv({probe_path(), "client", names_.peer_address, std::to_string(kEchoPort),
                                    std::to_string(kClosedPort), done_file}));
  // The calls were served from shared memory: the slot's counters say so (shown while leased).
  const bool counted = wait_for([&] {
    return std::filesystem::exists(done_file) && stack_.counter("app0", "io_no_syscall") > 0 && stack_.counter("app0", "readiness_no_syscall") > 0 &&
           stack_.counter("app0", "wake_ups") > 0;
  }, std::chrono::seconds(60));
  const std::string output = probe.finish(true);
  std::filesystem::remove(done_file);
  EXPECT_TRUE(counted) << output;
  for (const char* scenario : {"blocking-echo", "nonblocking-refused", "mixed-readiness", "epoll-fairness", "dup-fork", "eintr", "sendfile", "udp", "udp-batch", "threads", "exec", "closefrom", "sandbox", "fork-holders", "fork-concurrent", "raw-clone", "grandchildren", "address-limit", "stdio", "interfaces", "accept-first", "epoll-ctl-wakes", "norm-bits", "dual-stack"}) {
    EXPECT_NE(output.find(std::string("ok ") + scenario + "\n"), std::string::npos) << scenario << "\n" << output;
  }
  EXPECT_EQ(output.find("FAIL"), std::string::npos) << output;
}

// A kernel client in the peer namespace: connects to address:port (retrying while the probe
// starts), sends `size` bytes while reading the echo, then shuts down and reads to EOF. Returns
// whether everything came back.
bool kernel_echo_client(const std::string& address, int port, std::size_t size) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in target{};
    target.sin_family = AF_INET;
    target.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, address.c_str(), &target.sin_addr);
    timeval limit{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) {
      ::close(fd);
      std::this_thread::sleep_for(100ms);
      continue;
    }
    std::string sent, received;
    char buffer[8192];
    while (sent.size() < size) {
      const std::string piece(std::min<std::size_t>(4096, size - sent.size()), static_cast<char>('a' + sent.size() % 26));
      if (::write(fd, piece.data(), piece.size()) != static_cast<ssize_t>(piece.size())) break;
      sent += piece;
      while (received.size() < sent.size()) {
        const ssize_t got = ::read(fd, buffer, sizeof(buffer));
        if (got <= 0) break;
        received.append(buffer, static_cast<std::size_t>(got));
      }
    }
    ::shutdown(fd, SHUT_WR);
    for (ssize_t got; (got = ::read(fd, buffer, sizeof(buffer))) > 0;) received.append(buffer, static_cast<std::size_t>(got));
    ::close(fd);
    return received == sent && sent.size() == size;
  }
  return false;
}

TEST_F(PreloadStack, ServerScenariosWithAKernelClient) {
  BackgroundCommand probe(run_argv({probe_path(), "server", std::to_string(kProbeServerPort)}));
  const bool blocking = in_namespace(names_.peer_namespace,
                                     [&] { return kernel_echo_client(names_.stack_address, kProbeServerPort, 100'000); });
  const bool epoll = in_namespace(names_.peer_namespace,
                                  [&] { return kernel_echo_client(names_.stack_address, kProbeServerPort, 300'000); });
  const std::string output = probe.finish(!(blocking && epoll));
  EXPECT_TRUE(blocking) << output;
  EXPECT_TRUE(epoll) << output;
  EXPECT_NE(output.find("ok server-blocking"), std::string::npos) << output;
  EXPECT_NE(output.find("ok server-epoll"), std::string::npos) << output;
  EXPECT_EQ(output.find("FAIL"), std::string::npos) << output;
  // The listener had TCP_NODELAY, so its connections have it at the replicas too: the echoes'
  // short tails (reads of 4 KiB are not whole segments) never waited for an acknowledgement.
  const std::int64_t tcp0 = stack_.counter("tcp0", "nagle_holds");
  const std::int64_t tcp1 = stack_.counter("tcp1", "nagle_holds");
  ASSERT_GE(tcp0, 0);
  ASSERT_GE(tcp1, 0);
  EXPECT_EQ(tcp0 + tcp1, 0) << "a replica held segments back for Nagle on a TCP_NODELAY connection";
}

// Holders, server side: the connection a forked child served and left goes on with the parent, and
// the peer sees its end only at the parent's close, after every byte.
TEST_F(PreloadStack, AConnectionOutlivesTheForkedChildThatServedItFirst) {
  BackgroundCommand probe(run_argv({probe_path(), "fork-holders-server", std::to_string(kProbeServerPort)}));
  const std::string received = in_namespace(names_.peer_namespace, [&]() -> std::string {
    const int fd = connect_to_probe(names_.stack_address);
    if (fd < 0) return "connect failed";
    std::string got;
    char buffer[4096];
    // Each KiB goes once the one before came back: the first to the child, the second to the parent.
    for (const char letter : {'c', 'p'}) {
      const std::string kib(1024, letter);
      if (::write(fd, kib.data(), kib.size()) != 1024) break;
      const std::size_t want = got.size() + 1024;
      for (ssize_t n = 1; got.size() < want && n > 0;) {
        n = ::read(fd, buffer, want - got.size());
        if (n > 0) got.append(buffer, static_cast<std::size_t>(n));
      }
    }
    for (ssize_t n; (n = ::read(fd, buffer, sizeof(buffer))) > 0;) got.append(buffer, static_cast<std::size_t>(n));
    ::close(fd);
    return got;
  });
  const std::string output = probe.finish(false);
  EXPECT_EQ(received, std::string(1024, 'c') + std::string(1024, 'p') + "bye") << output;
  EXPECT_NE(output.find("ok fork-holders-server"), std::string::npos) << output;
}

// Processes sharing a listener share its accept queue, as on Linux. The probe's parent polls the
// listener and never accepts (postfix's master); its two workers take turns waiting in poll and
// accept and serve one client at a time (postfix's smtpd, gunicorn's sync workers). While one
// worker holds a client, every other client is the idle worker's at once: none waits for the busy
// worker, and none is stranded with the parent (before the shared queue, the parent's poll made it
// an accepting member and the connections placed with it were never served).
TEST_F(PreloadStack, PreforkWorkersShareTheListenersQueue) {
  BackgroundCommand probe(run_argv({probe_path(), "prefork", std::to_string(kProbeServerPort)}));
  const std::string outcome = in_namespace(names_.peer_namespace, [&]() -> std::string {
    const auto line_of = [](int fd) {
      std::string line;
      char letter = 0;
      while (line.size() < 16 && ::read(fd, &letter, 1) == 1 && letter != '\n') line.push_back(letter);
      return line;
    };
    const int held = connect_to_probe(names_.stack_address);
    if (held < 0 || ::write(held, "hold\n", 5) != 5 || line_of(held) != "held") return "the held client was not served";
    std::string failures;
    for (int i = 0; i < 6; ++i) {
      // A client left with the busy worker or the parent would wait past the 10 s limit.
      const int fd = connect_to_probe(names_.stack_address);
      if (fd < 0 || ::write(fd, "ping\n", 5) != 5 || line_of(fd) != "pong") failures += " ping " + std::to_string(i);
      if (fd >= 0) ::close(fd);
    }
    if (::write(held, "done\n", 5) != 5 || line_of(held) != "done") failures += " done";
    ::close(held);
    return failures;
  });
  const std::string output = probe.finish(true);
  EXPECT_EQ(outcome, "") << output;
  EXPECT_NE(output.find("ok prefork"), std::string::npos) << output;
  EXPECT_GE(stack_.counter("tcp0", "group_takes") + stack_.counter("tcp1", "group_takes"), 1);
}

// A daemon keeps using the socket it connected before it forked: daemon(3) (the parent exits at
// once), and lighttpd's way (the parent waits until the child says it is ready).
TEST_F(PreloadStack, DaemonChildAdoptsTheSockets) {
  KernelEcho echo(names_.peer_namespace, kEchoPort);
  ASSERT_TRUE(wait_for([&] { return echo.listening(); }, std::chrono::seconds(5)));
  for (const std::string mode : {"daemon", "daemon-wait"}) {
    const std::string result_file = "/tmp/flotilla-probe-daemon-" + std::to_string(::getpid());
    std::filesystem::remove(result_file);
    BackgroundCommand probe(run_argv({probe_path(), mode, names_.peer_address, std::to_string(kEchoPort), result_file}));
    const std::string output = probe.finish();
    std::string verdict;
    wait_for([&] {
      std::ifstream in(result_file);
      std::getline(in, verdict);
      return !verdict.empty();
    }, std::chrono::seconds(30));
    std::filesystem::remove(result_file);
    EXPECT_EQ(verdict, "ok daemon") << mode << "\n" << output;
  }
}

// `flotilla down` while a program blocks on a Flotilla socket: the program is not killed, its
// read fails with ENETDOWN, and so does every new socket.
TEST_F(PreloadStack, StackGoingDownFailsBlockedCallsWithEnetdown) {
  std::string output;
  {
    KernelEcho echo(names_.peer_namespace, kEchoPort);
    ASSERT_TRUE(wait_for([&] { return echo.listening(); }, std::chrono::seconds(5)));
    BackgroundCommand probe(run_argv({probe_path(), "outlive", names_.peer_address, std::to_string(kEchoPort)}));
    // Connected and in its read (which counts an I/O call first), then the stack goes.
    EXPECT_TRUE(wait_for([&] { return stack_.counter("app0", "io_calls") >= 1; }, std::chrono::seconds(10)));
    std::this_thread::sleep_for(200ms);
    stack_.stop();
    output = probe.finish();
  }
  EXPECT_NE(output.find("ok outlive"), std::string::npos) << output;
  EXPECT_EQ(output.find("FAIL"), std::string::npos) << output;
}

// CPU time (user + system) process `pid` has used, in milliseconds; -1 when it cannot be read.
long cpu_ms(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const std::size_t after_name = text.rfind(')');
  if (after_name == std::string::npos) return -1;
  std::istringstream fields(text.substr(after_name + 2));
  std::string field;
  long user = 0, system = 0;
  for (int index = 3; fields >> field; ++index) {  // field 3 is the state; 14 and 15 are utime, stime
    if (index == 14) user = std::stol(field);
    if (index == 15) system = std::stol(field);
  }
  return (user + system) * 1000 / ::sysconf(_SC_CLK_TCK);
}

// The stack goes down under a server waiting in accept (or in epoll_wait on its listener): it gets
// a clean error (accept: ENETDOWN once; epoll: the listener stops being ready), does not spin while
// the stack is away, and once the stack is back (same control socket) a new listener of the same
// program serves a kernel client.
TEST_F(PreloadStack, StackDownUnderAWaitingServerThenBack) {
  const std::filesystem::path config = std::filesystem::path(stack_.socket_path()).parent_path() / "stack.toml";
  for (const std::string mode : {"accept", "epoll"}) {
    const std::string state_file = "/tmp/flotilla-probe-stack-down-" + std::to_string(::getpid());
    std::filesystem::remove(state_file);
    const auto state = [&] {
      std::ifstream in(state_file);
      std::string line;
      std::getline(in, line);
      return line;
    };
    BackgroundCommand probe(run_argv({probe_path(), "stack-down", mode, std::to_string(kProbeServerPort), state_file}));
    const bool listening = wait_for([&] { return state().starts_with("listening "); }, std::chrono::seconds(10));
    if (!listening) {
      ADD_FAILURE() << mode << ": " << probe.finish(true);
      return;
    }
    const pid_t pid = std::stoi(state().substr(10));
    std::this_thread::sleep_for(200ms);  // in its wait
    ASSERT_EQ(stack_.cli("down").exit_code, 0);
    std::this_thread::sleep_for(200ms);  // it noticed
    const long before = cpu_ms(pid);
    std::this_thread::sleep_for(2s);
    const long used = cpu_ms(pid) - before;
    // A spin check: a waiting server uses almost nothing, a spinning one all of a CPU.
    EXPECT_GE(before, 0);
    EXPECT_LT(used, 200) << mode << ": " << used << " ms of CPU in 2 s with the stack down";
    const CommandOutcome up = stack_.cli("up --config " + config.string());
    ASSERT_EQ(up.exit_code, 0) << up.output;
    ASSERT_TRUE(wait_for([&] { return stack_.counter("driver", "rx_frames") >= 0; }, std::chrono::seconds(10)));
    ::kill(pid, SIGUSR1);
    const bool back = wait_for([&] { return state() == "back"; }, std::chrono::seconds(15));
    const bool echoed = back && in_namespace(names_.peer_namespace, [&] {
      return kernel_echo_client(names_.stack_address, kProbeServerPort + 1, 20'000);
    });
    const std::string output = probe.finish(!echoed);
    std::filesystem::remove(state_file);
    EXPECT_TRUE(back) << mode << ": " << output;
    EXPECT_TRUE(echoed) << mode << ": " << output;
    EXPECT_NE(output.find("ok stack-down-" + mode), std::string::npos) << output;
    EXPECT_EQ(output.find("FAIL"), std::string::npos) << output;
  }
}

// Two threads each asleep in epoll_wait on their own sockets (memcached -t 1's shape): a message
// for one wakes each at most once. The wake eventfd was level-triggered in every set: a thread with
// nothing to do went straight back to the kernel and out again until the other drained it, some
// thousand kernel waits per request at 100% CPU.
// The same with the worker in blocking reads (a poll-style sleep) beside the listener's epoll_wait.
class PreloadThreads : public PreloadStack, public ::testing::WithParamInterface<const char*> {};

// `count` connections to the probe's server; fewer when one could not be made.
std::vector<int> connect_many(const std::string& address, int count) {
  std::vector<int> connections;
  for (int i = 0; i < count; ++i) {
    const int fd = connect_to_probe(address);
    if (fd < 0) break;
    connections.push_back(fd);
  }
  return connections;
}

// Whether `fd` has `expected` to read, whole.
bool receives(int fd, const std::string& expected) {
  std::string reply(expected.size(), '\0');
  return ::recv(fd, reply.data(), reply.size(), MSG_WAITALL) == static_cast<ssize_t>(reply.size()) && reply == expected;
}

// Whether all of `request` went to `fd` in one write.
bool sends(int fd, const std::string& request) {
  return ::write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size());
}

TEST_P(PreloadThreads, AsleepThreadsWakeOncePerMessage) {
  BackgroundCommand probe(run_argv({probe_path(), "threaded-echo", GetParam(), std::to_string(kProbeServerPort)}));
  constexpr int kRounds = 200;
  std::int64_t before = -1;
  const bool echoed = in_namespace(names_.peer_namespace, [&] {
    const int fd = connect_to_probe(names_.stack_address);
    if (fd < 0) return false;
    bool good = true;
    for (int round = 0; round <= kRounds && good; ++round) {
      if (round == 1) before = stack_.counter("app0", "waits_in_kernel");  // the worker runs
      const std::string request = "request " + std::to_string(round);
      good = sends(fd, request) && receives(fd, request);
    }
    ::close(fd);
    return good;
  });
  const std::int64_t waits = stack_.counter("app0", "waits_in_kernel") - before;
  const std::string output = probe.finish(!echoed);
  ASSERT_TRUE(echoed) << output;
  ASSERT_GE(before, 0);
  // A round trip wakes the worker for the request and maybe for the acknowledgement of the reply;
  // the listener's thread at most as often.
  EXPECT_LT(waits, 10 * kRounds) << GetParam() << ": " << waits << " kernel waits for " << kRounds << " round trips";
  EXPECT_NE(output.find("ok threaded-echo"), std::string::npos) << output;
}

// Four workers each asleep on a connection of their own (memcached -t 4's shape), and requests on
// one connection only: one event wakes one thread. Each message of the stack woke every sleeping
// thread when they all slept on the seat's wake eventfd; now only the leader sleeps on it, and it
// wakes the worker whose socket became ready. So of the idle workers at most one (the leader, if
// it is not the main thread) wakes about once per request, and the others barely.
TEST_P(PreloadThreads, OneEventWakesOneThread) {
  constexpr int kWorkers = 4;
  constexpr int kRounds = 200;
  BackgroundCommand probe(run_argv({probe_path(), "wake-one", GetParam(), std::to_string(kProbeServerPort),
                                    std::to_string(kWorkers)}));
  const bool echoed = in_namespace(names_.peer_namespace, [&] {
    const std::vector<int> connections = connect_many(names_.stack_address, kWorkers);
    bool good = connections.size() == kWorkers;
    // Every worker answers once (it is running and asleep after), then only the first is asked.
    for (std::size_t i = 0; i < connections.size() && good; ++i) good = sends(connections[i], "w") && receives(connections[i], "w");
    for (int round = 0; round < kRounds && good; ++round) {
      const std::string request = "request " + std::to_string(round);
      good = sends(connections[0], request) && receives(connections[0], request);
    }
    for (const int fd : connections) ::close(fd);
    return good;
  });
  const std::string output = probe.finish(!echoed);
  ASSERT_TRUE(echoed) << output;
  EXPECT_NE(output.find("ok wake-one"), std::string::npos) << output;
  int busy = 0;
  int idle_woken_often = 0;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    long served = 0;
    long woken = 0;
    if (std::sscanf(line.c_str(), "worker served=%ld woken=%ld", &served, &woken) != 2) continue;
    if (served > 1) {
      ++busy;
    } else if (woken > kRounds / 4) {
      ++idle_woken_often;
    }
  }
  EXPECT_EQ(busy, 1) << output;
  EXPECT_LE(idle_woken_often, 1) << GetParam() << ": idle workers woken for another's requests\n" << output;
}

INSTANTIATE_TEST_SUITE_P(Workers, PreloadThreads, ::testing::Values("epoll", "blocking"));

// A thread pool sharing one epoll set (EPOLLONESHOT, armed again after each echo): a nudge of the
// set wakes one of its waiters, which need not be the one it was meant for, and no request is
// left waiting.
TEST_F(PreloadStack, ThreadsSharingAnEpollSetServeEveryConnection) {
  constexpr int kConnections = 4;
  constexpr int kRounds = 100;
  BackgroundCommand probe(run_argv({probe_path(), "shared-set", std::to_string(kProbeServerPort), std::to_string(kConnections)}));
  const bool echoed = in_namespace(names_.peer_namespace, [&] {
    const std::vector<int> connections = connect_many(names_.stack_address, kConnections);
    bool good = connections.size() == kConnections;
    for (int round = 0; round < kRounds && good; ++round) {
      const std::string request = "round " + std::to_string(round);
      for (const int fd : connections) good = good && sends(fd, request);
      for (const int fd : connections) good = good && receives(fd, request);
    }
    for (const int fd : connections) ::close(fd);
    return good;
  });
  const std::string output = probe.finish(!echoed);
  EXPECT_TRUE(echoed) << output;
  EXPECT_NE(output.find("ok shared-set"), std::string::npos) << output;
  EXPECT_EQ(output.find("FAIL"), std::string::npos) << output;
}

// A stack with one seat and two TCP sockets per replica for it: past each limit the call fails with
// Linux's errno, and the program is told once on stderr.
TEST(PreloadLimits, PastALimitTheCallFailsWithLinuxErrnoAndOneLine) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, AF_XDP)";
  const StackNames names = unique_names();
  RunningStack stack;
  ASSERT_EQ(stack.start(names, stack_config(names, "pass all", "\n[limits]\napp_seats = 1\ntcp_sockets_per_seat = 2\n")), "");
  const auto run_argv = [&](std::vector<std::string> command) {
    std::vector<std::string> argv = {build_root() + "/apps/flotilla", "--socket", stack.socket_path(), "run", "--"};
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  };
  const std::string ready_file = "/tmp/flotilla-probe-limits-" + std::to_string(::getpid());
  std::filesystem::remove(ready_file);
  BackgroundCommand holder(run_argv({probe_path(), "limits", std::to_string(kProbeServerPort), ready_file}));
  const bool ready = wait_for([&] { return std::filesystem::exists(ready_file); }, std::chrono::seconds(30));
  std::string seatless_output;
  if (ready) {
    BackgroundCommand seatless(run_argv({probe_path(), "seatless"}));
    seatless_output = seatless.finish();
  }
  const std::string output = holder.finish(true);
  std::filesystem::remove(ready_file);
  stack.stop();
  ASSERT_TRUE(ready) << output;
  EXPECT_NE(output.find("ok limits"), std::string::npos) << output;
  EXPECT_EQ(count_of(output, "flotilla: "), 1u) << output;
  EXPECT_NE(output.find("limits.tcp_sockets_per_seat"), std::string::npos) << output;
  EXPECT_NE(seatless_output.find("ok seatless"), std::string::npos) << seatless_output;
  EXPECT_EQ(count_of(seatless_output, "flotilla: "), 1u) << seatless_output;
  EXPECT_NE(seatless_output.find("limits.app_seats"), std::string::npos) << seatless_output;
}

// Seats come back when their programs exit: a program that finds every seat leased waits a while
// for one (a shell's next command, a forking server's next child) rather than failing at once.
TEST(PreloadLimits, AProgramGetsTheSeatAnExitingProgramGivesBack) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, AF_XDP)";
  const StackNames names = unique_names();
  RunningStack stack;
  ASSERT_EQ(stack.start(names, stack_config(names, "pass all", "\n[limits]\napp_seats = 1\n")), "");
  auto held = ComponentHost::lease(stack.socket_path());
  ASSERT_TRUE(held) << held.error().message();
  BackgroundCommand waiting({build_root() + "/apps/flotilla", "--socket", stack.socket_path(), "run", "--", "python3", "-c",
                             "import socket; socket.socket(); print('got a socket')"});
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // it asked, and found the seat leased
  held->reset();
  const std::string output = waiting.finish();
  stack.stop();
  EXPECT_NE(output.find("got a socket"), std::string::npos) << output;
  EXPECT_EQ(output.find("flotilla: "), std::string::npos) << output;
}

}  // namespace
}  // namespace flotilla::testing

// The differential conformance probe, after MINIX 3's test91: every socket state crossed with every
// call, one fresh socket per pair, printed as one line "STATE CALL RESULT". The test runs it once on
// kernel sockets and once under `flotilla run`, and compares the two tables.
//
// Usage: conformance-probe LOCAL PEER UNREACHABLE BASE_PORT
//   LOCAL        this side's address (bind);
//   PEER         the peer's address, where the conformance peer serves BASE_PORT..BASE_PORT+3:
//                +0 accepts and holds, +1 sends "hello" and holds, +2 sends a FIN and holds,
//                +3 resets; nothing listens on +4;
//   UNREACHABLE  an address on the link that nobody answers (a connect stays in progress).
// Every socket is non-blocking, so no call can hang; a state that needs the peer waits at most 3 s.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

sockaddr_in g_local{};
sockaddr_in g_peer{};
sockaddr_in g_unreachable{};
int g_base_port = 0;

enum PeerPort { kHold = 0, kSendsData = 1, kSendsFin = 2, kResets = 3, kNobody = 4 };

sockaddr_in with_port(sockaddr_in address, int port) {
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  return address;
}

sockaddr* as_address(sockaddr_in& address) { return reinterpret_cast<sockaddr*>(&address); }

// errno by name, so the tables read as Linux's manual pages do.
std::string errno_name(int error) {
  switch (error) {
#define FLOTILLA_ERRNO(name) \
  case name:                 \
    return #name;
    FLOTILLA_ERRNO(EAGAIN) FLOTILLA_ERRNO(EBADF) FLOTILLA_ERRNO(EINVAL) FLOTILLA_ERRNO(EINPROGRESS)
    FLOTILLA_ERRNO(EALREADY) FLOTILLA_ERRNO(EISCONN) FLOTILLA_ERRNO(ENOTCONN) FLOTILLA_ERRNO(ECONNREFUSED)
    FLOTILLA_ERRNO(ECONNRESET) FLOTILLA_ERRNO(EPIPE) FLOTILLA_ERRNO(EOPNOTSUPP) FLOTILLA_ERRNO(ENOPROTOOPT)
    FLOTILLA_ERRNO(EADDRINUSE) FLOTILLA_ERRNO(EADDRNOTAVAIL) FLOTILLA_ERRNO(EAFNOSUPPORT)
    FLOTILLA_ERRNO(EDESTADDRREQ) FLOTILLA_ERRNO(EHOSTUNREACH) FLOTILLA_ERRNO(ENETUNREACH)
    FLOTILLA_ERRNO(ETIMEDOUT) FLOTILLA_ERRNO(ENETDOWN) FLOTILLA_ERRNO(ENOTSOCK) FLOTILLA_ERRNO(EFAULT)
    FLOTILLA_ERRNO(EMSGSIZE) FLOTILLA_ERRNO(ENOTTY) FLOTILLA_ERRNO(EPERM) FLOTILLA_ERRNO(EIO)
    FLOTILLA_ERRNO(ENOENT) FLOTILLA_ERRNO(EBUSY)
#undef FLOTILLA_ERRNO
    case 0:
      return "0";
    default:
      return "errno" + std::to_string(error);
  }
}

std::string outcome(long result) {
  if (result >= 0) return std::to_string(result);
  return "-1 " + errno_name(errno);
}

std::string revents_names(short revents) {
  std::string text;
  const std::pair<short, const char*> bits[] = {{POLLIN, "IN"},   {POLLPRI, "PRI"},   {POLLOUT, "OUT"},
                                                {POLLERR, "ERR"}, {POLLHUP, "HUP"},   {POLLNVAL, "NVAL"},
                                                {POLLRDHUP, "RDHUP"}};
  for (const auto& [bit, name] : bits) {
    if ((revents & bit) != 0) text += (text.empty() ? "" : "|") + std::string(name);
  }
  return text.empty() ? "none" : text;
}

// Waits until poll reports one of `events` (or an error); false after 3 s.
bool wait_for_events(int fd, short events) {
  for (int waited = 0; waited < 3000; waited += 10) {
    pollfd entry{fd, static_cast<short>(events | POLLRDHUP), 0};
    if (::poll(&entry, 1, 10) == 1 && (entry.revents & (events | POLLERR | POLLHUP)) != 0) return true;
  }
  return false;
}

// A state is set up on a fresh socket; it returns the descriptor, or -1 and why it failed.
struct Setup {
  int fd = -1;
  std::string problem;
};

Setup fresh(int type) {
  const int fd = ::socket(AF_INET, type | SOCK_NONBLOCK, 0);
  if (fd < 0) return {-1, "socket " + errno_name(errno)};
  return {fd, ""};
}

Setup bound(int type) {
  Setup setup = fresh(type);
  sockaddr_in local = with_port(g_local, 0);
  if (setup.fd >= 0 && ::bind(setup.fd, as_address(local), sizeof(local)) != 0) setup.problem = "bind " + errno_name(errno);
  return setup;
}

Setup connect_to(int type, const sockaddr_in& where, int port, short wait_events) {
  Setup setup = fresh(type);
  if (setup.fd < 0) return setup;
  sockaddr_in target = with_port(where, g_base_port + port);
  if (::connect(setup.fd, as_address(target), sizeof(target)) != 0 && errno != EINPROGRESS) {
    setup.problem = "connect " + errno_name(errno);
    return setup;
  }
  if (wait_events != 0 && !wait_for_events(setup.fd, wait_events)) setup.problem = "no event after connect";
  return setup;
}

// Connected to `port`, then waits until the peer's doing shows as `events`.
Setup connected_until(PeerPort port, short events, const char* missing) {
  Setup setup = connect_to(SOCK_STREAM, g_peer, port, POLLOUT);
  if (setup.problem.empty() && !wait_for_events(setup.fd, events)) setup.problem = missing;
  return setup;
}

struct State {
  const char* name;
  std::function<Setup()> set_up;
};

std::vector<State> states() {
  return {
      {"fresh", [] { return fresh(SOCK_STREAM); }},
      {"bound", [] { return bound(SOCK_STREAM); }},
      {"listening",
       [] {
         Setup setup = bound(SOCK_STREAM);
         if (setup.fd >= 0 && setup.problem.empty() && ::listen(setup.fd, 8) != 0) setup.problem = "listen " + errno_name(errno);
         return setup;
       }},
      {"connecting", [] { return connect_to(SOCK_STREAM, g_unreachable, kHold, 0); }},
      {"connected", [] { return connect_to(SOCK_STREAM, g_peer, kHold, POLLOUT); }},
      {"readable", [] { return connected_until(kSendsData, POLLIN, "no data"); }},
      {"write-shut",
       [] {
         Setup setup = connect_to(SOCK_STREAM, g_peer, kHold, POLLOUT);
         if (setup.problem.empty() && ::shutdown(setup.fd, SHUT_WR) != 0) setup.problem = "shutdown " + errno_name(errno);
         return setup;
       }},
      {"peer-closed", [] { return connected_until(kSendsFin, POLLRDHUP, "no FIN"); }},
      {"reset", [] { return connected_until(kResets, POLLERR | POLLHUP, "no RST"); }},
      {"refused", [] { return connect_to(SOCK_STREAM, g_peer, kNobody, POLLOUT); }},
      {"closed",
       [] {
         Setup setup = fresh(SOCK_STREAM);
         if (setup.fd >= 0) ::close(setup.fd);
         return setup;
       }},
      {"udp-fresh", [] { return fresh(SOCK_DGRAM); }},
      {"udp-bound", [] { return bound(SOCK_DGRAM); }},
      {"udp-connected", [] { return connect_to(SOCK_DGRAM, g_peer, kHold, 0); }},
  };
}

std::string get_int_option(int fd, int level, int name, bool as_errno) {
  int value = -1;
  socklen_t length = sizeof(value);
  if (::getsockopt(fd, level, name, &value, &length) != 0) return "-1 " + errno_name(errno);
  return "0 value=" + (as_errno ? errno_name(value) : std::to_string(value != 0 ? 1 : 0));
}

std::string set_int_option(int fd, int level, int name) {
  const int one = 1;
  return outcome(::setsockopt(fd, level, name, &one, sizeof(one)));
}

std::string name_of(int fd, bool peer) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  const int result = peer ? ::getpeername(fd, as_address(address), &length) : ::getsockname(fd, as_address(address), &length);
  if (result != 0) return "-1 " + errno_name(errno);
  const char* host = address.sin_addr.s_addr == INADDR_ANY ? "any" : "set";
  return "0 family=" + std::to_string(address.sin_family) + " address=" + host +
         " port=" + (address.sin_port == 0 ? "zero" : "set");
}

struct Call {
  const char* name;
  std::function<std::string(int)> run;
};

std::vector<Call> calls() {
  return {
      {"bind",
       [](int fd) {
         sockaddr_in local = with_port(g_local, 0);
         return outcome(::bind(fd, as_address(local), sizeof(local)));
       }},
      {"listen", [](int fd) { return outcome(::listen(fd, 8)); }},
      {"connect",
       [](int fd) {
         sockaddr_in target = with_port(g_peer, g_base_port + kHold);
         return outcome(::connect(fd, as_address(target), sizeof(target)));
       }},
      {"accept",
       [](int fd) {
         const int accepted = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK);
         if (accepted >= 0) ::close(accepted);
         return accepted >= 0 ? std::string("descriptor") : "-1 " + errno_name(errno);
       }},
      {"read",
       [](int fd) {
         char buffer[64];
         return outcome(::read(fd, buffer, sizeof(buffer)));
       }},
      {"write", [](int fd) { return outcome(::write(fd, "ping", 4)); }},
      {"recv-peek",
       [](int fd) {
         char buffer[64];
         return outcome(::recv(fd, buffer, sizeof(buffer), MSG_PEEK | MSG_DONTWAIT));
       }},
      {"send-nosignal", [](int fd) { return outcome(::send(fd, "ping", 4, MSG_NOSIGNAL)); }},
      {"shutdown-read", [](int fd) { return outcome(::shutdown(fd, SHUT_RD)); }},
      {"shutdown-write", [](int fd) { return outcome(::shutdown(fd, SHUT_WR)); }},
      {"shutdown-both", [](int fd) { return outcome(::shutdown(fd, SHUT_RDWR)); }},
      {"getsockname", [](int fd) { return name_of(fd, false); }},
      {"getpeername", [](int fd) { return name_of(fd, true); }},
      {"get-so-error", [](int fd) { return get_int_option(fd, SOL_SOCKET, SO_ERROR, true); }},
      {"get-so-type", [](int fd) {
         int value = -1;
         socklen_t length = sizeof(value);
         if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &length) != 0) return "-1 " + errno_name(errno);
         return "0 value=" + std::to_string(value);
       }},
      {"get-so-acceptconn", [](int fd) { return get_int_option(fd, SOL_SOCKET, SO_ACCEPTCONN, false); }},
      {"get-so-bindtodevice",
       [](int fd) {
         char device[IFNAMSIZ] = {};
         socklen_t length = sizeof(device);
         if (::getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, &length) != 0) return "-1 " + errno_name(errno);
         return "0 length=" + std::to_string(length);
       }},
      {"get-tcp-nodelay", [](int fd) { return get_int_option(fd, IPPROTO_TCP, TCP_NODELAY, false); }},
      {"set-tcp-nodelay", [](int fd) { return set_int_option(fd, IPPROTO_TCP, TCP_NODELAY); }},
      {"set-so-keepalive", [](int fd) { return set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE); }},
      {"set-so-reuseaddr", [](int fd) { return set_int_option(fd, SOL_SOCKET, SO_REUSEADDR); }},
      {"poll",
       [](int fd) {
         pollfd entry{fd, POLLIN | POLLOUT | POLLRDHUP, 0};
         const int ready = ::poll(&entry, 1, 0);
         if (ready < 0) return "-1 " + errno_name(errno);
         return std::to_string(ready) + " revents=" + revents_names(entry.revents);
       }},
      {"fionread",
       [](int fd) {
         int bytes = -1;
         if (::ioctl(fd, FIONREAD, &bytes) != 0) return "-1 " + errno_name(errno);
         return "0 value=" + std::to_string(bytes);
       }},
      {"fcntl-getfl",
       [](int fd) {
         const int flags = ::fcntl(fd, F_GETFL);
         if (flags < 0) return "-1 " + errno_name(errno);
         return std::string("nonblock=") + ((flags & O_NONBLOCK) != 0 ? "1" : "0") +
                " access=" + std::to_string(flags & O_ACCMODE);
       }},
      {"close", [](int fd) { return outcome(::close(fd)); }},
  };
}

// An option set to `value` and read back ("0 then=V"), or only read ("0 value=V"): each on a fresh
// socket of the state, like the calls above.
struct OptionProbe {
  const char* name;
  int level;
  int option;
  int value;
  bool default_varies = false;  // Linux's value before any set depends on the machine's settings
};

std::vector<OptionProbe> option_probes() {
  return {
      {"so-broadcast", SOL_SOCKET, SO_BROADCAST, 1},   {"so-dontroute", SOL_SOCKET, SO_DONTROUTE, 1},
      {"so-oobinline", SOL_SOCKET, SO_OOBINLINE, 1},   {"so-debug", SOL_SOCKET, SO_DEBUG, 1},
      {"so-passcred", SOL_SOCKET, SO_PASSCRED, 1},     {"so-timestamp", SOL_SOCKET, SO_TIMESTAMP, 1},
      {"so-timestampns", SOL_SOCKET, SO_TIMESTAMPNS, 1}, {"so-priority", SOL_SOCKET, SO_PRIORITY, 3},
      {"so-mark", SOL_SOCKET, SO_MARK, 7},             {"so-busy-poll", SOL_SOCKET, SO_BUSY_POLL, 50},
      {"so-rcvlowat", SOL_SOCKET, SO_RCVLOWAT, 100},    {"so-sndlowat", SOL_SOCKET, SO_SNDLOWAT, 1},
      {"so-rcvbuf", SOL_SOCKET, SO_RCVBUF, 65536, true}, {"so-sndbuf", SOL_SOCKET, SO_SNDBUF, 65536, true},
      {"so-rcvbufforce", SOL_SOCKET, SO_RCVBUFFORCE, 65536, true}, {"so-zerocopy", SOL_SOCKET, SO_ZEROCOPY, 1},
      {"ip-tos", IPPROTO_IP, IP_TOS, 0x10},            {"ip-ttl", IPPROTO_IP, IP_TTL, 32},
      {"ip-ttl-reset", IPPROTO_IP, IP_TTL, -1},        {"ip-pktinfo", IPPROTO_IP, IP_PKTINFO, 1},
      {"ip-recvtos", IPPROTO_IP, IP_RECVTOS, 1},       {"ip-recvttl", IPPROTO_IP, IP_RECVTTL, 1},
      {"ip-recverr", IPPROTO_IP, IP_RECVERR, 1},       {"ip-freebind", IPPROTO_IP, IP_FREEBIND, 1},
      {"ip-transparent", IPPROTO_IP, IP_TRANSPARENT, 1}, {"ip-bind-no-port", IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1},
      {"ip-mtu-discover", IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT},
      {"ip-multicast-ttl", IPPROTO_IP, IP_MULTICAST_TTL, 4}, {"ip-multicast-loop", IPPROTO_IP, IP_MULTICAST_LOOP, 0},
      {"ip-multicast-all", IPPROTO_IP, IP_MULTICAST_ALL, 0}, {"ip-mtu", IPPROTO_IP, IP_MTU, 1400},
      {"tcp-defer-accept", IPPROTO_TCP, TCP_DEFER_ACCEPT, 5}, {"tcp-quickack", IPPROTO_TCP, TCP_QUICKACK, 0},
      {"tcp-user-timeout", IPPROTO_TCP, TCP_USER_TIMEOUT, 1000}, {"tcp-syncnt", IPPROTO_TCP, TCP_SYNCNT, 3},
      {"tcp-linger2", IPPROTO_TCP, TCP_LINGER2, 200},  {"tcp-notsent-lowat", IPPROTO_TCP, TCP_NOTSENT_LOWAT, 16384},
      {"tcp-fastopen", IPPROTO_TCP, TCP_FASTOPEN, 5},  {"tcp-maxseg", IPPROTO_TCP, TCP_MAXSEG, 1200},
  };
}

std::string read_option(int fd, int level, int option) {
  int value = -1;
  socklen_t length = sizeof(value);
  if (::getsockopt(fd, level, option, &value, &length) != 0) return "-1 " + errno_name(errno);
  return std::to_string(value);
}

// TCP_CONGESTION's name. Before any set it is the machine's (net.ipv4.tcp_congestion_control), so
// only whether one is named.
std::string read_congestion(int fd, bool machine_default) {
  char name[16] = {};
  socklen_t length = sizeof(name);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &length) != 0) return "-1 " + errno_name(errno);
  if (machine_default) return name[0] != '\0' ? "named" : "empty";
  return name;
}

// "get BEFORE set RESULT then AFTER".
std::string set_between_reads(const std::string& before, int set, const std::string& after_of_set) {
  return "get " + before + " set " + (set == 0 ? std::string("0") : "-1 " + errno_name(errno)) + " then " + after_of_set;
}

std::vector<Call> option_calls() {
  std::vector<Call> list;
  for (const OptionProbe& probe : option_probes()) {
    list.push_back({probe.name, [probe](int fd) {
                      std::string before = read_option(fd, probe.level, probe.option);
                      if (probe.default_varies && before.rfind("-1", 0) != 0) before = "some";
                      const int set = ::setsockopt(fd, probe.level, probe.option, &probe.value, sizeof(probe.value));
                      const int error = errno;
                      const std::string after = read_option(fd, probe.level, probe.option);
                      errno = error;
                      return set_between_reads(before, set, after);
                    }});
  }
  list.push_back({"tcp-congestion", [](int fd) {
                    const std::string before = read_congestion(fd, true);
                    const int set = ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "reno", 4);
                    const int error = errno;
                    const std::string after = read_congestion(fd, false);
                    errno = error;
                    return set_between_reads(before, set, after);
                  }});
  return list;
}

bool parse_address(const char* text, sockaddr_in& address) {
  address.sin_family = AF_INET;
  return ::inet_pton(AF_INET, text, &address.sin_addr) == 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 || std::strcmp(argv[1], "--help") == 0) {
    std::fprintf(stderr,
                 "usage: conformance-probe LOCAL PEER UNREACHABLE BASE_PORT\n"
                 "Prints one line per socket state and call: STATE CALL RESULT.\n");
    return argc == 2 ? 0 : 2;
  }
  if (!parse_address(argv[1], g_local) || !parse_address(argv[2], g_peer) || !parse_address(argv[3], g_unreachable)) {
    std::fprintf(stderr, "conformance-probe: an address is not IPv4 dotted form\n");
    return 2;
  }
  g_base_port = std::atoi(argv[4]);
  if (g_base_port <= 0 || g_base_port > 65535 - kNobody) {
    std::fprintf(stderr, "conformance-probe: BASE_PORT must be 1..%d\n", 65535 - kNobody);
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  for (const State& state : states()) {
    for (const Call& call : calls()) {
      const Setup setup = state.set_up();
      const std::string result = setup.problem.empty() ? call.run(setup.fd) : "set-up-failed " + setup.problem;
      std::printf("%s %s %s\n", state.name, call.name, result.c_str());
      std::fflush(stdout);
      if (setup.fd >= 0 && std::strcmp(call.name, "close") != 0 && std::strcmp(state.name, "closed") != 0) ::close(setup.fd);
    }
  }
  // Socket options on the states where programs set them.
  for (const State& state : states()) {
    const std::string name = state.name;
    if (name != "fresh" && name != "listening" && name != "connected" && name != "udp-fresh" && name != "udp-connected") continue;
    for (const Call& call : option_calls()) {
      const Setup setup = state.set_up();
      const std::string result = setup.problem.empty() ? call.run(setup.fd) : "set-up-failed " + setup.problem;
      std::printf("%s %s %s\n", state.name, call.name, result.c_str());
      std::fflush(stdout);
      if (setup.fd >= 0) ::close(setup.fd);
    }
  }
  std::printf("done\n");
  return 0;
}

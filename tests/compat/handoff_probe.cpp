// flotilla-handoff-probe: programs handing sockets on in the ways issue 14 lists, for the compat
// suite (compat-handoff), each run on Flotilla and on kernel sockets:
//   options PEER      sets many options on a TCP socket, a TCP listener and a UDP socket (bound,
//                     connected to PEER:9), prints them ("before"), execs itself, which prints them
//                     again ("exec"), then passes them with SCM_RIGHTS to a child forked at the
//                     start, which prints them ("rights"). The lines must match.
//   system PORT       inetd-style through system(): each connection is echoed by
//                     `exec cat <&N >&N`; prints "system status S" when the status is not 0.
//   vfork PORT        the same through vfork() and an exec in the child of `sh -c 'exec cat <&N >&N'`
//                     (the child runs in the server's memory; the connection is the server's own).
//   popen PORT        the same through popen(): "r" (`cat <&N >&N && echo done`, the server reads
//                     "done") and "w" (the server writes an exit code the shell reads, pclose
//                     returns it) in turn; prints "popen: ..." on a fault.
//   udp PORT          answers each datagram with "GENERATION PAYLOAD"; "reexec" makes it exec
//                     itself with its socket, which answers with the next generation.
//   udp-pass PORT     answers the first datagram ("primary PAYLOAD"), then passes its socket to
//                     a worker with SCM_RIGHTS and closes its copy; the worker answers the rest
//                     ("worker PAYLOAD").
//   connecting ADDRESS PORT exec|rights [CLOSED_PORT]
//                     starts a non-blocking connect and at once execs itself (or passes the socket
//                     to a child and closes its copy); the new image (the child) waits until it is
//                     writable, checks SO_ERROR, sends "hello\n" and prints the line it gets back.
//                     With CLOSED_PORT the first connect goes there: the new image prints the
//                     refusal SO_ERROR says (then 0), and connects the same socket to PORT.
// Faults print "flotilla-handoff-probe: ..." on stderr.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

int fail(const char* what) {
  std::fprintf(stderr, "flotilla-handoff-probe: %s: %s\n", what, std::strerror(errno));
  return 1;
}

sockaddr_in address_of(const char* ip, int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, ip, &address.sin_addr);
  return address;
}

// --- options ---

struct IntOption {
  const char* name;
  int level;
  int option;
  int value;  // what the probe sets
};

constexpr IntOption kCommon[] = {
    {"SO_REUSEADDR", SOL_SOCKET, SO_REUSEADDR, 1}, {"SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE, 1},
    {"SO_RCVBUF", SOL_SOCKET, SO_RCVBUF, 65536},   {"SO_SNDBUF", SOL_SOCKET, SO_SNDBUF, 131072},
    {"SO_PRIORITY", SOL_SOCKET, SO_PRIORITY, 3},   {"SO_RCVLOWAT", SOL_SOCKET, SO_RCVLOWAT, 10},
    {"SO_OOBINLINE", SOL_SOCKET, SO_OOBINLINE, 1}, {"SO_BROADCAST", SOL_SOCKET, SO_BROADCAST, 1},
    {"IP_TOS", IPPROTO_IP, IP_TOS, 0x10},          {"IP_TTL", IPPROTO_IP, IP_TTL, 42},
    {"IP_RECVTOS", IPPROTO_IP, IP_RECVTOS, 1},     {"IP_MTU_DISCOVER", IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO},
    {"IP_FREEBIND", IPPROTO_IP, IP_FREEBIND, 1},
};
constexpr IntOption kTcp[] = {
    {"TCP_NODELAY", IPPROTO_TCP, TCP_NODELAY, 1},          {"TCP_MAXSEG", IPPROTO_TCP, TCP_MAXSEG, 1200},
    {"TCP_KEEPIDLE", IPPROTO_TCP, TCP_KEEPIDLE, 30},       {"TCP_KEEPINTVL", IPPROTO_TCP, TCP_KEEPINTVL, 7},
    {"TCP_KEEPCNT", IPPROTO_TCP, TCP_KEEPCNT, 4},          {"TCP_USER_TIMEOUT", IPPROTO_TCP, TCP_USER_TIMEOUT, 5000},
    {"TCP_SYNCNT", IPPROTO_TCP, TCP_SYNCNT, 3},            {"TCP_LINGER2", IPPROTO_TCP, TCP_LINGER2, 20},
    {"TCP_NOTSENT_LOWAT", IPPROTO_TCP, TCP_NOTSENT_LOWAT, 4096},
};
constexpr IntOption kListener[] = {
    {"TCP_DEFER_ACCEPT", IPPROTO_TCP, TCP_DEFER_ACCEPT, 5},
    {"TCP_FASTOPEN", IPPROTO_TCP, TCP_FASTOPEN, 16},
};
constexpr IntOption kUdp[] = {
    {"IP_PKTINFO", IPPROTO_IP, IP_PKTINFO, 1},
    {"IP_MULTICAST_TTL", IPPROTO_IP, IP_MULTICAST_TTL, 5},
    {"IP_MULTICAST_LOOP", IPPROTO_IP, IP_MULTICAST_LOOP, 0},
};

template <std::size_t N>
void set_all(int fd, const IntOption (&options)[N]) {
  for (const IntOption& option : options) (void)::setsockopt(fd, option.level, option.option, &option.value, sizeof(int));
}

template <std::size_t N>
void show_all(std::string& line, int fd, const IntOption (&options)[N]) {
  for (const IntOption& option : options) {
    int value = 0;
    socklen_t length = sizeof(value);
    line += ' ';
    line += option.name;
    line += ::getsockopt(fd, option.level, option.option, &value, &length) == 0 ? "=" + std::to_string(value)
                                                                                 : "=!" + std::to_string(errno);
  }
}

std::string address_text(const sockaddr_in& address) {
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &address.sin_addr, text, sizeof(text));
  return std::string(text) + ":" + std::to_string(ntohs(address.sin_port));
}

// Everything the probe set on `fd`, as getsockopt (and fcntl, getsockname, getpeername) read it.
std::string show(const char* when, const char* which, int fd) {
  std::string line = std::string(when) + " " + which;
  int type = 0;
  socklen_t length = sizeof(type);
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0) return line + " not a socket (" + std::strerror(errno) + ")";
  line += type == SOCK_DGRAM ? " udp" : " tcp";
  show_all(line, fd, kCommon);
  if (type == SOCK_STREAM) show_all(line, fd, kTcp);
  if (type == SOCK_STREAM && std::string(which) == "listener") show_all(line, fd, kListener);
  if (type == SOCK_DGRAM) show_all(line, fd, kUdp);
  for (const int name : {SO_RCVTIMEO, SO_SNDTIMEO}) {
    timeval value{};
    length = sizeof(value);
    line += name == SO_RCVTIMEO ? " SO_RCVTIMEO=" : " SO_SNDTIMEO=";
    line += ::getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0
                ? std::to_string(value.tv_sec) + "." + std::to_string(value.tv_usec)
                : "!" + std::to_string(errno);
  }
  linger lingering{};
  length = sizeof(lingering);
  if (::getsockopt(fd, SOL_SOCKET, SO_LINGER, &lingering, &length) == 0) {
    line += " SO_LINGER=" + std::to_string(lingering.l_onoff) + "," + std::to_string(lingering.l_linger);
  }
  if (type == SOCK_STREAM) {
    char algorithm[16] = {};
    length = sizeof(algorithm);
    line += " TCP_CONGESTION=";
    line += ::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, algorithm, &length) == 0 ? algorithm : "!";
  }
  line += (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0 ? " nonblocking" : " blocking";
  sockaddr_in address{};
  length = sizeof(address);
  if (std::string(which) != "socket" && ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    line += " name=" + address_text(address);
  }
  length = sizeof(address);
  if (type == SOCK_DGRAM && ::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    line += " peer=" + address_text(address);
  }
  return line;
}

constexpr const char* kNames[] = {"socket", "listener", "datagram"};

void show_three(const char* when, const int (&fds)[3]) {
  for (int i = 0; i < 3; ++i) std::printf("%s\n", show(when, kNames[i], fds[i]).c_str());
  std::fflush(stdout);
}

// One byte with room for `count` descriptors (3 at most) in its control data.
struct RightsMessage {
  explicit RightsMessage(int count) {
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<std::size_t>(count));
  }
  RightsMessage(const RightsMessage&) = delete;
  RightsMessage& operator=(const RightsMessage&) = delete;

  char byte = 'p';
  iovec vector{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 3)] = {};
  msghdr message{};
};

bool pass_descriptors(int channel, const int* fds, int count) {
  RightsMessage rights(count);
  msghdr& message = rights.message;
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<std::size_t>(count));
  std::memcpy(CMSG_DATA(header), fds, sizeof(int) * static_cast<std::size_t>(count));
  return ::sendmsg(channel, &message, 0) == 1;
}

// The descriptors one message passes (up to `count`); how many, -1 on a fault.
int receive_descriptors(int channel, int* fds, int count) {
  RightsMessage rights(count);
  msghdr& message = rights.message;
  ssize_t got = 0;
  while ((got = ::recvmsg(channel, &message, 0)) < 0 && errno == EINTR) {
  }
  if (got <= 0) return -1;
  const cmsghdr* header = CMSG_FIRSTHDR(&message);
  if (header == nullptr || header->cmsg_type != SCM_RIGHTS) return -1;
  const int passed = static_cast<int>((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
  std::memcpy(fds, CMSG_DATA(header), sizeof(int) * static_cast<std::size_t>(std::min(passed, count)));
  return passed;
}

// The child forked at the start: receives the three sockets, says so (the sender keeps its
// copies until then: a listener is joined with the sender's proof), and prints them.
int options_receiver(int channel) {
  int fds[3] = {-1, -1, -1};
  if (receive_descriptors(channel, fds, 3) != 3) return fail("receive the sockets");
  const char ack = 'a';
  if (::write(channel, &ack, 1) != 1) return fail("acknowledge");
  char done = 0;
  if (::read(channel, &done, 1) != 1) return fail("wait for the sender to close its copies");
  show_three("rights", fds);
  return 0;
}

int options_probe(const char* peer) {
  int channel[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, channel) != 0) return fail("socketpair");
  std::fflush(stdout);
  const pid_t child = ::fork();
  if (child < 0) return fail("fork");
  if (child == 0) {
    ::close(channel[0]);
    ::_exit(options_receiver(channel[1]));
  }
  ::close(channel[1]);
  int fds[3] = {::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ::socket(AF_INET, SOCK_STREAM, 0),
                ::socket(AF_INET, SOCK_DGRAM, 0)};
  if (fds[0] < 0 || fds[1] < 0 || fds[2] < 0) return fail("socket");
  const timeval receive_timeout{2, 500000};
  const timeval send_timeout{1, 250000};
  const linger lingering{1, 7};
  const char reno[] = "reno";
  for (const int fd : fds) {
    set_all(fd, kCommon);
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof(receive_timeout));
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lingering, sizeof(lingering));
  }
  for (const int fd : {fds[0], fds[1]}) {
    set_all(fd, kTcp);
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, reno, sizeof(reno) - 1);
  }
  set_all(fds[1], kListener);
  set_all(fds[2], kUdp);
  const sockaddr_in any = address_of("0.0.0.0", 0);
  if (::bind(fds[1], reinterpret_cast<const sockaddr*>(&any), sizeof(any)) != 0 || ::listen(fds[1], 8) != 0) {
    return fail("listen");
  }
  const sockaddr_in to = address_of(peer, 9);
  if (::bind(fds[2], reinterpret_cast<const sockaddr*>(&any), sizeof(any)) != 0 ||
      ::connect(fds[2], reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0) {
    return fail("bind and connect the UDP socket");
  }
  show_three("before", fds);
  std::vector<std::string> arguments{"flotilla-handoff-probe", "options-exec", std::to_string(channel[0]),
                                     std::to_string(child)};
  for (const int fd : fds) arguments.push_back(std::to_string(fd));
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  ::execv("/proc/self/exe", argv.data());
  return fail("exec itself");
}

// The image after the exec: prints the sockets, passes them to the child, closes them once it
// has them, and waits for it.
int options_after_exec(char** argv) {
  const int channel = std::atoi(argv[2]);
  const pid_t child = static_cast<pid_t>(std::atoi(argv[3]));
  const int fds[3] = {std::atoi(argv[4]), std::atoi(argv[5]), std::atoi(argv[6])};
  show_three("exec", fds);
  if (!pass_descriptors(channel, fds, 3)) return fail("pass the sockets");
  char ack = 0;
  if (::read(channel, &ack, 1) != 1) return fail("wait for the child's acknowledgement");
  for (const int fd : fds) ::close(fd);
  if (::write(channel, &ack, 1) != 1) return fail("tell the child");
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fail("the child");
  }
  return 0;
}

// --- system() and popen() ---

int listen_on(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);  // the shells must not inherit it
  const int one = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const sockaddr_in address = address_of("0.0.0.0", port);
  if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 || ::listen(fd, 64) != 0) {
    return -1;
  }
  return fd;
}

int accept_next(int listener) {
  for (;;) {
    const int connection = ::accept(listener, nullptr, nullptr);  // no SOCK_CLOEXEC: the shell inherits it
    if (connection >= 0 || (errno != EINTR && errno != ECONNABORTED)) return connection;
  }
}

// Serves each connection on `port`, one at a time: `hand_on` gives it to a shell and returns once
// the shell ended; then the server's copy closes.
template <class HandOn>
int serve_through(int port, HandOn&& hand_on) {
  const int listener = listen_on(port);
  if (listener < 0) return fail("listen");
  std::printf("serving\n");
  std::fflush(stdout);
  for (bool odd = false;; odd = !odd) {
    const int connection = accept_next(listener);
    if (connection < 0) return fail("accept");
    if (!hand_on(connection, odd)) return 1;
    std::fflush(stdout);
    ::close(connection);
  }
}

std::string echo_command(int connection) {
  return "exec cat <&" + std::to_string(connection) + " >&" + std::to_string(connection);
}

int system_server(int port) {
  std::printf("system(NULL) %d\n", ::system(nullptr));
  return serve_through(port, [](int connection, bool) {
    const int status = ::system(echo_command(connection).c_str());
    if (status != 0) std::printf("system status %d\n", status);
    return true;
  });
}

int vfork_server(int port) {
  return serve_through(port, [](int connection, bool) {
    const std::string command = echo_command(connection);
    const pid_t child = ::vfork();
    if (child == 0) {
      ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    if (child < 0) return fail("vfork") == 0;
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (status != 0) std::printf("vfork status %d\n", status);
    return true;
  });
}

int popen_server(int port) {
  return serve_through(port, [](int connection, bool writing) {
    const std::string fd = std::to_string(connection);
    const std::string command = writing ? "read code; cat <&" + fd + " >&" + fd + "; exit $code"
                                        : "cat <&" + fd + " >&" + fd + " && echo done";
    FILE* stream = ::popen(command.c_str(), writing ? "w" : "r");
    if (stream == nullptr) return fail("popen") == 0;
    if (!writing) {
      char line[64] = {};
      if (std::fgets(line, sizeof(line), stream) == nullptr || std::string(line) != "done\n") {
        std::printf("popen: the shell said \"%s\", not done\n", line);
      }
      const int status = ::pclose(stream);
      if (status != 0) std::printf("popen: pclose of \"r\" gave %d\n", status);
    } else {
      std::fprintf(stream, "7\n");
      const int status = ::pclose(stream);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 7) std::printf("popen: pclose of \"w\" gave %d, not exit 7\n", status);
    }
    return true;
  });
}

// --- UDP ---

// Answers each datagram on `fd` with PREFIX PAYLOAD until `stop` says to stop (its payload then
// answered by the caller).
template <class Stop>
int answer_datagrams(int fd, const std::string& prefix, Stop&& stop) {
  for (;;) {
    char payload[512];
    sockaddr_in from{};
    socklen_t length = sizeof(from);
    const ssize_t got = ::recvfrom(fd, payload, sizeof(payload), 0, reinterpret_cast<sockaddr*>(&from), &length);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return fail("recvfrom");
    const std::string text(payload, static_cast<std::size_t>(got));
    const bool stopping = stop(text);
    const std::string answer = stopping ? prefix + "stopping " + text : prefix + text;
    if (::sendto(fd, answer.data(), answer.size(), 0, reinterpret_cast<const sockaddr*>(&from), length) < 0) {
      return fail("sendto");
    }
    if (stopping) return 0;
  }
}

int bound_datagram_socket(int port) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);  // no SOCK_CLOEXEC: the exec hands it on
  const sockaddr_in address = address_of("0.0.0.0", port);
  if (fd < 0 || ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) return -1;
  return fd;
}

int udp_server(char** argv, int argc) {
  int fd = -1;
  int generation = 0;
  if (argc == 5) {
    fd = std::atoi(argv[3]);
    generation = std::atoi(argv[4]);
  } else {
    fd = bound_datagram_socket(std::atoi(argv[2]));
    if (fd < 0) return fail("bind");
    const int tos = 0x28;
    (void)::setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
  }
  int tos = 0;
  socklen_t length = sizeof(tos);
  sockaddr_in name{};
  socklen_t name_length = sizeof(name);
  if (::getsockopt(fd, IPPROTO_IP, IP_TOS, &tos, &length) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&name), &name_length) != 0) {
    return fail("the socket");
  }
  std::printf("serving generation %d port %d tos %d\n", generation, ntohs(name.sin_port), tos);
  std::fflush(stdout);
  const int answered = answer_datagrams(fd, std::to_string(generation) + " ", [](const std::string& text) { return text == "reexec"; });
  if (answered != 0) return answered;
  const std::string fd_text = std::to_string(fd);
  const std::string next = std::to_string(generation + 1);
  ::execl("/proc/self/exe", argv[0], "udp", argv[2], fd_text.c_str(), next.c_str(), static_cast<char*>(nullptr));
  return fail("exec itself");
}

int udp_pass_server(int port) {
  int channel[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, channel) != 0) return fail("socketpair");
  std::fflush(stdout);
  const pid_t worker = ::fork();
  if (worker < 0) return fail("fork");
  if (worker == 0) {
    ::close(channel[0]);
    int fd = -1;
    if (receive_descriptors(channel[1], &fd, 1) != 1) ::_exit(fail("receive the socket"));
    std::printf("worker has it\n");
    std::fflush(stdout);
    ::_exit(answer_datagrams(fd, "worker ", [](const std::string&) { return false; }));
  }
  ::close(channel[1]);
  const int fd = bound_datagram_socket(port);
  if (fd < 0) return fail("bind");
  std::printf("serving\n");
  std::fflush(stdout);
  bool first = true;
  if (answer_datagrams(fd, "primary ", [&](const std::string&) { return std::exchange(first, false); }) != 0) return 1;
  if (!pass_descriptors(channel[0], &fd, 1)) return fail("pass the socket");
  ::close(fd);
  int status = 0;
  (void)::waitpid(worker, &status, 0);
  return 0;
}

// --- a connection still connecting ---

// SO_ERROR of `fd` once it is writable (-1 on a fault).
int settled_error(int fd) {
  pollfd look{fd, POLLOUT, 0};
  if (::poll(&look, 1, 10000) != 1) return fail("poll the connecting socket") * -1;
  int error = 0;
  socklen_t length = sizeof(error);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return fail("SO_ERROR") * -1;
  return error;
}

// The connect handed over settles; when it was refused (`again` names where to connect then), it
// says so once and the socket connects again.
int finish_connecting(int fd, const char* again_ip = nullptr, int again_port = 0) {
  int error = settled_error(fd);
  if (again_ip != nullptr) {
    std::printf("first connect: %s, then %d\n", std::strerror(error), settled_error(fd));
    // Linux's first connect after a failed one says ECONNABORTED (the error was said), the next
    // one connects.
    const sockaddr_in to = address_of(again_ip, again_port);
    const int first = ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) == 0 ? 0 : errno;
    std::printf("reconnect: %s\n", std::strerror(first));
    if (first != 0 && first != EINPROGRESS &&
        ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0 && errno != EINPROGRESS) {
      return fail("connect again");
    }
    error = settled_error(fd);
  }
  if (error != 0) {
    errno = error;
    return fail("the connect");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  if (::write(fd, "hello\n", 6) != 6) return fail("write");
  std::string reply;
  char byte = 0;
  while (reply.size() < 64 && ::read(fd, &byte, 1) == 1 && byte != '\n') reply += byte;
  std::printf("reply: %s\n", reply.c_str());
  std::fflush(stdout);
  return ::close(fd) == 0 ? 0 : fail("close");
}

int connecting_probe(const char* ip, int port, const std::string& how, const char* self, int closed_port) {
  int channel[2] = {-1, -1};
  pid_t child = -1;
  if (how == "rights") {
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, channel) != 0) return fail("socketpair");
    std::fflush(stdout);
    child = ::fork();
    if (child < 0) return fail("fork");
    if (child == 0) {
      ::close(channel[0]);
      int fd = -1;
      if (receive_descriptors(channel[1], &fd, 1) != 1) ::_exit(fail("receive the socket"));
      ::_exit(closed_port != 0 ? finish_connecting(fd, ip, port) : finish_connecting(fd));
    }
    ::close(channel[1]);
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  const sockaddr_in to = address_of(ip, closed_port != 0 ? closed_port : port);
  if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) == 0 || errno != EINPROGRESS) {
    return fail("a connect still in progress");
  }
  if (how == "exec") {
    const std::string fd_text = std::to_string(fd);
    const std::string port_text = std::to_string(port);
    if (closed_port != 0) {
      ::execl("/proc/self/exe", self, "connected", fd_text.c_str(), ip, port_text.c_str(), static_cast<char*>(nullptr));
    } else {
      ::execl("/proc/self/exe", self, "connected", fd_text.c_str(), static_cast<char*>(nullptr));
    }
    return fail("exec itself");
  }
  if (!pass_descriptors(channel[0], &fd, 1)) return fail("pass the socket");
  ::close(fd);
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return fail("the child");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc >= 2 ? argv[1] : "";
  if (mode == "options" && argc == 3) return options_probe(argv[2]);
  if (mode == "options-exec" && argc == 7) return options_after_exec(argv);
  if (mode == "system" && argc == 3) return system_server(std::atoi(argv[2]));
  if (mode == "popen" && argc == 3) return popen_server(std::atoi(argv[2]));
  if (mode == "vfork" && argc == 3) return vfork_server(std::atoi(argv[2]));
  if (mode == "udp" && (argc == 3 || argc == 5)) return udp_server(argv, argc);
  if (mode == "udp-pass" && argc == 3) return udp_pass_server(std::atoi(argv[2]));
  if (mode == "connecting" && (argc == 5 || argc == 6)) {
    return connecting_probe(argv[2], std::atoi(argv[3]), argv[4], argv[0], argc == 6 ? std::atoi(argv[5]) : 0);
  }
  if (mode == "connected" && argc == 3) return finish_connecting(std::atoi(argv[2]));
  if (mode == "connected" && argc == 5) return finish_connecting(std::atoi(argv[2]), argv[3], std::atoi(argv[4]));
  std::fprintf(stderr, "usage: flotilla-handoff-probe options PEER | system PORT | vfork PORT | popen PORT | udp PORT | "
                       "udp-pass PORT | connecting ADDRESS PORT exec|rights [CLOSED_PORT]\n");
  return 2;
}

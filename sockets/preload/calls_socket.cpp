// The interposed calls that make, connect, name, configure, duplicate and close sockets.
// The interposed names must be the plain ones (sendfile and sendfile64, fcntl and fcntl64 are
// each defined here), not what _FILE_OFFSET_BITS=64 would redirect them to.
#undef _FILE_OFFSET_BITS
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <linux/close_range.h>
#include <linux/seccomp.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <utility>

#include "components/wire/address.hpp"
#include "sockets/preload/calls.hpp"
#include "sockets/preload/files.hpp"
#include "sockets/preload/interfaces.hpp"
#include "sockets/preload/real_calls.hpp"

namespace flotilla::preload {

namespace {

constexpr int kListenAnswerMs = 2000;  // how long listen() waits for every replica's answer

bool loopback(std::uint32_t address) { return (address >> 24) == 127; }

// Whether a bind to `address` is the stack's: the wildcard, the stack's address (its subnet's
// broadcast and multicast groups too), or, with no interface named, any address not loopback.
// Another host address is the kernel's (named binds each address its interfaces have).
bool binds_on_stack(std::uint32_t address) {
  if (loopback(address)) return false;
  const auto stack = stack_interface();
  if (address == 0 || !stack || address == stack->address || wire::is_multicast_ipv4(address)) return true;
  return address == wire::Ipv4Cidr{stack->address, stack->prefix_length}.broadcast();
}

// A socket bound or connected to the loopback network belongs to the kernel: Flotilla has no
// loopback. Swaps a kernel socket in under the same number (only for a socket not yet used and
// not duplicated). Lock held; the caller then passes the call on to the kernel.
bool move_to_kernel(int fd, Socket& socket) {
  if (socket.state != Socket::State::fresh || socket.fd_refs != 1 || socket.id >= 0) return false;
  const int type = socket.udp() ? SOCK_DGRAM : SOCK_STREAM;
  const int kernel = REAL(socket)(socket.family, type | (socket.nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (kernel < 0) return false;
  const int one = 1;
  const int zero = 0;
  if (socket.family == AF_INET6) (void)REAL(setsockopt)(kernel, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (socket.reuse_address) (void)REAL(setsockopt)(kernel, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (socket.reuse_port) (void)REAL(setsockopt)(kernel, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (socket.no_delay) (void)REAL(setsockopt)(kernel, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const bool cloexec = (REAL(fcntl)(fd, F_GETFD) & FD_CLOEXEC) != 0;
  const int moved = REAL(dup3)(kernel, fd, cloexec ? O_CLOEXEC : 0);
  REAL(close)(kernel);
  if (moved < 0) return false;
  Runtime::get().forget(fd);
  return true;
}

// The option values that only make sense once a connection exists, sent after connect().
void send_options(Socket& socket) {
  sockets::TcpSockets& tcp = Runtime::get().tcp();
  using stack::TcpOption;
  if (socket.cork) (void)tcp.set_option(socket.id, TcpOption::cork, 1);
  if (socket.keepalive) {
    (void)tcp.set_option(socket.id, TcpOption::keepalive_idle_s, socket.keep_idle_s);
    (void)tcp.set_option(socket.id, TcpOption::keepalive_interval_s, socket.keep_interval_s);
    (void)tcp.set_option(socket.id, TcpOption::keepalive_count, socket.keep_count);
  }
}

// Sends one option to the stack when the socket has an id there (otherwise it goes with connect).
int apply_option(Socket& socket, stack::TcpOption option, std::uint32_t value) {
  if (socket.id < 0 || !Runtime::get().owns(socket) || Runtime::get().gone(socket)) return 0;
  auto set = Runtime::get().tcp().set_option(socket.id, option, value);
  return set ? 0 : fail_with(errno_of(set.error(), EINVAL));
}

}  // namespace

int fail_after_down(Lock& lock, Socket& socket, std::uint64_t deadline) {
  Runtime& runtime = Runtime::get();
  if (!socket.down_reported) {
    socket.down_reported = true;
    return fail_with(ENETDOWN);
  }
  if (socket.nonblocking) return fail_with(EAGAIN);
  for (;;) {
    const int left = remaining_ms(deadline);
    if (left == 0) return fail_with(EAGAIN);
    if (runtime.sleep(lock, [] { return false; }, nullptr, 0, left) < 0) {
      if (errno == EINTR && deadline == 0 && Runtime::restart_after_signal()) continue;
      return -1;
    }
  }
}

namespace {

// How long an accept waits for a take's answer (a round trip to the replicas).
constexpr int kTakeAnswerMs = 200;

// Sleeps until the take asked for `listener` is answered or something is queued there, for at most
// kTakeAnswerMs. -1 with errno when interrupted.
int wait_for_take(Lock& lock, Socket& listener) {
  Runtime& runtime = Runtime::get();
  const std::uint64_t deadline = deadline_after(kTakeAnswerMs);
  auto answered = [&] {
    return runtime.gone(listener) || !runtime.tcp().taking(listener.id) || runtime.tcp().queued(listener.id);
  };
  for (;;) {
    runtime.pump();
    if (answered()) return 0;
    const int left = remaining_ms(deadline);
    if (left == 0) return 0;
    if (runtime.sleep(lock, answered, nullptr, 0, left) < 0) return -1;
  }
}

int accept_common(int fd, sockaddr* address, socklen_t* length, int flags) {
  auto [lock, listener] = enter(fd);
  if (listener == nullptr) return -1;
  Runtime& runtime = Runtime::get();
  if (listener->udp()) return fail_with(EOPNOTSUPP);
  if (listener->state != Socket::State::listening || !Runtime::get().owns(*listener)) return fail_with(EINVAL);
  if ((flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) != 0) return fail_with(EINVAL);
  // A first accept may come while a connection placed here is still in the handshake (a program
  // that connects to itself, then accepts): it is announced once established.
  bool first_held = !runtime.tcp().active(listener->id) && runtime.tcp().holds_connections(listener->id);
  runtime.accepting(*listener);
  const std::uint64_t deadline = deadline_after(listener->receive_timeout_ms);
  int connection = -1;
  for (bool pumped = false, took = false;;) {
    if (runtime.gone(*listener)) return fail_after_down(lock, *listener, deadline);
    auto accepted = runtime.tcp().accept(listener->id);
    if (accepted) {
      connection = accepted.value();
      break;
    }
    if (accepted.error().code != Errc::would_block) return fail_with(errno_of(accepted.error(), EINVAL));
    if (!pumped) {
      runtime.pump();
      pumped = true;
      continue;
    }
    if (!took && runtime.tcp().taking(listener->id)) {
      // The group holds connections (Linux would have them in the shared accept queue): one is
      // announced here, unless another process took it first.
      took = true;
      if (wait_for_take(lock, *listener) < 0) return -1;
      continue;
    }
    if (listener->nonblocking && std::exchange(first_held, false)) {
      if (wait_for(lock, *listener, POLLIN, kTakeAnswerMs) < 0) return -1;
      continue;
    }
    if (listener->nonblocking) {
      ++listener->stalls;
      return fail_with(EAGAIN);
    }
    const int waited = wait_for(lock, *listener, POLLIN, remaining_ms(deadline));
    if (waited < 0) return -1;
    if (waited == 0) return fail_with(EAGAIN);
    took = false;
  }
  runtime.counters().io_calls->add();
  runtime.counters().io_no_syscall->add();
  const int new_fd = reserve_fd((flags & SOCK_CLOEXEC) != 0);
  if (new_fd < 0) {
    (void)runtime.tcp().abort(connection);
    return -1;
  }
  auto socket = std::make_shared<Socket>(*listener);  // options are inherited, as on Linux
  socket->state = Socket::State::connected;
  socket->id = connection;
  send_options(*socket);  // the inherited values the open message has no room for (cork, keepalive timing)
  socket->fd_refs = 0;
  socket->nonblocking = (flags & SOCK_NONBLOCK) != 0;
  socket->stalls = 0;
  socket->error_reported = false;
  runtime.install(new_fd, socket);
  const flotilla::sockets::TcpEndpoints ends = runtime.tcp().endpoints(connection);
  copy_address_out(address, length, socket->family, ends.remote_address, ends.remote_port);
  return new_fd;
}

int pick_ephemeral_port() {
  static std::minstd_rand random(static_cast<unsigned>(::getpid()) ^ static_cast<unsigned>(::time(nullptr)));
  return 32768 + static_cast<int>(random() % 28000);
}

// Whether this process may bind `port` as Linux decides it: a port below the kernel's
// ip_unprivileged_port_start needs CAP_NET_BIND_SERVICE (a server that dropped root through its
// grant keeps the stack, not the low ports).
bool may_bind_port(std::uint16_t port) {
  static const int unprivileged_start = [] {
    int start = 1024;
    if (FILE* file = std::fopen("/proc/sys/net/ipv4/ip_unprivileged_port_start", "re"); file != nullptr) {
      if (std::fscanf(file, "%d", &start) != 1) start = 1024;
      std::fclose(file);
    }
    return start;
  }();
  if (port == 0 || port >= unprivileged_start) return true;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
  if (::syscall(SYS_capget, &header, data) != 0) return true;  // unknown: the stack decides as before
  return (data[CAP_NET_BIND_SERVICE / 32].effective & (1u << (CAP_NET_BIND_SERVICE % 32))) != 0;
}

// The options a connection is opened with (a connect, or a listener's connections).
sockets::SocketOptions open_options(const Socket& socket) {
  sockets::SocketOptions options;
  options.no_delay = socket.no_delay;
  options.keepalive = socket.keepalive;
  options.newreno = socket.tcp_newreno;
  options.reuse_port = socket.reuse_port || socket.port_shared;
  return options;
}

int listen_locked(Lock& lock, Socket& socket, int backlog) {
  Runtime& runtime = Runtime::get();
  if (runtime.gone(socket)) return fail_with(ENETDOWN);
  const bool pick_port = !socket.bound || socket.bound_port == 0 || socket.port_picked_at_bind;
  const auto queue = static_cast<std::uint16_t>(std::clamp(backlog <= 0 ? 1 : backlog, 1, 65535));
  for (int attempt = 0; attempt < 8; ++attempt) {
    const auto port = pick_port ? static_cast<std::uint16_t>(pick_ephemeral_port()) : socket.bound_port;
    // What its connections start with, as on Linux.
    auto listener = runtime.tcp().listen(socket.bound_address, port, queue, open_options(socket));
    if (!listener) return fail_with(errno_of(listener.error(), EINVAL));
    socket.id = listener.value();
    socket.state = Socket::State::listening;
    const std::uint64_t deadline = deadline_after(kListenAnswerMs);
    int error = 0;
    for (;;) {
      runtime.pump();
      if (runtime.tcp().listening(socket.id)) break;
      if ((error = runtime.tcp().error(socket.id)) != 0) break;
      const int left = remaining_ms(deadline);
      if (left == 0) break;  // a replica is slow: it answers later, and its part opens then
      auto answered = [&] { return runtime.tcp().listening(socket.id) || runtime.tcp().error(socket.id) != 0; };
      if (runtime.sleep(lock, answered, nullptr, 0, left) < 0) break;  // a signal: the listen stands
    }
    if (error == 0) {
      socket.bound = true;
      socket.bound_port = port;
      return 0;
    }
    (void)runtime.tcp().close(socket.id);
    socket.id = -1;
    socket.state = Socket::State::fresh;
    if (!(pick_port && error == EADDRINUSE)) return fail_with(runtime.past_limit(error));
  }
  return fail_with(EADDRINUSE);
}

int connect_locked(Lock& lock, Socket& socket, std::uint32_t address, std::uint16_t port) {
  Runtime& runtime = Runtime::get();
  if (runtime.gone(socket) && socket.state != Socket::State::released) {
    socket.error_reported = true;
    return fail_with(ENETDOWN);
  }
  switch (socket.state) {
    case Socket::State::connecting:
      // The connect after a non-blocking one completed reports the completion, as on Linux
      // (programs call connect again to learn the outcome); only the next one says EISCONN.
      if (runtime.tcp().connected(socket.id)) {
        socket.state = Socket::State::connected;
        return 0;
      }
      if (const int error = runtime.socket_error(socket); error != 0) {
        socket.error_reported = true;
        return fail_with(error);
      }
      if (socket.nonblocking) return fail_with(EALREADY);
      break;
    case Socket::State::connected:
      return fail_with(EISCONN);
    case Socket::State::listening:
      return fail_with(EISCONN);
    case Socket::State::released:
      return fail_with(EBADF);
    case Socket::State::fresh: {
      if (std::exchange(socket.handed_failed, false)) {
        const int error = std::exchange(socket.handed_error, 0);
        return fail_with(error != 0 ? error : ECONNABORTED);
      }
      sockets::SocketOptions options = open_options(socket);
      options.local_port = socket.bound ? socket.bound_port : 0;
      auto connection = runtime.tcp().connect(address, port, options);
      if (!connection) return fail_with(errno_of(connection.error(), ECONNREFUSED));
      socket.id = connection.value();
      socket.state = Socket::State::connecting;
      send_options(socket);
      if (socket.nonblocking) return fail_with(EINPROGRESS);
      break;
    }
  }
  const std::uint64_t deadline = deadline_after(socket.send_timeout_ms);
  for (;;) {
    runtime.pump();
    if (runtime.tcp().connected(socket.id)) {
      socket.state = Socket::State::connected;
      return 0;
    }
    if (const int error = runtime.socket_error(socket); error != 0) {
      socket.error_reported = true;
      return fail_with(error);
    }
    const int waited = wait_for(lock, socket, POLLOUT, remaining_ms(deadline));
    if (waited < 0) return -1;
    if (waited == 0) return fail_with(EINPROGRESS);  // SO_SNDTIMEO passed: it goes on in the background
  }
}

// Copies an int-sized option value out.
int int_option(void* value, socklen_t* length, int number) {
  if (value == nullptr || length == nullptr) return fail_with(EFAULT);
  const socklen_t size = std::min<socklen_t>(*length, sizeof(int));
  std::memcpy(value, &number, size);
  *length = size;
  return 0;
}

int timeval_option(void* value, socklen_t* length, int timeout_ms) {
  if (value == nullptr || length == nullptr) return fail_with(EFAULT);
  timeval tv{};
  if (timeout_ms > 0) tv = timeval{timeout_ms / 1000, static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
  const socklen_t size = std::min<socklen_t>(*length, sizeof(tv));
  std::memcpy(value, &tv, size);
  *length = size;
  return 0;
}

std::uint8_t linux_tcp_state(std::uint32_t state) {
  // tcp::TcpState order: closed, listen, syn_sent, syn_received, established, fin_wait_1,
  // fin_wait_2, close_wait, closing, last_ack, time_wait.
  static constexpr std::uint8_t kLinux[] = {TCP_CLOSE,     TCP_LISTEN,     TCP_SYN_SENT,   TCP_SYN_RECV,
                                            TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSE_WAIT,
                                            TCP_CLOSING,   TCP_LAST_ACK,   TCP_TIME_WAIT};
  return state < std::size(kLinux) ? kLinux[state] : static_cast<std::uint8_t>(TCP_CLOSE);
}

int tcp_info_option(Socket& socket, void* value, socklen_t* length) {
  if (value == nullptr || length == nullptr) return fail_with(EFAULT);
  tcp_info out{};
  Runtime& runtime = Runtime::get();
  if (socket.state == Socket::State::listening) {
    out.tcpi_state = TCP_LISTEN;
  } else if (socket.id >= 0 && Runtime::get().owns(socket)) {
    const sockets::TcpInfo info = runtime.tcp().info(socket.id);
    out.tcpi_state = linux_tcp_state(info.state);
    out.tcpi_rtt = info.rtt_us;
    out.tcpi_rto = info.rto_ms * 1000;
    out.tcpi_snd_mss = info.mss;
    out.tcpi_advmss = info.mss;
    out.tcpi_snd_cwnd = info.mss != 0 ? static_cast<std::uint32_t>(info.cwnd_bytes / info.mss) : 0;
    out.tcpi_total_retrans = static_cast<std::uint32_t>(info.retransmits);
  } else {
    out.tcpi_state = TCP_CLOSE;
  }
  const socklen_t size = std::min<socklen_t>(*length, sizeof(out));
  std::memcpy(value, &out, size);
  *length = size;
  return 0;
}

int read_int(const void* value, socklen_t length, int& out) {
  if (value == nullptr || length < static_cast<socklen_t>(sizeof(int))) return fail_with(EINVAL);
  std::memcpy(&out, value, sizeof(int));
  return 0;
}

int read_timeout(const void* value, socklen_t length, int& timeout_ms) {
  timeval tv{};
  if (value == nullptr || length < static_cast<socklen_t>(sizeof(tv))) return fail_with(EINVAL);
  std::memcpy(&tv, value, sizeof(tv));
  if (tv.tv_sec < 0 || tv.tv_usec < 0 || tv.tv_usec >= 1'000'000) return fail_with(EDOM);
  const long long ms = static_cast<long long>(tv.tv_sec) * 1000 + (tv.tv_usec + 999) / 1000;
  timeout_ms = ms == 0 ? -1 : static_cast<int>(std::min<long long>(ms, INT32_MAX));
  return 0;
}

constexpr std::size_t kCongestionNameBytes = 16;  // TCP_CA_NAME_MAX
constexpr int kDefaultMss = 536;  // TCP_MSS_DEFAULT: what Linux answers before a connection
constexpr int kUdpHeadersBytes = 28;
constexpr int kLinkMtu = 1500;  // the stack's link (EngineSettings::mss + 40)

// An option of the kept table (kept_options.hpp), checked and kept as Linux would.
int set_kept(Socket& socket, int level, int name, const void* value, socklen_t length) {
  const int index = kept_option_index(level, name);
  if (index < 0) return fail_with(ENOPROTOOPT);
  const KeptOption& option = kKeptOptions[static_cast<std::size_t>(index)];
  if ((option.tcp_only && socket.udp()) || (option.ipv6_socket_only && socket.family != AF_INET6)) {
    return fail_with(ENOPROTOOPT);
  }
  if (option.rule == KeptRule::not_supported) return fail_with(EOPNOTSUPP);
  if (option.datagram_only_set && !socket.udp()) return fail_with(EINVAL);
  int number = 0;
  if (read_int(value, length, number) != 0) return -1;
  int error = 0;
  const int kept = kept_value(option, number, error);
  if (error != 0) return fail_with(error);
  socket.kept[static_cast<std::size_t>(index)] = kept;
  return 0;
}

int get_kept(const Socket& socket, int level, int name, void* value, socklen_t* length) {
  const int index = kept_option_index(level, name);
  if (index < 0) return fail_with(ENOPROTOOPT);
  const KeptOption& option = kKeptOptions[static_cast<std::size_t>(index)];
  if ((option.tcp_only && socket.udp()) || (option.ipv6_socket_only && socket.family != AF_INET6)) {
    return fail_with(ENOPROTOOPT);
  }
  if (option.rule == KeptRule::not_supported) return fail_with(EOPNOTSUPP);
  return int_option(value, length, socket.kept[static_cast<std::size_t>(index)]);
}

int set_socket_level(Socket& socket, int name, const void* value, socklen_t length) {
  int number = 0;
  switch (name) {
    case SO_REUSEADDR:
    case SO_REUSEPORT:
    case SO_KEEPALIVE:
    case SO_RCVBUF:
    case SO_SNDBUF:
    case SO_RCVBUFFORCE:
    case SO_SNDBUFFORCE:
      if (read_int(value, length, number) != 0) return -1;
      break;
    default:
      break;
  }
  switch (name) {
    case SO_REUSEADDR: socket.reuse_address = number != 0; return 0;
    case SO_REUSEPORT: socket.reuse_port = number != 0; return 0;
    case SO_KEEPALIVE:
      socket.keepalive = number != 0;
      if (socket.udp()) return 0;  // Linux keeps the flag on any socket; only TCP acts on it
      if (apply_option(socket, stack::TcpOption::keepalive, number != 0) != 0) return -1;
      if (socket.keepalive && socket.id >= 0) send_options(socket);
      return 0;
    // The rings have a fixed size: the value is kept for getsockopt (doubled, like Linux).
    case SO_RCVBUF:
    case SO_RCVBUFFORCE: socket.receive_buffer = std::max(number, 0) * 2; return 0;
    case SO_SNDBUF:
    case SO_SNDBUFFORCE: socket.send_buffer = std::max(number, 0) * 2; return 0;
    case SO_LINGER:
      if (value == nullptr || length < static_cast<socklen_t>(sizeof(linger))) return fail_with(EINVAL);
      std::memcpy(&socket.linger_option, value, sizeof(linger));
      return 0;
    case SO_RCVTIMEO: return read_timeout(value, length, socket.receive_timeout_ms);
    case SO_SNDTIMEO: return read_timeout(value, length, socket.send_timeout_ms);
    default: return set_kept(socket, SOL_SOCKET, name, value, length);
  }
}

int set_ip_level(Socket& socket, int name, const void* value, socklen_t length) {
  if (name == IP_PKTINFO) {
    int number = 0;
    if (read_int(value, length, number) != 0) return -1;
    socket.packet_info = number != 0;
    return 0;
  }
  return set_kept(socket, IPPROTO_IP, name, value, length);
}

// TCP_CONGESTION: the algorithms the replicas have. A connection keeps the one it opened with.
int set_congestion(Socket& socket, const void* value, socklen_t length) {
  if (value == nullptr || length < 1) return fail_with(EINVAL);
  char name[kCongestionNameBytes] = {};
  std::memcpy(name, value, std::min<std::size_t>(length, sizeof(name) - 1));
  const std::string_view wanted(name);
  if (wanted != "cubic" && wanted != "reno") return fail_with(ENOENT);
  const bool newreno = wanted == "reno";
  if (socket.id >= 0 && socket.state != Socket::State::fresh && newreno != socket.tcp_newreno) return fail_with(EBUSY);
  socket.tcp_newreno = newreno;
  return 0;
}

int set_tcp_level(Socket& socket, int name, const void* value, socklen_t length) {
  if (name == TCP_CONGESTION) return set_congestion(socket, value, length);
  int number = 0;
  if (read_int(value, length, number) != 0) return -1;
  using stack::TcpOption;
  switch (name) {
    case TCP_MAXSEG:
      if (number != 0 && (number < kMinimumMss || number > kMaximumMss)) return fail_with(EINVAL);
      socket.user_mss = number;
      return 0;
    case TCP_FASTOPEN:
      if (socket.state == Socket::State::connecting || socket.state == Socket::State::connected) return fail_with(EINVAL);
      return set_kept(socket, IPPROTO_TCP, name, value, length);
    case TCP_NODELAY:
      socket.no_delay = number != 0;
      return apply_option(socket, TcpOption::nodelay, number != 0);
    case TCP_CORK:
      socket.cork = number != 0;
      return apply_option(socket, TcpOption::cork, number != 0);
    case TCP_KEEPIDLE:
    case TCP_KEEPINTVL:
    case TCP_KEEPCNT: {
      if (number < 1 || number > 32767) return fail_with(EINVAL);
      const auto unsigned_number = static_cast<std::uint32_t>(number);
      if (name == TCP_KEEPIDLE) socket.keep_idle_s = unsigned_number;
      if (name == TCP_KEEPINTVL) socket.keep_interval_s = unsigned_number;
      if (name == TCP_KEEPCNT) socket.keep_count = unsigned_number;
      const TcpOption option = name == TCP_KEEPIDLE    ? TcpOption::keepalive_idle_s
                               : name == TCP_KEEPINTVL ? TcpOption::keepalive_interval_s
                                                       : TcpOption::keepalive_count;
      return apply_option(socket, option, unsigned_number);
    }
    default:
      return set_kept(socket, IPPROTO_TCP, name, value, length);
  }
}

// IP_PKTOPTIONS (a stream's): IP_PKTINFO when asked for, naming the connection's local address as
// Linux does, with the index of the multicast interface (none set: 0).
int packet_options(Socket& socket, void* value, socklen_t* length) {
  if (socket.udp()) return fail_with(ENOPROTOOPT);
  if (length == nullptr || (value == nullptr && *length != 0)) return fail_with(EFAULT);
  msghdr message{};
  message.msg_control = value;
  message.msg_controllen = *length;
  const socklen_t room = *length;
  *length = 0;
  if (!socket.packet_info || room < CMSG_SPACE(sizeof(in_pktinfo))) return 0;
  Runtime& runtime = Runtime::get();
  std::uint32_t local = socket.bound_address;
  if (socket.id >= 0 && runtime.owns(socket) && socket.state == Socket::State::connected) {
    local = runtime.tcp().endpoints(socket.id).local_address;
  }
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = IPPROTO_IP;
  header->cmsg_type = IP_PKTINFO;
  header->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
  in_pktinfo info{};
  info.ipi_spec_dst.s_addr = htonl(local);
  info.ipi_addr.s_addr = htonl(local);
  std::memcpy(CMSG_DATA(header), &info, sizeof(info));
  *length = static_cast<socklen_t>(CMSG_SPACE(sizeof(in_pktinfo)));
  return 0;
}

int get_option(Socket& socket, int level, int name, void* value, socklen_t* length) {
  Runtime& runtime = Runtime::get();
  if (level == SOL_SOCKET) {
    switch (name) {
      case SO_ERROR: {
        int error = socket.error_reported ? 0 : runtime.socket_error(socket);
        if (error != 0) socket.error_reported = true;
        if (socket.handed_error != 0 && socket.state == Socket::State::fresh) error = std::exchange(socket.handed_error, 0);
        return int_option(value, length, error);
      }
      case SO_TYPE: return int_option(value, length, socket.udp() ? SOCK_DGRAM : SOCK_STREAM);
      case SO_DOMAIN: return int_option(value, length, socket.family);
      case SO_PROTOCOL: return int_option(value, length, socket.udp() ? IPPROTO_UDP : IPPROTO_TCP);
      case SO_ACCEPTCONN: return int_option(value, length, socket.state == Socket::State::listening);
      case SO_REUSEADDR: return int_option(value, length, socket.reuse_address);
      case SO_REUSEPORT: return int_option(value, length, socket.reuse_port);
      case SO_KEEPALIVE: return int_option(value, length, socket.keepalive);
      case SO_RCVBUF: return int_option(value, length, socket.receive_buffer);
      case SO_SNDBUF: return int_option(value, length, socket.send_buffer);
      case SO_RCVTIMEO: return timeval_option(value, length, socket.receive_timeout_ms);
      case SO_SNDTIMEO: return timeval_option(value, length, socket.send_timeout_ms);
      case SO_LINGER: {
        if (value == nullptr || length == nullptr) return fail_with(EFAULT);
        const socklen_t size = std::min<socklen_t>(*length, sizeof(linger));
        std::memcpy(value, &socket.linger_option, size);
        *length = size;
        return 0;
      }
      case SO_BINDTODEVICE:
        // Bound to no device, as Linux answers it: no name (sshd asks, for its routing domain).
        if (length == nullptr) return fail_with(EFAULT);
        *length = 0;
        return 0;
      default: return get_kept(socket, level, name, value, length);
    }
  }
  if (level == IPPROTO_IP) {
    switch (name) {
      case IP_PKTINFO: return int_option(value, length, socket.packet_info);
      case IP_PKTOPTIONS: return packet_options(socket, value, length);
      case IP_MTU: {
        // The path MTU once there is a path (Linux: ENOTCONN before).
        if (socket.udp()) {
          if (socket.state != Socket::State::connected) return fail_with(ENOTCONN);
          return int_option(value, length, static_cast<int>(runtime.udp()->max_payload()) + kUdpHeadersBytes);
        }
        // Linux has a route, so an MTU, from connect() on.
        const bool routed = socket.id >= 0 && runtime.owns(socket) &&
                            (socket.state == Socket::State::connected || socket.state == Socket::State::connecting);
        if (!routed) return fail_with(ENOTCONN);
        return int_option(value, length, kLinkMtu);
      }
      default: return get_kept(socket, level, name, value, length);
    }
  }
  // A dual-stack socket: IPV6_V6ONLY is off (one that turned it on went to the kernel).
  if (level == IPPROTO_IPV6 && socket.family == AF_INET6 && name == IPV6_V6ONLY) return int_option(value, length, 0);
  if (level == IPPROTO_IPV6 && socket.family == AF_INET6 && name == IPV6_RECVPKTINFO) {
    return int_option(value, length, socket.packet_info6);
  }
  if (level == IPPROTO_IPV6) return get_kept(socket, level, name, value, length);
  if (level == IPPROTO_TCP && socket.udp()) return fail_with(EOPNOTSUPP);  // Linux's answer
  if (level == IPPROTO_TCP) {
    switch (name) {
      case TCP_CONGESTION: {
        if (value == nullptr || length == nullptr) return fail_with(EFAULT);
        char algorithm[kCongestionNameBytes] = {};
        std::memcpy(algorithm, socket.tcp_newreno ? "reno" : "cubic", socket.tcp_newreno ? 4 : 5);
        const socklen_t size = std::min<socklen_t>(*length, sizeof(algorithm));
        std::memcpy(value, algorithm, size);
        *length = size;
        return 0;
      }
      case TCP_NODELAY: return int_option(value, length, socket.no_delay);
      case TCP_CORK: return int_option(value, length, socket.cork);
      case TCP_KEEPIDLE: return int_option(value, length, static_cast<int>(socket.keep_idle_s));
      case TCP_KEEPINTVL: return int_option(value, length, static_cast<int>(socket.keep_interval_s));
      case TCP_KEEPCNT: return int_option(value, length, static_cast<int>(socket.keep_count));
      case TCP_MAXSEG: {
        const bool live = socket.id >= 0 && Runtime::get().owns(socket) && socket.state != Socket::State::listening;
        const std::uint32_t mss = live ? runtime.tcp().info(socket.id).mss : 0;
        if (mss != 0) return int_option(value, length, static_cast<int>(mss));
        return int_option(value, length, socket.user_mss != 0 ? socket.user_mss : kDefaultMss);
      }
      case TCP_INFO: return tcp_info_option(socket, value, length);
      default: return get_kept(socket, level, name, value, length);
    }
  }
  return fail_with(ENOPROTOOPT);
}

// Makes `to` another name of what `from` is (both numbers already point at the same kernel file).
void share_descriptor(int from, int to) {
  Runtime& runtime = Runtime::get();
  runtime.forget(to);
  if (auto socket = runtime.socket_at(from)) {
    runtime.install(to, std::move(socket));
  } else if (auto set = runtime.epoll_at(from)) {
    (void)runtime.make_epoll(to, std::move(set));  // one epoll instance, two numbers
  }
}

int fcntl_common(int fd, int command, void* argument, int (*real)(int, int, ...)) {
  const FdKind kind = fd_kind(fd);
  if (kind == FdKind::kernel) return real(fd, command, argument);
  if (kind == FdKind::file) return fcntl_file(fd, command, argument, real);
  if (command == F_DUPFD || command == F_DUPFD_CLOEXEC) {
    Lock lock(Runtime::get().mutex());
    const int copy = real(fd, command, argument);
    if (copy >= 0) share_descriptor(fd, copy);
    return copy;
  }
  if (kind == FdKind::epoll || command == F_GETFD || command == F_SETFD) return real(fd, command, argument);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  switch (command) {
    case F_GETFL:
      return O_RDWR | (socket->nonblocking ? O_NONBLOCK : 0);
    case F_SETFL:
      socket->nonblocking = (reinterpret_cast<std::intptr_t>(argument) & O_NONBLOCK) != 0;
      return 0;
    default:
      return fail_with(EINVAL);
  }
}

// connect() on a UDP socket: sets (or, with AF_UNSPEC, clears) the default peer.
constexpr int kNotDatagram = 1;
int connect_datagram(int fd, const sockaddr* address, socklen_t length) {
  {
    auto [lock, socket] = enter(fd);
    if (socket == nullptr) return -1;
    if (!socket->udp()) return kNotDatagram;
    if (!Runtime::get().owns(*socket)) return fail_with(EBADF);
    if (address != nullptr && length >= static_cast<socklen_t>(sizeof(sa_family_t)) && address->sa_family == AF_UNSPEC) {
      const bool had_peer = socket->peer_port != 0;
      socket->peer_address = 0;
      socket->peer_port = 0;
      socket->state = Socket::State::fresh;
      // The UDP server then gives it datagrams from anyone again.
      return had_peer && socket->id >= 0 ? Runtime::get().send_peer(&lock, *socket) : 0;
    }
    CallAddress named;
    if (!read_address(address, length, socket->family, named)) return -1;
    const std::uint32_t ip = named.ip;
    const std::uint16_t port = named.port;
    if ((!loopback(ip) && !kernel_host_address(ip)) || socket->id >= 0) {
      if (socket->id < 0 && Runtime::get().open_datagram(&lock, *socket, 0) != 0) return -1;
      const std::uint32_t old_address = socket->peer_address;
      const std::uint16_t old_port = socket->peer_port;
      socket->peer_address = ip;
      socket->peer_port = port;
      // The UDP server learns the peer too: the socket takes the peer's datagrams before the other
      // sockets sharing its port.
      if (Runtime::get().send_peer(&lock, *socket) != 0) {
        socket->peer_address = old_address;
        socket->peer_port = old_port;
        return -1;
      }
      socket->state = Socket::State::connected;
      return 0;
    }
    if (!move_to_kernel(fd, *socket)) return fail_with(ENETUNREACH);
  }
  return REAL(connect)(fd, address, length);
}

}  // namespace

int wait_for(Lock& lock, Socket& socket, std::uint32_t events, int timeout_ms) {
  Runtime& runtime = Runtime::get();
  const std::uint64_t deadline = deadline_after(timeout_ms);
  // A socket whose stack went down is done waiting: its call reports it.
  auto ready = [&] {
    return runtime.gone(socket) || (runtime.ready_events(socket) & (events | POLLERR | POLLHUP | POLLNVAL)) != 0;
  };
  for (;;) {
    if (!Runtime::get().owns(socket) || socket.state == Socket::State::released) return fail_with(EBADF);
    runtime.pump();
    if (ready()) return 1;
    const int left = remaining_ms(deadline);
    if (left == 0) return 0;
    Runtime::AcceptWaits waits(runtime);
    waits.add(socket, events);
    if (runtime.sleep(lock, ready, nullptr, 0, left) < 0) {
      // Linux restarts a socket call a SA_RESTART handler interrupted (without a timeout set).
      if (errno == EINTR && timeout_ms < 0 && Runtime::restart_after_signal()) continue;
      return -1;
    }
  }
}

ssize_t when_stuck(Lock& lock, Socket& socket, Progress& progress, std::uint32_t events, bool nonblocking,
                   std::size_t done) {
  Runtime& runtime = Runtime::get();
  if (!progress.pumped) {
    runtime.pump();
    progress.pumped = true;
    return kRetry;
  }
  if (nonblocking) {
    ++socket.stalls;  // an edge-triggered epoll reports the next readiness again
    if (!progress.slept) runtime.counters().io_no_syscall->add();
    return done > 0 ? static_cast<ssize_t>(done) : fail_with(EAGAIN);
  }
  const int waited = wait_for(lock, socket, events, remaining_ms(progress.deadline));
  progress.slept = true;
  if (waited > 0) return kRetry;
  if (done > 0) return static_cast<ssize_t>(done);
  return waited == 0 ? fail_with(EAGAIN) : -1;
}

void copy_address_out(sockaddr* out, socklen_t* length, int family, std::uint32_t address, std::uint16_t port) {
  if (out == nullptr || length == nullptr) return;
  if (family == AF_INET6) {
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(port);
    if (address != 0) {
      in6.sin6_addr.s6_addr[10] = 0xff;
      in6.sin6_addr.s6_addr[11] = 0xff;
      const std::uint32_t network = htonl(address);
      std::memcpy(&in6.sin6_addr.s6_addr[12], &network, sizeof(network));
    }
    std::memcpy(out, &in6, std::min<std::size_t>(*length, sizeof(in6)));
    *length = sizeof(in6);
    return;
  }
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  in.sin_addr.s_addr = htonl(address);
  std::memcpy(out, &in, std::min<std::size_t>(*length, sizeof(in)));
  *length = sizeof(in);
}

bool read_address(const sockaddr* in, socklen_t length, int family, CallAddress& out) {
  out = CallAddress{};
  // Linux takes an AF_INET6 address without its scope id (RFC 2133's 24 bytes) too.
  constexpr socklen_t kRfc2133Bytes = 24;
  const socklen_t needed = family == AF_INET6 ? kRfc2133Bytes : sizeof(sockaddr_in);
  if (in == nullptr || length < needed) {
    errno = EINVAL;
    return false;
  }
  if (in->sa_family != family) {
    errno = EAFNOSUPPORT;
    return false;
  }
  if (family == AF_INET) {
    sockaddr_in ipv4{};
    std::memcpy(&ipv4, in, sizeof(ipv4));
    out.ip = ntohl(ipv4.sin_addr.s_addr);
    out.port = ntohs(ipv4.sin_port);
    return true;
  }
  sockaddr_in6 ipv6{};
  std::memcpy(&ipv6, in, std::min<std::size_t>(length, sizeof(ipv6)));
  out.port = ntohs(ipv6.sin6_port);
  if (IN6_IS_ADDR_V4MAPPED(&ipv6.sin6_addr)) {
    std::uint32_t network = 0;
    std::memcpy(&network, &ipv6.sin6_addr.s6_addr[12], sizeof(network));
    out.ip = ntohl(network);
  } else {
    out.ipv6 = !IN6_IS_ADDR_UNSPECIFIED(&ipv6.sin6_addr);
  }
  return true;
}

int reserve_fd(bool cloexec) {
  const int fd = ::eventfd(0, cloexec ? EFD_CLOEXEC : 0);
  if (fd >= kMaxFds) {
    REAL(close)(fd);
    return fail_with(EMFILE);
  }
  return fd;
}

void maybe_sigpipe(int error, int flags) {
  if (error == EPIPE && (flags & MSG_NOSIGNAL) == 0) ::raise(SIGPIPE);
}

}  // namespace flotilla::preload

using namespace flotilla::preload;
using flotilla::Errc;

FLOTILLA_EXPORT int socket(int domain, int type, int protocol) {
  const int kind = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  // A socket of AF_INET6 is dual-stack until told otherwise (IPV6_V6ONLY): it reaches the stack's
  // IPv4 peers.
  if ((domain != AF_INET && domain != AF_INET6) || (kind != SOCK_STREAM && kind != SOCK_DGRAM)) {
    const int fd = REAL(socket)(domain, type, protocol);
    if (fd >= 0) watch_netlink(fd, domain, protocol);
    return fd;
  }
  const bool datagram = kind == SOCK_DGRAM;
  if (protocol != 0 && protocol != (datagram ? IPPROTO_UDP : IPPROTO_TCP)) return fail_with(EPROTONOSUPPORT);
  Runtime& runtime = Runtime::get();
  Lock lock(runtime.mutex());
  if (!runtime.ensure_stack()) return -1;
  if (datagram && runtime.udp() == nullptr) {
    static std::once_flag said;
    std::call_once(said, [] {
      std::fprintf(stderr, "flotilla: this application seat has no channel to the UDP server: SOCK_DGRAM "
                           "sockets fail with EPROTONOSUPPORT\n");
    });
    return fail_with(EPROTONOSUPPORT);
  }
  const int fd = reserve_fd((type & SOCK_CLOEXEC) != 0);
  if (fd < 0) return -1;
  auto socket = std::make_shared<Socket>();
  socket->epoch = runtime.epoch();
  socket->lease = runtime.lease();
  socket->nonblocking = (type & SOCK_NONBLOCK) != 0;
  socket->family = domain;
  if (datagram) {
    socket->protocol = Socket::Protocol::udp;
    socket->datagrams = std::make_shared<DatagramQueue>();
  }
  runtime.install(fd, std::move(socket));
  return fd;
}

FLOTILLA_EXPORT int bind(int fd, const sockaddr* address, socklen_t length) {
  if (!is_socket(fd)) return REAL(bind)(fd, address, length);
  {
    auto [lock, socket] = enter(fd);
    if (socket == nullptr) return -1;
    CallAddress named;
    if (!read_address(address, length, socket->family, named)) return -1;
    const std::uint32_t ip = named.ip;
    const std::uint16_t port = named.port;
    const bool on_stack = !named.ipv6 && binds_on_stack(ip);
    if (on_stack && !may_bind_port(port)) return fail_with(EACCES);
    if (socket->bound || socket->state != Socket::State::fresh) return fail_with(EINVAL);
    if (socket->udp() && on_stack) {
      if (!Runtime::get().owns(*socket)) return fail_with(EBADF);
      socket->bound_address = ip;
      return Runtime::get().open_datagram(&lock, *socket, port);
    }
    if (on_stack) {
      // Port 0 gets its port now, as on Linux, so getsockname tells it before listen or connect.
      socket->bound = true;
      socket->bound_address = ip;
      socket->port_picked_at_bind = port == 0;
      socket->bound_port = port != 0 ? port : static_cast<std::uint16_t>(pick_ephemeral_port());
      return 0;
    }
    if (!move_to_kernel(fd, *socket)) return fail_with(EADDRNOTAVAIL);
  }
  return REAL(bind)(fd, address, length);
}

FLOTILLA_EXPORT int listen(int fd, int backlog) {
  if (!is_socket(fd)) return REAL(listen)(fd, backlog);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  // Again on a listener (nginx does, at a reload, to change the backlog): nothing to do, and a
  // listener inherited over fork stays the parent's.
  if (socket->state == Socket::State::listening && !socket->udp()) return 0;
  if (!Runtime::get().owns(*socket)) return fail_with(EBADF);
  if (socket->udp()) return fail_with(EOPNOTSUPP);
  if (socket->state != Socket::State::fresh) return fail_with(EINVAL);
  return listen_locked(lock, *socket, backlog);
}

FLOTILLA_EXPORT int accept4(int fd, sockaddr* address, socklen_t* length, int flags) {
  if (!is_socket(fd)) return REAL(accept4)(fd, address, length, flags);
  return accept_common(fd, address, length, flags);
}

FLOTILLA_EXPORT int accept(int fd, sockaddr* address, socklen_t* length) {
  if (!is_socket(fd)) return REAL(accept)(fd, address, length);
  return accept_common(fd, address, length, 0);
}

FLOTILLA_EXPORT int connect(int fd, const sockaddr* address, socklen_t length) {
  if (!is_socket(fd)) return REAL(connect)(fd, address, length);
  if (const int done = connect_datagram(fd, address, length); done != kNotDatagram) return done;
  {
    auto [lock, socket] = enter(fd);
    if (socket == nullptr) return -1;
    if (!Runtime::get().owns(*socket)) return fail_with(EBADF);
    CallAddress named;
    if (!read_address(address, length, socket->family, named)) return -1;
    const std::uint32_t ip = named.ip;
    const std::uint16_t port = named.port;
    // 0.0.0.0 (and ::) means this host, as on Linux: the kernel's loopback too; so is another
    // address of the host's kernel (not for a socket bound on the stack), and any IPv6 peer.
    const bool kernel_peer =
        named.ipv6 || loopback(ip) || ip == 0 || (!socket->bound && kernel_host_address(ip));
    if (!kernel_peer || socket->state != Socket::State::fresh) {
      if (ip == 0 || port == 0) return fail_with(ECONNREFUSED);
      return connect_locked(lock, *socket, ip, port);
    }
    if (!move_to_kernel(fd, *socket)) return fail_with(ENETUNREACH);
  }
  return REAL(connect)(fd, address, length);
}

FLOTILLA_EXPORT int getsockname(int fd, sockaddr* address, socklen_t* length) {
  if (!is_socket(fd)) return REAL(getsockname)(fd, address, length);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  if (address == nullptr || length == nullptr) return fail_with(EFAULT);
  std::uint32_t ip = socket->bound_address;
  std::uint16_t port = socket->bound_port;
  Runtime& runtime = Runtime::get();
  if ((socket->state == Socket::State::connecting || socket->state == Socket::State::connected) &&
      Runtime::get().owns(*socket) && !socket->udp()) {
    const flotilla::sockets::TcpEndpoints ends = runtime.tcp().endpoints(socket->id);
    if (ends.local_address != 0) ip = ends.local_address;
    if (ends.local_port != 0) port = ends.local_port;
  }
  copy_address_out(address, length, socket->family, ip, port);
  return 0;
}

FLOTILLA_EXPORT int getpeername(int fd, sockaddr* address, socklen_t* length) {
  if (!is_socket(fd)) return REAL(getpeername)(fd, address, length);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  Runtime& runtime = Runtime::get();
  if (!Runtime::get().owns(*socket)) return fail_with(ENOTCONN);
  if (socket->udp()) {
    if (socket->peer_port == 0) return fail_with(ENOTCONN);
    if (address == nullptr || length == nullptr) return fail_with(EFAULT);
    copy_address_out(address, length, socket->family, socket->peer_address, socket->peer_port);
    return 0;
  }
  if (socket->state == Socket::State::connecting && runtime.tcp().connected(socket->id)) {
    socket->state = Socket::State::connected;
  }
  if (socket->state != Socket::State::connected) return fail_with(ENOTCONN);
  if (address == nullptr || length == nullptr) return fail_with(EFAULT);
  const flotilla::sockets::TcpEndpoints ends = runtime.tcp().endpoints(socket->id);
  copy_address_out(address, length, socket->family, ends.remote_address, ends.remote_port);
  return 0;
}

FLOTILLA_EXPORT int shutdown(int fd, int how) {
  if (!is_socket(fd)) return REAL(shutdown)(fd, how);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) return fail_with(EINVAL);
  if (!Runtime::get().owns(*socket)) return fail_with(ENOTCONN);
  if (socket->state == Socket::State::listening && how == SHUT_WR) return 0;  // nothing to send: Linux's answer
  if (socket->state != Socket::State::connected && socket->state != Socket::State::connecting) {
    return fail_with(ENOTCONN);
  }
  if (socket->state == Socket::State::connecting && !socket->udp() && Runtime::get().tcp().connected(socket->id)) {
    socket->state = Socket::State::connected;  // as Linux's shutdown does: a later connect says EISCONN
  }
  if (how != SHUT_WR) socket->read_shut = true;
  if (socket->udp()) {
    if (how != SHUT_RD) socket->write_shut = true;
    return 0;
  }
  // A connection that failed (refused, reset) is closed, as Linux's is: nothing to shut down.
  if (socket->id >= 0 && Runtime::get().tcp().error(socket->id) != 0) return fail_with(ENOTCONN);
  if (how != SHUT_RD && !socket->write_shut) {
    socket->write_shut = true;
    if (auto shut = Runtime::get().tcp().shutdown_write(socket->id); !shut) {
      return fail_with(errno_of(shut.error(), ENOTCONN));
    }
  }
  return 0;
}

namespace {

// Whether `fd` is the library's own: the program never opened it, so for the program it is not open.
bool library_descriptor(int fd) {
  if (!marked_library(fd)) return false;
  Lock lock(Runtime::get().mutex());
  return Runtime::get().library_descriptor(fd);
}

// Before the program puts a copy of `fd` at `target` (dup2, dup3): `fd` must be the program's,
// and a number the library holds at `target` moves out of the way, the program never having
// opened it. False with errno when the dup fails.
bool make_room_for_dup(int fd, int target) {
  if (library_descriptor(fd)) return fail_with(EBADF), false;
  if (!marked_library(target)) return true;
  if (REAL(fcntl)(fd, F_GETFD) < 0) return false;  // EBADF, before anything moves
  Lock lock(Runtime::get().mutex());
  if (!Runtime::get().vacate(target)) return fail_with(EMFILE), false;
  return true;
}

}  // namespace

FLOTILLA_EXPORT int close(int fd) {
  if (library_descriptor(fd)) return fail_with(EBADF);
  if (fd_kind(fd) == FdKind::kernel) {
    forget_netlink(fd);
    return REAL(close)(fd);
  }
  if (is_file(fd)) return close_file(fd);
  Lock lock(Runtime::get().mutex());
  Runtime::get().forget(fd);
  return REAL(close)(fd);
}

// The generic entry to the kernel. libuv (Node) closes descriptors with syscall(SYS_close, fd),
// around close(): that one is followed, or the Flotilla socket would outlive its descriptor (and
// the next one given that number would be taken for it). Every other call goes on unchanged.
namespace {

// Whether a raw fork, clone or clone3 makes a new process (a fork: its own memory, not a thread): vsftpd
// forks its sessions with syscall(SYS_clone, CLONE_NEWPID | ...), which the C library's fork
// handlers never see.
bool clone_forks(long number, const long* values) {
  std::uint64_t flags = 0;
  if (number == SYS_fork) return true;
  if (number == SYS_clone) {
    flags = static_cast<std::uint64_t>(values[0]);
  } else if (number == SYS_clone3) {
    const auto* arguments = reinterpret_cast<const clone_args*>(values[0]);
    if (arguments == nullptr || static_cast<std::size_t>(values[1]) < sizeof(std::uint64_t)) return false;
    flags = arguments->flags;
  } else {
    return false;
  }
  return (flags & (CLONE_VM | CLONE_THREAD)) == 0;
}

}  // namespace

namespace {

// A socket call made by number on a Flotilla socket (libuv reads and writes datagrams in batches
// with the kernel's calls themselves): the library's own call, as if made through the C library.
std::optional<long> socket_call_by_number(long number, const long* values) {
  const auto fd = static_cast<int>(values[0]);
  if (!is_socket(fd)) return std::nullopt;
  const auto pointer = [&](int at) { return reinterpret_cast<void*>(values[at]); };
  const auto size = [&](int at) { return static_cast<std::size_t>(values[at]); };
  const auto flags = [&](int at) { return static_cast<int>(values[at]); };
  auto* address = static_cast<sockaddr*>(pointer(1));
  auto* length = static_cast<socklen_t*>(pointer(2));
  switch (number) {
    case SYS_read: return read(fd, pointer(1), size(2));
    case SYS_write: return write(fd, pointer(1), size(2));
    case SYS_recvfrom:
      return recvfrom(fd, pointer(1), size(2), flags(3), static_cast<sockaddr*>(pointer(4)),
                      static_cast<socklen_t*>(pointer(5)));
    case SYS_sendto:
      return sendto(fd, pointer(1), size(2), flags(3), static_cast<const sockaddr*>(pointer(4)),
                    static_cast<socklen_t>(values[5]));
    case SYS_recvmsg: return recvmsg(fd, static_cast<msghdr*>(pointer(1)), flags(2));
    case SYS_sendmsg: return sendmsg(fd, static_cast<const msghdr*>(pointer(1)), flags(2));
    case SYS_recvmmsg:
      return recvmmsg(fd, static_cast<mmsghdr*>(pointer(1)), static_cast<unsigned int>(values[2]), flags(3),
                      static_cast<timespec*>(pointer(4)));
    case SYS_sendmmsg: return sendmmsg(fd, static_cast<mmsghdr*>(pointer(1)), static_cast<unsigned int>(values[2]), flags(3));
    case SYS_accept4: return accept4(fd, address, length, flags(3));
    case SYS_accept: return accept(fd, address, length);
    case SYS_connect: return connect(fd, address, static_cast<socklen_t>(values[2]));
    case SYS_bind: return bind(fd, address, static_cast<socklen_t>(values[2]));
    case SYS_listen: return listen(fd, flags(1));
    case SYS_shutdown: return shutdown(fd, flags(1));
    case SYS_getsockname: return getsockname(fd, address, length);
    case SYS_getpeername: return getpeername(fd, address, length);
    case SYS_setsockopt:
      return setsockopt(fd, flags(1), flags(2), pointer(3), static_cast<socklen_t>(values[4]));
    case SYS_getsockopt: return getsockopt(fd, flags(1), flags(2), pointer(3), static_cast<socklen_t*>(pointer(4)));
    default: return std::nullopt;
  }
}

}  // namespace

FLOTILLA_EXPORT long syscall(long number, ...) {
  va_list arguments;
  va_start(arguments, number);
  long values[6];
  for (long& value : values) value = va_arg(arguments, long);  // as many as the kernel takes
  va_end(arguments);
  if (number == SYS_close && (fd_kind(static_cast<int>(values[0])) != FdKind::kernel ||
                              marked_library(static_cast<int>(values[0])))) {
    return close(static_cast<int>(values[0]));
  }
  if (number == SYS_seccomp && static_cast<unsigned int>(values[0]) == SECCOMP_SET_MODE_FILTER) {
    Lock lock(Runtime::get().mutex());
    Runtime::get().settle_before_sandbox();
  }
  if (number == SYS_close_range) {
    return close_range(static_cast<unsigned int>(values[0]), static_cast<unsigned int>(values[1]),
                       static_cast<int>(values[2]));
  }
  if (const auto done = socket_call_by_number(number, values)) return *done;
  if (clone_forks(number, values)) {
    // What fork's handlers do (pthread_atfork): the child must know it is not its parent.
    Runtime& runtime = Runtime::get();
    runtime.before_fork();
    const long child = REAL(syscall)(number, values[0], values[1], values[2], values[3], values[4], values[5]);
    const int error = errno;
    if (child == 0) {
      runtime.after_fork_child();
    } else {
      runtime.after_fork_parent();
    }
    errno = error;
    return child;
  }
  return REAL(syscall)(number, values[0], values[1], values[2], values[3], values[4], values[5]);
}

FLOTILLA_EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
  if (first > last) return fail_with(EINVAL);
  if ((flags & CLOSE_RANGE_CLOEXEC) == 0) forget_files_in(first, last);
  Lock lock(Runtime::get().mutex());
  Runtime& runtime = Runtime::get();
  // The range in pieces around the library's own descriptors, which stay open (and CLOEXEC).
  unsigned int from = first;
  int closed = 0;
  for (const int own : runtime.library_descriptors()) {
    const auto fd = static_cast<unsigned int>(own);
    if (closed != 0 || fd > last) break;
    if (fd < from) continue;
    if (fd > from) closed = REAL(close_range)(from, fd - 1, flags);
    from = fd + 1;
  }
  if (closed == 0 && from <= last) closed = REAL(close_range)(from, last, flags);
  const unsigned int end = std::min<unsigned int>(last, kMaxFds - 1);
  if (closed == 0 && (flags & CLOSE_RANGE_CLOEXEC) == 0) {
    for (unsigned int fd = first; fd <= end; ++fd) {
      if (fd_kind(static_cast<int>(fd)) != FdKind::kernel) runtime.forget(static_cast<int>(fd));
    }
  }
  return closed;
}

// prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) confines the process (sshd's sandbox): what the
// library needs system calls for is done first (Runtime::settle_before_sandbox).
FLOTILLA_EXPORT int prctl(int option, ...) {
  va_list arguments;
  va_start(arguments, option);
  unsigned long values[4];
  for (unsigned long& value : values) value = va_arg(arguments, unsigned long);
  va_end(arguments);
  if (option == PR_SET_SECCOMP && values[0] == SECCOMP_MODE_FILTER) {
    Lock lock(Runtime::get().mutex());
    Runtime::get().settle_before_sandbox();
  }
  return REAL(prctl)(option, values[0], values[1], values[2], values[3]);
}

namespace {

// Whether `limit` (a rlimit or rlimit64: the same layout here) lowers the descriptor limit below
// what it is now: a confinement (sshd sets it to 1 before its seccomp filter). Raising it (nginx,
// redis) takes nothing over. A null `limit` is the kernel's to refuse.
bool lowers_descriptor_limit(int resource, const void* limit) {
  static_assert(sizeof(rlimit) == sizeof(rlimit64));
  rlimit64 wanted{};
  rlimit64 now{};
  if (resource != RLIMIT_NOFILE || limit == nullptr) return false;
  std::memcpy(&wanted, limit, sizeof(wanted));
  return ::getrlimit64(RLIMIT_NOFILE, &now) == 0 && wanted.rlim_cur < now.rlim_cur;
}

void settle_if_confined(int resource, const void* limit) {
  if (!lowers_descriptor_limit(resource, limit)) return;
  Lock lock(Runtime::get().mutex());
  Runtime::get().settle_before_sandbox();
}

// After a successful set: the limit poll_in_turns works within (a sandbox may forbid asking).
int remember_descriptor_limit(int result, int resource, const void* limit) {
  if (result == 0 && resource == RLIMIT_NOFILE && limit != nullptr) {
    rlimit64 set{};
    std::memcpy(&set, limit, sizeof(set));
    g_descriptor_limit_set.store(set.rlim_cur, std::memory_order_relaxed);
  }
  return result;
}

// RLIMIT_AS as the program means it: its own memory. On Linux socket memory is the kernel's; here
// it is mapped into the process, and a seat's regions reserve tens of GiB of sparse address space
// (vsftpd limits itself to 200 MB, and then failed every mmap). A limit the program sets is raised
// by twice what the library maps (a fork child may lease a seat of its own), and reads back
// without it. With nothing leased yet there is nothing to add: a seat leased under the limit later
// may then not fit.
std::atomic<rlim64_t> g_address_space_allowance{0};

rlim64_t raised(rlim64_t value, rlim64_t allowance) {
  if (value == RLIM64_INFINITY) return value;
  return value > RLIM64_INFINITY - 1 - allowance ? RLIM64_INFINITY - 1 : value + allowance;
}

rlim64_t lowered(rlim64_t value, rlim64_t allowance) {
  return value == RLIM64_INFINITY ? value : value - std::min(value, allowance);
}

// setrlimit for every resource: RLIMIT_AS with the allowance, RLIMIT_NOFILE settling first.
int set_limit(int resource, const void* limit) {
  settle_if_confined(resource, limit);
  rlimit64 wanted{};
  if (limit != nullptr) std::memcpy(&wanted, limit, sizeof(wanted));
  if (resource == RLIMIT_AS && limit != nullptr) {
    const rlim64_t allowance = [] {
      Lock lock(Runtime::get().mutex());
      return static_cast<rlim64_t>(2 * Runtime::get().mapped_bytes());
    }();
    wanted.rlim_cur = raised(wanted.rlim_cur, allowance);
    wanted.rlim_max = raised(wanted.rlim_max, allowance);
    const int result = REAL(setrlimit64)(RLIMIT_AS, &wanted);
    if (result == 0) g_address_space_allowance.store(allowance, std::memory_order_relaxed);
    return result;
  }
  return remember_descriptor_limit(REAL(setrlimit64)(static_cast<__rlimit_resource_t>(resource), limit != nullptr ? &wanted : nullptr), resource, limit);
}

// getrlimit for every resource: RLIMIT_AS without the allowance.
int get_limit(int resource, void* limit) {
  rlimit64 now{};
  const int result = REAL(getrlimit64)(static_cast<__rlimit_resource_t>(resource), limit != nullptr ? &now : nullptr);
  if (result != 0 || limit == nullptr) return result;
  if (resource == RLIMIT_AS) {
    const rlim64_t allowance = g_address_space_allowance.load(std::memory_order_relaxed);
    now.rlim_cur = lowered(now.rlim_cur, allowance);
    now.rlim_max = lowered(now.rlim_max, allowance);
  }
  std::memcpy(limit, &now, sizeof(now));
  return result;
}

}  // namespace

FLOTILLA_EXPORT int setrlimit(__rlimit_resource_t resource, const rlimit* limit) { return set_limit(resource, limit); }

FLOTILLA_EXPORT int setrlimit64(__rlimit_resource_t resource, const rlimit64* limit) { return set_limit(resource, limit); }

FLOTILLA_EXPORT int getrlimit(__rlimit_resource_t resource, rlimit* limit) { return get_limit(resource, limit); }

FLOTILLA_EXPORT int getrlimit64(__rlimit_resource_t resource, rlimit64* limit) { return get_limit(resource, limit); }

// The C library's closefrom calls its close_range inside it, past this library: it comes here.
FLOTILLA_EXPORT void closefrom(int lowest) {
  const unsigned int first = static_cast<unsigned int>(std::max(lowest, 0));
  if (close_range(first, ~0u, 0) == 0) return;
  // A kernel without close_range: each number up to the limit, as the C library falls back.
  rlimit limit{};
  const rlim_t top = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 ? std::min<rlim_t>(limit.rlim_cur, kMaxFds) : 1024;
  for (rlim_t fd = first; fd < top; ++fd) (void)close(static_cast<int>(fd));
}

FLOTILLA_EXPORT int dup(int fd) {
  if (fd_kind(fd) == FdKind::kernel) return REAL(dup)(fd);
  if (is_file(fd)) return fcntl_file(fd, F_DUPFD, nullptr, REAL(fcntl));
  Lock lock(Runtime::get().mutex());
  const int copy = REAL(dup)(fd);
  if (copy >= 0) share_descriptor(fd, copy);
  return copy;
}

FLOTILLA_EXPORT int dup3(int fd, int target, int flags) {
  if (!make_room_for_dup(fd, target)) return -1;
  if (is_file(fd) || is_file(target)) {
    if (const int copy = dup_file(fd, target, flags, false); copy != kNotFile) return copy;
  }
  if (fd_kind(fd) == FdKind::kernel && fd_kind(target) == FdKind::kernel) return REAL(dup3)(fd, target, flags);
  standard_stream_flush(target);
  Lock lock(Runtime::get().mutex());
  const int copy = REAL(dup3)(fd, target, flags);
  if (copy >= 0) share_descriptor(fd, copy);
  standard_stream_follows(target);
  return copy;
}

FLOTILLA_EXPORT int dup2(int fd, int target) {
  if (!make_room_for_dup(fd, target)) return -1;
  if (is_file(fd) || is_file(target)) {
    if (const int copy = dup_file(fd, target, 0, true); copy != kNotFile) return copy;
  }
  if (fd_kind(fd) == FdKind::kernel && fd_kind(target) == FdKind::kernel) return REAL(dup2)(fd, target);
  standard_stream_flush(target);
  Lock lock(Runtime::get().mutex());
  const int copy = REAL(dup2)(fd, target);
  if (copy >= 0 && copy != fd) share_descriptor(fd, copy);
  standard_stream_follows(target);
  return copy;
}

FLOTILLA_EXPORT int fcntl(int fd, int command, ...) {
  va_list arguments;
  va_start(arguments, command);
  void* argument = va_arg(arguments, void*);
  va_end(arguments);
  return fcntl_common(fd, command, argument, REAL(fcntl));
}

FLOTILLA_EXPORT int fcntl64(int fd, int command, ...) {
  va_list arguments;
  va_start(arguments, command);
  void* argument = va_arg(arguments, void*);
  va_end(arguments);
  return fcntl_common(fd, command, argument, REAL(fcntl64));
}

FLOTILLA_EXPORT int ioctl(int fd, unsigned long request, ...) {
  va_list arguments;
  va_start(arguments, request);
  void* argument = va_arg(arguments, void*);
  va_end(arguments);
  if (const auto answered = interface_ioctl(fd, request, argument)) return *answered;
  // FD_CLOEXEC is the placeholder's (what exec hands over reads it).
  if (!is_socket(fd) || request == FIOCLEX || request == FIONCLEX) return REAL(ioctl)(fd, request, argument);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  auto* value = static_cast<int*>(argument);
  Runtime& runtime = Runtime::get();
  const bool live = socket->id >= 0 && Runtime::get().owns(*socket);
  switch (request) {
    case FIONBIO:
      if (value == nullptr) return fail_with(EFAULT);
      socket->nonblocking = *value != 0;
      return 0;
    case FIONREAD:
      if (value == nullptr) return fail_with(EFAULT);
      if (socket->state == Socket::State::listening) return fail_with(EINVAL);
      if (socket->udp()) {
        *value = socket->datagrams->empty() ? 0 : socket->datagrams->front().length;  // the next datagram, as Linux
        return 0;
      }
      *value = live ? static_cast<int>(std::min<std::size_t>(runtime.tcp().received_bytes(socket->id), INT32_MAX)) : 0;
      return 0;
    case SIOCGIFCONF:
    case SIOCGIFFLAGS:
    case SIOCGIFADDR:
    case SIOCGIFNETMASK:
    case SIOCGIFBRDADDR:
    case SIOCGIFMTU:
    case SIOCGIFHWADDR:
    case SIOCGIFINDEX:
    case SIOCGIFNAME:
      // Questions about the host's interfaces, which any socket may ask: the kernel answers them.
      return kernel_interface_ioctl(fd, request, argument);
    case SIOCOUTQ:
      if (value == nullptr) return fail_with(EFAULT);
      if (socket->state == Socket::State::listening) return fail_with(EINVAL);
      *value = live && !socket->udp() ? static_cast<int>(std::min<std::size_t>(runtime.tcp().unacknowledged(socket->id), INT32_MAX)) : 0;
      return 0;
    default:
      return fail_with(ENOTTY);
  }
}

FLOTILLA_EXPORT int setsockopt(int fd, int level, int name, const void* value, socklen_t length) {
  if (!is_socket(fd)) return REAL(setsockopt)(fd, level, name, value, length);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  if (level == SOL_SOCKET) return set_socket_level(*socket, name, value, length);
  if (level == IPPROTO_IP) return set_ip_level(*socket, name, value, length);
  if (level == IPPROTO_TCP && !socket->udp()) return set_tcp_level(*socket, name, value, length);
  if (level == IPPROTO_IPV6 && socket->family == AF_INET6 && name == IPV6_V6ONLY) {
    int number = 0;
    if (read_int(value, length, number) != 0) return -1;
    if (number == 0) return 0;
    // IPv6 only: nothing of it is the stack's, so the kernel's socket takes its place now.
    if (!move_to_kernel(fd, *socket)) return fail_with(EINVAL);
    lock.unlock();
    return REAL(setsockopt)(fd, level, name, value, length);
  }
  if (level == IPPROTO_IPV6 && socket->family == AF_INET6 && name == IPV6_RECVPKTINFO) {
    int number = 0;
    if (read_int(value, length, number) != 0) return -1;
    socket->packet_info6 = number != 0;
    return 0;
  }
  if (level == IPPROTO_IPV6) return set_kept(*socket, level, name, value, length);
  return fail_with(ENOPROTOOPT);
}

FLOTILLA_EXPORT int getsockopt(int fd, int level, int name, void* value, socklen_t* length) {
  if (!is_socket(fd)) return REAL(getsockopt)(fd, level, name, value, length);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  return get_option(*socket, level, name, value, length);
}

// The stat calls of programs built against a C library before 2.33 (Node's own libuv asks
// __fxstat64 what each descriptor it receives is): they answer what fstat does, a Flotilla socket
// being a socket.
FLOTILLA_EXPORT int __fxstat64(int, int fd, struct stat64* out) { return ::fstat64(fd, out); }

FLOTILLA_EXPORT int __fxstat(int, int fd, struct stat* out) { return ::fstat(fd, out); }

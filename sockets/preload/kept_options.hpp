// Socket options that Linux accepts and Flotilla keeps without acting on them: setsockopt checks
// the value as Linux does and keeps it, getsockopt answers it, accept() copies it from the
// listener. Programs set many of these as hints (IP_TOS, TCP_DEFER_ACCEPT, SO_PRIORITY...) and stop
// at the first ENOPROTOOPT; sockets/preload/README.md ("Options kept, not acted on") says what
// Linux would do with each.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <array>
#include <climits>
#include <cstddef>

namespace flotilla::preload {

// TCP_MAXSEG: what setsockopt takes besides 0 (none), as Linux checks it.
inline constexpr int kMinimumMss = 88;     // Linux's TCP_MIN_MSS
inline constexpr int kMaximumMss = 32767;  // MAX_TCP_WINDOW

// How a value set is kept.
enum class KeptRule : unsigned char {
  flag,            // any int; kept as 0 or 1
  ranged,          // [minimum, maximum], else EINVAL
  ranged_or_reset,  // [minimum, maximum], or `reset` (back to the initial value), else EINVAL
  negative_is_max,  // any int; a negative one is kept as INT_MAX (SO_RCVLOWAT)
  defer_accept,     // seconds, rounded up to whole SYN-ACK retransmissions as Linux does
  linger2,          // seconds: negative kept as -1, above 120 as 120, 0 back to the initial value
  fastopen_queue,   // TCP_FASTOPEN's queue length: at most somaxconn (4096), a negative one too
  read_only,        // getsockopt answers; setsockopt fails with ENOPROTOOPT (Linux's SO_SNDLOWAT)
  not_supported,    // both fail with EOPNOTSUPP (Linux's SO_PASSCRED on an IP socket)
};

struct KeptOption {
  int level;
  int name;
  KeptRule rule;
  int initial;  // what getsockopt says before any setsockopt (Linux's default here)
  int minimum = INT_MIN;
  int maximum = INT_MAX;
  int reset = 0;
  bool tcp_only = false;  // UDP sockets answer ENOPROTOOPT, as Linux's UDP does for TCP options
  bool datagram_only_set = false;  // setsockopt on a TCP socket fails with EINVAL (multicast)
  bool ipv6_socket_only = false;   // an AF_INET socket answers ENOPROTOOPT, as Linux's does
};

inline constexpr auto kKeptOptions = std::to_array<KeptOption>({
    {SOL_SOCKET, SO_BROADCAST, KeptRule::flag, 0},
    {SOL_SOCKET, SO_DONTROUTE, KeptRule::flag, 0},
    {SOL_SOCKET, SO_OOBINLINE, KeptRule::flag, 0},
    {SOL_SOCKET, SO_DEBUG, KeptRule::flag, 0},
    {SOL_SOCKET, SO_PASSCRED, KeptRule::not_supported, 0},
    {SOL_SOCKET, SO_TIMESTAMP, KeptRule::flag, 0},
    {SOL_SOCKET, SO_TIMESTAMPNS, KeptRule::flag, 0},
    {SOL_SOCKET, SO_PRIORITY, KeptRule::ranged, 0},
    {SOL_SOCKET, SO_MARK, KeptRule::ranged, 0},
    {SOL_SOCKET, SO_BUSY_POLL, KeptRule::ranged, 0, 0},
    {SOL_SOCKET, SO_RCVLOWAT, KeptRule::negative_is_max, 1},
    {SOL_SOCKET, SO_SNDLOWAT, KeptRule::read_only, 1},
    {IPPROTO_IP, IP_TOS, KeptRule::ranged, 0, 0, 255},
    {IPPROTO_IP, IP_TTL, KeptRule::ranged_or_reset, 64, 1, 255, -1},
    {IPPROTO_IP, IP_RECVTOS, KeptRule::flag, 0},
    {IPPROTO_IP, IP_RECVTTL, KeptRule::flag, 0},
    {IPPROTO_IP, IP_RECVERR, KeptRule::flag, 0},
    {IPPROTO_IP, IP_FREEBIND, KeptRule::flag, 0},
    {IPPROTO_IP, IP_TRANSPARENT, KeptRule::flag, 0},
    {IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, KeptRule::flag, 0},
    {IPPROTO_IP, IP_MTU_DISCOVER, KeptRule::ranged, IP_PMTUDISC_WANT, IP_PMTUDISC_DONT, IP_PMTUDISC_OMIT},
    {IPPROTO_IP, IP_MULTICAST_TTL, KeptRule::ranged_or_reset, 1, 0, 255, -1, false, true},
    {IPPROTO_IP, IP_MULTICAST_LOOP, KeptRule::flag, 1},
    {IPPROTO_IP, IP_MULTICAST_ALL, KeptRule::flag, 1},
    {IPPROTO_TCP, TCP_DEFER_ACCEPT, KeptRule::defer_accept, 0, INT_MIN, INT_MAX, 0, true},
    {IPPROTO_TCP, TCP_QUICKACK, KeptRule::flag, 1, INT_MIN, INT_MAX, 0, true},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, KeptRule::ranged, 0, 0, INT_MAX, 0, true},
    {IPPROTO_TCP, TCP_SYNCNT, KeptRule::ranged, 6, 1, 127, 0, true},
    {IPPROTO_TCP, TCP_LINGER2, KeptRule::linger2, 60, INT_MIN, INT_MAX, 0, true},
    {IPPROTO_TCP, TCP_FASTOPEN, KeptRule::fastopen_queue, 0, INT_MIN, INT_MAX, 0, true},
    {IPPROTO_TCP, TCP_NOTSENT_LOWAT, KeptRule::ranged, 0, INT_MIN, INT_MAX, 0, true},
    // A dual-stack socket's IPv6 hints (Java sets IPV6_MULTICAST_HOPS on every datagram socket).
    {IPPROTO_IPV6, IPV6_UNICAST_HOPS, KeptRule::ranged_or_reset, 64, 0, 255, -1, false, false, true},
    {IPPROTO_IPV6, IPV6_MULTICAST_HOPS, KeptRule::ranged_or_reset, 1, 0, 255, -1, false, true, true},
    {IPPROTO_IPV6, IPV6_MULTICAST_LOOP, KeptRule::flag, 1, INT_MIN, INT_MAX, 0, false, false, true},
    {IPPROTO_IPV6, IPV6_MULTICAST_ALL, KeptRule::flag, 1, INT_MIN, INT_MAX, 0, false, false, true},
    {IPPROTO_IPV6, IPV6_TCLASS, KeptRule::ranged_or_reset, 0, 0, 255, -1, false, false, true},
});

// The values of one socket, in the table's order.
using KeptValues = std::array<int, kKeptOptions.size()>;

constexpr KeptValues initial_kept_values() {
  KeptValues values{};
  for (std::size_t i = 0; i < kKeptOptions.size(); ++i) values[i] = kKeptOptions[i].initial;
  return values;
}

// The option's place in the table, or -1 when it is not one of these.
constexpr int kept_option_index(int level, int name) {
  for (std::size_t i = 0; i < kKeptOptions.size(); ++i) {
    if (kKeptOptions[i].level == level && kKeptOptions[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

// What Linux keeps for `value` under `option` (errno in `error` when it refuses it).
constexpr int kept_value(const KeptOption& option, int value, int& error) {
  error = 0;
  switch (option.rule) {
    case KeptRule::flag: return value != 0 ? 1 : 0;
    case KeptRule::ranged:
      if (value < option.minimum || value > option.maximum) error = EINVAL;
      return value;
    case KeptRule::ranged_or_reset:
      if (value == option.reset) return option.initial;
      if (value < option.minimum || value > option.maximum) error = EINVAL;
      return value;
    case KeptRule::negative_is_max: return value < 0 ? INT_MAX : value;
    case KeptRule::defer_accept: {
      // tcp_set_defer_accept: the smallest number of retransmissions (1 s, doubling up to 120 s)
      // whose time covers `value`, read back as that time.
      if (value <= 0) return 0;
      int timeout = 1;
      int period = 1;
      for (int retransmissions = 1; value > period && retransmissions < 255; ++retransmissions) {
        timeout = timeout * 2 > 120 ? 120 : timeout * 2;
        period += timeout;
      }
      return period;
    }
    case KeptRule::linger2:
      if (value < 0) return -1;
      if (value == 0) return option.initial;
      return value > 120 ? 120 : value;
    case KeptRule::fastopen_queue: {
      constexpr int kSomaxconn = 4096;  // Linux's default net.core.somaxconn
      return value < 0 || value > kSomaxconn ? kSomaxconn : value;
    }
    case KeptRule::read_only: error = ENOPROTOOPT; return value;
    case KeptRule::not_supported: error = EOPNOTSUPP; return value;
  }
  error = EINVAL;
  return value;
}

}  // namespace flotilla::preload

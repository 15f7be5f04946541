// What the interposed calls share: entering a call on a Flotilla descriptor, errno mapping,
// blocking until a socket is ready, addresses.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <cstring>
#include <memory>

#include "dataplane/result.hpp"
#include "sockets/preload/runtime.hpp"

// The interposed C library symbols: the only ones the library exports.
#define FLOTILLA_EXPORT extern "C" __attribute__((visibility("default")))

namespace flotilla::preload {

// The socket behind `fd` with the lock held; socket is null (errno EBADF) when the descriptor
// stopped being ours in the meantime.
struct Entered {
  Lock lock;
  std::shared_ptr<Socket> socket;
};
inline Entered enter(int fd) {
  Runtime& runtime = Runtime::get();
  Entered entered{Lock(runtime.mutex()), runtime.socket_at(fd)};
  if (entered.socket == nullptr) errno = EBADF;
  return entered;
}

// The errno for a TcpSockets error (`fallback` when it carries none).
inline int errno_of(const Error& error, int fallback) {
  if (error.sys_errno > 0) return error.sys_errno;
  switch (error.code) {
    case Errc::would_block: return EAGAIN;
    case Errc::exhausted: return ENOBUFS;
    case Errc::invalid_argument: return fallback;
    default: return fallback;
  }
}

// Blocks (the lock held on entry and return) until `socket` shows one of `events` or an error.
// 1: ready; 0: `timeout_ms` passed (-1: none); -1: EINTR, or the socket went away (EBADF).
int wait_for(Lock& lock, Socket& socket, std::uint32_t events, int timeout_ms);

// A call that waits for something a socket whose stack went down will never get (accept on a
// listener, a UDP receive): ENETDOWN the first time; then what such a socket does while nothing
// comes (EAGAIN when non-blocking, else a sleep until `deadline_ns` (0: none) or a signal), so that
// a server that retries in a loop does not spin. The lock is held on entry and return.
int fail_after_down(Lock& lock, Socket& socket, std::uint64_t deadline_ns);

// How far a data call that cannot go on has come (see when_stuck).
struct Progress {
  std::uint64_t deadline;  // of SO_RCVTIMEO/SO_SNDTIMEO (deadline_after), 0 for none
  bool pumped = false;
  bool slept = false;
};
inline constexpr ssize_t kRetry = -2;
// What a data call does when it cannot go on: first handle the stack's pending messages and
// retry, then fail with EAGAIN when it must not block, else block until `events`. Returns kRetry
// to try again, or what the call returns (`done` bytes, when there are some, beat an error).
ssize_t when_stuck(Lock& lock, Socket& socket, Progress& progress, std::uint32_t events, bool nonblocking,
                   std::size_t done);

// Copies an IPv4 address out the way the kernel does for a socket of `family`: a sockaddr_in, or
// for AF_INET6 a sockaddr_in6 with the IPv4-mapped address (:: for 0.0.0.0), truncated to
// *length, which gets the full size.
void copy_address_out(sockaddr* out, socklen_t* length, int family, std::uint32_t address, std::uint16_t port);
// An address a call names for a socket of `family`: IPv4 (`ipv6` false), or on an AF_INET6 socket
// an IPv6 address that is not IPv4-mapped (`ipv6` true: only the kernel reaches it; :: reads as
// 0.0.0.0, the wildcard).
struct CallAddress {
  std::uint32_t ip = 0;
  std::uint16_t port = 0;
  bool ipv6 = false;
};
// Reads the address as Linux's socket of `family` would take it; false (errno set) when it cannot.
bool read_address(const sockaddr* in, socklen_t length, int family, CallAddress& out);

// A new descriptor holding a fresh number for a Flotilla socket (an eventfd).
int reserve_fd(bool cloexec);

// What a receive tells about its datagram besides the bytes (UDP; a stream has no address per read).
struct Origin {
  sockaddr* address = nullptr;
  socklen_t* length = nullptr;
  int* message_flags = nullptr;  // MSG_TRUNC when the datagram was longer than the buffers
  std::uint32_t destination = 0;  // out: where the datagram was sent (host order)
  bool packet_info = false;       // out: the socket asked for IP_PKTINFO
  bool packet_info6 = false;      // out: the socket asked for IPV6_RECVPKTINFO
};

// UDP reads and writes (calls_datagram.cpp), with the lock held.
ssize_t receive_datagram(Lock& lock, Socket& socket, const iovec* vectors, int count, int flags, Origin& origin);
ssize_t send_datagram(Lock& lock, Socket& socket, const iovec* vectors, int count, int flags, const sockaddr* to,
                      socklen_t to_length);

// Raises SIGPIPE for an EPIPE unless the caller asked not to, like Linux.
void maybe_sigpipe(int error, int flags);

// fstat of a Flotilla socket (`result` of the kernel's, on its placeholder eventfd): a socket, as
// Linux says, so that a program guessing what a descriptor is (libuv's uv_guess_handle, which
// Node runs on every descriptor it receives) finds one.
inline int socket_status(int result, mode_t& mode) {
  if (result == 0) mode = S_IFSOCK | 0777;
  return result;
}

}  // namespace flotilla::preload

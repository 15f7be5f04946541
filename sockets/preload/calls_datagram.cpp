// UDP (SOCK_DGRAM) on Flotilla: datagrams go out through UdpSockets (one pool buffer each) and
// come in through its callback into the socket's DatagramQueue, from which reads copy them.
#include <sys/uio.h>

#include <algorithm>
#include <vector>

#include "sockets/preload/calls.hpp"

namespace flotilla::preload {

namespace {

// Opens the socket on the UDP server (any port) when the program sends before binding.
int ensure_open(Lock& lock, Socket& socket) {
  if (Runtime::get().gone(socket)) return fail_with(ENETDOWN);
  if (socket.id >= 0) return 0;
  return Runtime::get().open_datagram(&lock, socket, 0);
}

}  // namespace

ssize_t receive_datagram(Lock& lock, Socket& socket, const iovec* vectors, int count, int flags, Origin& origin) {
  Runtime& runtime = Runtime::get();
  if ((flags & ~(MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC | MSG_WAITALL | MSG_CMSG_CLOEXEC)) != 0) return fail_with(EOPNOTSUPP);
  if (socket.read_shut) return 0;
  const bool nonblocking = socket.nonblocking || (flags & MSG_DONTWAIT) != 0;
  Progress progress{deadline_after(socket.receive_timeout_ms)};
  for (;;) {
    if (!Runtime::get().owns(socket)) return fail_with(EBADF);
    if (socket.udp_error != 0) return fail_with(socket.udp_error);
    DatagramQueue& queue = *socket.datagrams;
    if (!queue.empty()) {
      const DatagramQueue::Entry& entry = queue.front();
      std::size_t copied = 0;
      for (int i = 0; i < count && copied < entry.length; ++i) {
        const std::size_t piece = std::min<std::size_t>(vectors[i].iov_len, entry.length - copied);
        std::memcpy(vectors[i].iov_base, entry.bytes + copied, piece);
        copied += piece;
      }
      const std::size_t length = entry.length;
      copy_address_out(origin.address, origin.length, socket.family, entry.address, entry.port);
      if (origin.message_flags != nullptr) *origin.message_flags = copied < length ? MSG_TRUNC : 0;
      origin.destination = entry.destination;
      origin.packet_info = socket.packet_info;
      origin.packet_info6 = socket.packet_info6;
      if ((flags & MSG_PEEK) == 0) queue.pop();
      if (!progress.slept) runtime.counters().io_no_syscall->add();
      return static_cast<ssize_t>((flags & MSG_TRUNC) != 0 ? length : copied);
    }
    if (runtime.gone(socket)) return fail_after_down(lock, socket, progress.deadline);
    if (const ssize_t next = when_stuck(lock, socket, progress, POLLIN, nonblocking, 0); next != kRetry) return next;
  }
}

ssize_t send_datagram(Lock& lock, Socket& socket, const iovec* vectors, int count, int flags, const sockaddr* to,
                      socklen_t to_length) {
  Runtime& runtime = Runtime::get();
  if ((flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE | MSG_EOR)) != 0) return fail_with(EOPNOTSUPP);
  if (socket.write_shut) {
    maybe_sigpipe(EPIPE, flags);
    return fail_with(EPIPE);
  }
  std::uint32_t address = socket.peer_address;
  std::uint16_t port = socket.peer_port;
  if (to != nullptr) {
    CallAddress named;
    if (!read_address(to, to_length, socket.family, named)) return -1;
    address = named.ip;
    port = named.port;
  }
  if (port == 0) return fail_with(socket.peer_port == 0 && to == nullptr ? EDESTADDRREQ : EINVAL);
  if (ensure_open(lock, socket) != 0) return -1;
  sockets::UdpSockets& udp = *runtime.udp();
  // One datagram from the pieces: gathered into a buffer of this thread's.
  thread_local std::vector<std::byte> gathered;
  gathered.clear();
  for (int i = 0; i < count; ++i) {
    if (gathered.size() + vectors[i].iov_len > udp.max_payload()) return fail_with(EMSGSIZE);
    const auto* base = static_cast<const std::byte*>(vectors[i].iov_base);
    gathered.insert(gathered.end(), base, base + vectors[i].iov_len);
  }
  const bool nonblocking = socket.nonblocking || (flags & MSG_DONTWAIT) != 0;
  const std::uint64_t deadline = deadline_after(socket.send_timeout_ms);
  bool slept = false;
  for (bool pumped = false;;) {
    auto sent = udp.send_to(static_cast<std::uint32_t>(socket.id), address, port, gathered);
    if (sent) {
      if (!slept) runtime.counters().io_no_syscall->add();
      return static_cast<ssize_t>(gathered.size());
    }
    if (sent.error().code != Errc::exhausted) return fail_with(errno_of(sent.error(), EINVAL));
    if (!pumped) {
      runtime.pump();  // gives back buffers and channel room the stack is done with
      pumped = true;
      continue;
    }
    if (nonblocking) return fail_with(EAGAIN);
    // No buffer or no room now: the stack frees some soon, and its messages wake us.
    constexpr int kRetryMs = 1;
    const int left = remaining_ms(deadline);
    if (left == 0) return fail_with(EAGAIN);
    if (runtime.sleep(lock, [] { return false; }, nullptr, 0, left < 0 ? kRetryMs : std::min(left, kRetryMs)) < 0) {
      return -1;
    }
    slept = true;
    pumped = false;
  }
}

}  // namespace flotilla::preload

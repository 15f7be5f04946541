// The interposed data calls: read/write and their vector, socket and fortified variants, and
// sendfile. On a Flotilla socket each is a copy between the caller's bytes and a shared ring,
// with no system call unless the call has to block.
// The interposed names must be the plain ones (sendfile and sendfile64, fcntl and fcntl64 are
// each defined here), not what _FILE_OFFSET_BITS=64 would redirect them to.
#undef _FILE_OFFSET_BITS
#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "sockets/preload/calls.hpp"
#include "sockets/preload/interfaces.hpp"
#include "sockets/preload/files.hpp"
#include "sockets/preload/real_calls.hpp"

namespace flotilla::preload {

namespace {

// Where a transfer is in the caller's iovec array.
struct Cursor {
  const iovec* vectors;
  int count;
  int index = 0;
  std::size_t offset = 0;

  bool done() const { return index >= count; }
  std::span<std::byte> current() const {
    auto* base = static_cast<std::byte*>(vectors[index].iov_base);
    return {base + offset, vectors[index].iov_len - offset};
  }
  void advance(std::size_t bytes) {
    offset += bytes;
    while (index < count && offset >= vectors[index].iov_len) {
      offset = 0;
      ++index;
    }
  }
};

std::size_t total_of(const iovec* vectors, int count) {
  std::size_t total = 0;
  for (int i = 0; i < count; ++i) total += vectors[i].iov_len;
  return total;
}

// The socket is connected, or the caller must wait (or fail) until it is. 0: go on.
int ensure_connected(Lock& lock, Socket& socket, bool nonblocking, int timeout_ms) {
  Runtime& runtime = Runtime::get();
  if (!Runtime::get().owns(socket)) return fail_with(EBADF);
  if (runtime.gone(socket)) return fail_with(ENETDOWN);
  for (;;) {
    if (socket.state == Socket::State::connected) return 0;
    if (socket.state != Socket::State::connecting) return fail_with(ENOTCONN);
    if (runtime.tcp().connected(socket.id)) {
      socket.state = Socket::State::connected;
      return 0;
    }
    if (const int error = runtime.socket_error(socket); error != 0) return 0;  // the call reports it
    if (nonblocking) return fail_with(EAGAIN);
    const int waited = wait_for(lock, socket, POLLOUT, timeout_ms);
    if (waited < 0) return -1;
    if (waited == 0) return fail_with(EAGAIN);
  }
}

ssize_t receive(int fd, const iovec* vectors, int count, int flags, Origin& origin) {
  if (count < 0) return fail_with(EINVAL);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  Runtime& runtime = Runtime::get();
  runtime.counters().io_calls->add();
  if (socket->udp()) {
    return receive_datagram(lock, *socket, vectors, count, flags, origin);
  }
  if ((flags & ~(MSG_DONTWAIT | MSG_WAITALL | MSG_NOSIGNAL | MSG_CMSG_CLOEXEC | MSG_PEEK)) != 0) {
    return fail_with(EOPNOTSUPP);  // MSG_OOB, MSG_TRUNC...: the rings cannot do them
  }
  const bool peek = (flags & MSG_PEEK) != 0;
  if (origin.length != nullptr) *origin.length = 0;  // a stream has no source address per read
  if (origin.message_flags != nullptr) *origin.message_flags = 0;
  const bool nonblocking = socket->nonblocking || (flags & MSG_DONTWAIT) != 0;
  if (socket->state == Socket::State::listening || socket->state == Socket::State::fresh) return fail_with(ENOTCONN);
  if (ensure_connected(lock, *socket, nonblocking, socket->receive_timeout_ms) != 0) return -1;
  if (socket->read_shut) return 0;
  const std::size_t total = total_of(vectors, count);
  if (total == 0) return 0;
  Progress progress{deadline_after(socket->receive_timeout_ms)};
  Cursor cursor{vectors, count};
  std::size_t done = 0;
  for (;;) {
    if (runtime.gone(*socket)) return done > 0 ? static_cast<ssize_t>(done) : fail_with(ENETDOWN);
    bool end = false;
    while (!cursor.done()) {
      const std::span<std::byte> space = cursor.current();
      auto received = peek ? runtime.tcp().peek(socket->id, space, done) : runtime.tcp().recv(socket->id, space);
      if (!received) {
        if (received.error().code == Errc::would_block) break;
        if (done > 0) return static_cast<ssize_t>(done);
        runtime.counters().errors->add();
        return fail_with(errno_of(received.error(), ECONNRESET));
      }
      if (received.value() == 0) {
        end = true;
        break;
      }
      done += received.value();
      cursor.advance(received.value());
      if (received.value() < space.size()) break;
    }
    const bool want_more = (flags & MSG_WAITALL) != 0 && done < total && !nonblocking;
    if (end || (done > 0 && !want_more) || cursor.done()) {
      if (!progress.slept) runtime.counters().io_no_syscall->add();
      return static_cast<ssize_t>(done);
    }
    if (const ssize_t next = when_stuck(lock, *socket, progress, POLLIN, nonblocking, done); next != kRetry) return next;
  }
}

ssize_t transmit(int fd, const iovec* vectors, int count, int flags, const sockaddr* to = nullptr,
                 socklen_t to_length = 0) {
  if (count < 0) return fail_with(EINVAL);
  auto [lock, socket] = enter(fd);
  if (socket == nullptr) return -1;
  Runtime& runtime = Runtime::get();
  runtime.counters().io_calls->add();
  if (socket->udp()) return send_datagram(lock, *socket, vectors, count, flags, to, to_length);
  if ((flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE | MSG_WAITALL | MSG_EOR)) != 0) return fail_with(EOPNOTSUPP);
  const bool nonblocking = socket->nonblocking || (flags & MSG_DONTWAIT) != 0;
  if (socket->state == Socket::State::listening || socket->state == Socket::State::fresh) {
    maybe_sigpipe(EPIPE, flags);  // Linux: a stream socket that is not connected cannot send
    return fail_with(EPIPE);
  }
  if (ensure_connected(lock, *socket, nonblocking, socket->send_timeout_ms) != 0) return -1;
  if (socket->write_shut) {
    maybe_sigpipe(EPIPE, flags);
    return fail_with(EPIPE);
  }
  const std::size_t total = total_of(vectors, count);
  Progress progress{deadline_after(socket->send_timeout_ms)};
  Cursor cursor{vectors, count};
  cursor.advance(0);
  std::size_t done = 0;
  for (;;) {
    if (runtime.gone(*socket)) return done > 0 ? static_cast<ssize_t>(done) : fail_with(ENETDOWN);
    while (!cursor.done()) {
      const std::span<std::byte> bytes = cursor.current();
      auto sent = runtime.tcp().send(socket->id, bytes);
      if (!sent) {
        if (sent.error().code == Errc::would_block) break;
        if (done > 0) return static_cast<ssize_t>(done);
        const int error = errno_of(sent.error(), EPIPE);
        runtime.counters().errors->add();
        maybe_sigpipe(error, flags);
        return fail_with(error);
      }
      done += sent.value();
      cursor.advance(sent.value());
      if (sent.value() < bytes.size()) break;
    }
    if (done == total || (nonblocking && done > 0)) {
      if (!progress.slept) runtime.counters().io_no_syscall->add();
      return static_cast<ssize_t>(done);
    }
    if (const ssize_t next = when_stuck(lock, *socket, progress, POLLOUT, nonblocking, done); next != kRetry) return next;
  }
}

ssize_t receive_one(int fd, void* buffer, std::size_t length, int flags, Origin origin = {}) {
  const iovec vector{buffer, length};
  return receive(fd, &vector, 1, flags, origin);
}

// The control messages Linux would add to a datagram's receive, in its order: IPV6_PKTINFO (an
// AF_INET6 socket's, naming the IPv4-mapped destination) and IP_PKTINFO when asked for. What finds
// too little room is left out with MSG_CTRUNC, as Linux does.
void write_control(msghdr& message, const Origin& origin) {
  const std::size_t room = message.msg_control != nullptr ? message.msg_controllen : 0;
  message.msg_controllen = 0;
  const int index = Runtime::get().interface_index();
  const auto add = [&](int level, int type, const void* data, std::size_t size) {
    if (room - message.msg_controllen < CMSG_SPACE(size)) {
      message.msg_flags |= MSG_CTRUNC;
      return;
    }
    auto* header = reinterpret_cast<cmsghdr*>(static_cast<char*>(message.msg_control) + message.msg_controllen);
    header->cmsg_level = level;
    header->cmsg_type = type;
    header->cmsg_len = CMSG_LEN(size);
    std::memcpy(CMSG_DATA(header), data, size);
    message.msg_controllen += CMSG_SPACE(size);
  };
  if (origin.packet_info6) {
    in6_pktinfo info{};
    info.ipi6_ifindex = static_cast<unsigned>(index);
    info.ipi6_addr.s6_addr[10] = 0xff;
    info.ipi6_addr.s6_addr[11] = 0xff;
    const std::uint32_t destination = htonl(origin.destination);
    std::memcpy(&info.ipi6_addr.s6_addr[12], &destination, sizeof(destination));
    add(IPPROTO_IPV6, IPV6_PKTINFO, &info, sizeof(info));
  }
  if (origin.packet_info) {
    in_pktinfo info{};
    info.ipi_ifindex = index;
    info.ipi_spec_dst.s_addr = htonl(origin.destination);
    info.ipi_addr.s_addr = htonl(origin.destination);
    add(IPPROTO_IP, IP_PKTINFO, &info, sizeof(info));
  }
}

// Linux's check of a datagram send's control messages: what Flotilla can honour (IP_PKTINFO with
// the stack's own source, IP_TOS and IP_TTL as hints) passes; anything else fails as Linux fails
// an unknown one.
int check_control(const msghdr& message) {
  if (message.msg_controllen == 0) return 0;
  if (message.msg_control == nullptr) return fail_with(EFAULT);
  for (const cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(const_cast<msghdr*>(&message), const_cast<cmsghdr*>(header))) {
    if (header->cmsg_len < sizeof(cmsghdr) ||
        header->cmsg_len > message.msg_controllen - (reinterpret_cast<const char*>(header) -
                                                     static_cast<const char*>(message.msg_control))) {
      return fail_with(EINVAL);
    }
    if (header->cmsg_level == IPPROTO_IPV6) {
      // A dual-stack socket's: its own source (IPV6_PKTINFO) and hints, as for IPv4.
      const bool fits = header->cmsg_type == IPV6_PKTINFO ? header->cmsg_len == CMSG_LEN(sizeof(in6_pktinfo))
                        : header->cmsg_type == IPV6_TCLASS || header->cmsg_type == IPV6_HOPLIMIT
                            ? header->cmsg_len == CMSG_LEN(sizeof(int))
                            : false;
      if (!fits) return fail_with(EINVAL);
      continue;
    }
    if (header->cmsg_level != IPPROTO_IP) return fail_with(EINVAL);
    switch (header->cmsg_type) {
      case IP_PKTINFO:
        if (header->cmsg_len != CMSG_LEN(sizeof(in_pktinfo))) return fail_with(EINVAL);
        break;
      case IP_TOS:
      case IP_TTL:
        if (header->cmsg_len != CMSG_LEN(sizeof(int)) && header->cmsg_len != CMSG_LEN(1)) return fail_with(EINVAL);
        break;
      default:
        return fail_with(EINVAL);
    }
  }
  return 0;
}

ssize_t transmit_one(int fd, const void* buffer, std::size_t length, int flags, const sockaddr* to = nullptr,
                     socklen_t to_length = 0) {
  const iovec vector{const_cast<void*>(buffer), length};
  return transmit(fd, &vector, 1, flags, to, to_length);
}

// sendfile to a Flotilla socket: the file's bytes are read (pread, one system call per chunk)
// into a buffer and copied into the send ring; only what the ring took counts as sent.
ssize_t send_file(int out_fd, int in_fd, off64_t* offset, std::size_t count) {
  if (is_socket(in_fd)) return fail_with(EINVAL);
  off64_t position = 0;
  if (offset != nullptr) {
    position = *offset;
  } else if ((position = ::lseek64(in_fd, 0, SEEK_CUR)) < 0) {
    return -1;
  }
  thread_local std::vector<std::byte> chunk(std::size_t{1} << 16);
  std::size_t sent = 0;
  bool nonblocking = false;
  {
    auto [lock, socket] = enter(out_fd);
    if (socket == nullptr) return -1;
    nonblocking = socket->nonblocking;
  }
  while (sent < count) {
    const std::size_t want = std::min(count - sent, chunk.size());
    const ssize_t got = ::pread64(in_fd, chunk.data(), want, position + static_cast<off64_t>(sent));
    if (got < 0) {
      if (sent > 0) break;
      return -1;
    }
    if (got == 0) break;
    // Non-blocking: whatever fits; blocking: all of it.
    const ssize_t put = transmit_one(out_fd, chunk.data(), static_cast<std::size_t>(got), MSG_NOSIGNAL);
    if (put < 0) {
      if (sent > 0) break;
      if (errno == EPIPE) maybe_sigpipe(EPIPE, 0);
      return -1;
    }
    sent += static_cast<std::size_t>(put);
    if (put < got || nonblocking) break;
  }
  if (offset != nullptr) {
    *offset = position + static_cast<off64_t>(sent);
  } else if (::lseek64(in_fd, position + static_cast<off64_t>(sent), SEEK_SET) < 0) {
    return -1;
  }
  return static_cast<ssize_t>(sent);
}

// SCM_RIGHTS on a kernel socket (a unix socket between processes). The kernel passes only the
// placeholder eventfd of a Flotilla socket, so the sender adds what the receiver needs to take
// the socket over (Runtime::hand_over_rights: the fork tokens and a record, after the program's
// descriptors), and the receiver takes them off again (Runtime::take_rights).

// Whether one of the descriptors `message` passes is a Flotilla socket.
bool passes_flotilla_socket(const msghdr& message) {
  if (message.msg_control == nullptr || message.msg_controllen < sizeof(cmsghdr)) return false;
  for (const cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(const_cast<msghdr*>(&message), const_cast<cmsghdr*>(header))) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS || header->cmsg_len < CMSG_LEN(0)) continue;
    const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const auto* fds = reinterpret_cast<const int*>(CMSG_DATA(header));
    for (std::size_t i = 0; i < count; ++i) {
      if (is_socket(fds[i])) return true;
    }
  }
  return false;
}

ssize_t send_passing(int fd, const msghdr& message, int flags) {
  std::vector<int> rights;
  const cmsghdr* last = nullptr;
  for (const cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(const_cast<msghdr*>(&message), const_cast<cmsghdr*>(header))) {
    last = header;
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS || header->cmsg_len < CMSG_LEN(0)) continue;
    const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const auto* fds = reinterpret_cast<const int*>(CMSG_DATA(header));
    rights.insert(rights.end(), fds, fds + count);
  }
  Runtime& runtime = Runtime::get();
  Runtime::ExecHandoff handoff;
  std::vector<int> extra;
  {
    Lock lock(runtime.mutex());
    if (!runtime.hand_over_rights(rights, handoff, extra)) return REAL(sendmsg)(fd, &message, flags);
  }
  // The program's control messages, then one more SCM_RIGHTS with the extra descriptors (the
  // kernel gives the receiver every passed descriptor in one array, in order).
  const std::size_t used = static_cast<std::size_t>(reinterpret_cast<const std::byte*>(last) -
                                                    static_cast<const std::byte*>(message.msg_control)) +
                           CMSG_ALIGN(last->cmsg_len);
  const std::size_t extra_bytes = extra.size() * sizeof(int);
  std::vector<std::byte> control(used + CMSG_SPACE(extra_bytes));
  std::memcpy(control.data(), message.msg_control, std::min<std::size_t>(used, message.msg_controllen));
  auto* added = reinterpret_cast<cmsghdr*>(control.data() + used);
  added->cmsg_level = SOL_SOCKET;
  added->cmsg_type = SCM_RIGHTS;
  added->cmsg_len = CMSG_LEN(extra_bytes);
  std::memcpy(CMSG_DATA(added), extra.data(), extra_bytes);
  msghdr passing = message;
  passing.msg_control = control.data();
  passing.msg_controllen = control.size();
  const ssize_t sent = REAL(sendmsg)(fd, &passing, flags);
  const int error = errno;
  {
    Lock lock(runtime.mutex());
    runtime.end_handoff(handoff);
  }
  errno = error;
  return sent;
}

// recvmsg into a control buffer with room for the extra descriptors a Flotilla sender adds; what
// remains once they are taken off is copied to the caller's buffer as the kernel would have
// filled it (what does not fit is closed and MSG_CTRUNC set).
ssize_t receive_passing(int fd, msghdr& message, int flags) {
  // Not thread_local: taking a listener over leases a seat, whose answer comes through here too.
  const std::size_t room = message.msg_controllen + CMSG_SPACE(sizeof(int) * Runtime::kMaxRightsExtra);
  constexpr std::size_t kOnStack = 1024;
  alignas(cmsghdr) std::byte on_stack[kOnStack];
  std::vector<std::byte> on_heap(room > kOnStack ? room : 0);
  msghdr ours = message;
  ours.msg_control = room > kOnStack ? on_heap.data() : on_stack;
  ours.msg_controllen = room;
  const ssize_t got = REAL(recvmsg)(fd, &ours, flags);
  if (got < 0) return got;
  message.msg_namelen = ours.msg_namelen;
  message.msg_flags = ours.msg_flags;
  auto* out = static_cast<std::byte*>(message.msg_control);
  const std::size_t capacity = message.msg_controllen;
  std::size_t filled = 0;
  bool truncated = (ours.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* header = CMSG_FIRSTHDR(&ours); header != nullptr; header = CMSG_NXTHDR(&ours, header)) {
    const std::size_t left = capacity - filled;
    if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS && header->cmsg_len >= CMSG_LEN(0)) {
      const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      auto* fds = reinterpret_cast<int*>(CMSG_DATA(header));
      const std::size_t program = Runtime::get().take_rights({fds, count}, (flags & MSG_PEEK) != 0);
      const std::size_t fit = left < CMSG_LEN(sizeof(int)) ? 0 : std::min(program, (left - CMSG_LEN(0)) / sizeof(int));
      for (std::size_t i = fit; i < program; ++i) REAL(close)(fds[i]);
      truncated = truncated || fit < program;
      if (fit == 0) continue;
      header->cmsg_len = CMSG_LEN(fit * sizeof(int));
      std::memcpy(out + filled, header, header->cmsg_len);
      filled += std::min<std::size_t>(CMSG_SPACE(fit * sizeof(int)), left);
      continue;
    }
    if (header->cmsg_len > left) {
      truncated = true;
      continue;
    }
    std::memcpy(out + filled, header, header->cmsg_len);
    filled += std::min<std::size_t>(CMSG_ALIGN(header->cmsg_len), left);
  }
  message.msg_controllen = filled;
  if (truncated) message.msg_flags |= MSG_CTRUNC;
  return got;
}

}  // namespace

}  // namespace flotilla::preload

using namespace flotilla::preload;

FLOTILLA_EXPORT ssize_t read(int fd, void* buffer, size_t length) {
  if (!is_socket(fd)) return is_file(fd) ? read_file(fd, buffer, length) : REAL(read)(fd, buffer, length);
  return receive_one(fd, buffer, length, 0);
}

FLOTILLA_EXPORT ssize_t __read_chk(int fd, void* buffer, size_t length, size_t buffer_length) {
  if (length > buffer_length) ::abort();  // what glibc's __chk_fail does, less the message
  return read(fd, buffer, length);
}

FLOTILLA_EXPORT ssize_t write(int fd, const void* buffer, size_t length) {
  if (!is_socket(fd)) return is_file(fd) ? write_file(fd, buffer, length) : REAL(write)(fd, buffer, length);
  return transmit_one(fd, buffer, length, 0);
}

FLOTILLA_EXPORT ssize_t readv(int fd, const iovec* vectors, int count) {
  if (!is_socket(fd)) return is_file(fd) ? readv_file(fd, vectors, count) : REAL(readv)(fd, vectors, count);
  Origin origin;
  return receive(fd, vectors, count, 0, origin);
}

FLOTILLA_EXPORT ssize_t writev(int fd, const iovec* vectors, int count) {
  if (!is_socket(fd)) return is_file(fd) ? writev_file(fd, vectors, count) : REAL(writev)(fd, vectors, count);
  return transmit(fd, vectors, count, 0);
}

FLOTILLA_EXPORT ssize_t recv(int fd, void* buffer, size_t length, int flags) {
  if (!is_socket(fd)) {
    if (is_watched_netlink(fd)) return recvfrom(fd, buffer, length, flags, nullptr, nullptr);
    return REAL(recv)(fd, buffer, length, flags);
  }
  return receive_one(fd, buffer, length, flags);
}

FLOTILLA_EXPORT ssize_t __recv_chk(int fd, void* buffer, size_t length, size_t buffer_length, int flags) {
  if (length > buffer_length) ::abort();
  return recv(fd, buffer, length, flags);
}

FLOTILLA_EXPORT ssize_t recvfrom(int fd, void* buffer, size_t length, int flags, sockaddr* address,
                                 socklen_t* address_length) {
  if (!is_socket(fd) && is_watched_netlink(fd)) {
    iovec vector{buffer, length};
    msghdr message{};
    message.msg_name = address;
    message.msg_namelen = address_length != nullptr ? *address_length : 0;
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    const ssize_t got = receive_netlink(fd, &message, flags);
    if (got >= 0 && address_length != nullptr) *address_length = message.msg_namelen;
    return got;
  }
  if (!is_socket(fd)) return REAL(recvfrom)(fd, buffer, length, flags, address, address_length);
  return receive_one(fd, buffer, length, flags, Origin{address, address_length, nullptr});
}

FLOTILLA_EXPORT ssize_t __recvfrom_chk(int fd, void* buffer, size_t length, size_t buffer_length, int flags,
                                       sockaddr* address, socklen_t* address_length) {
  if (length > buffer_length) ::abort();
  return recvfrom(fd, buffer, length, flags, address, address_length);
}

FLOTILLA_EXPORT ssize_t recvmsg(int fd, msghdr* message, int flags) {
  if (!is_socket(fd)) {
    if (is_watched_netlink(fd)) return receive_netlink(fd, message, flags);
    if (message == nullptr || message->msg_control == nullptr || message->msg_controllen == 0) {
      return REAL(recvmsg)(fd, message, flags);
    }
    return receive_passing(fd, *message, flags);
  }
  if (message == nullptr) return fail_with(EFAULT);
  socklen_t name_length = message->msg_name != nullptr ? message->msg_namelen : 0;
  Origin origin{static_cast<sockaddr*>(message->msg_name), &name_length, &message->msg_flags};
  const ssize_t got = receive(fd, message->msg_iov, static_cast<int>(message->msg_iovlen), flags, origin);
  if (got >= 0) {
    message->msg_namelen = message->msg_name != nullptr ? name_length : 0;
    write_control(*message, origin);
  }
  return got;
}

FLOTILLA_EXPORT ssize_t send(int fd, const void* buffer, size_t length, int flags) {
  if (!is_socket(fd)) {
    note_netlink_request(fd, buffer, length);
    return REAL(send)(fd, buffer, length, flags);
  }
  return transmit_one(fd, buffer, length, flags);
}

FLOTILLA_EXPORT ssize_t sendto(int fd, const void* buffer, size_t length, int flags, const sockaddr* address,
                               socklen_t address_length) {
  if (!is_socket(fd)) {
    note_netlink_request(fd, buffer, length);
    return REAL(sendto)(fd, buffer, length, flags, address, address_length);
  }
  return transmit_one(fd, buffer, length, flags, address, address_length);  // TCP ignores it, as Linux does
}

FLOTILLA_EXPORT ssize_t sendmsg(int fd, const msghdr* message, int flags) {
  if (!is_socket(fd)) {
    if (message != nullptr) {
      for (std::size_t i = 0; i < message->msg_iovlen; ++i) {
        note_netlink_request(fd, message->msg_iov[i].iov_base, message->msg_iov[i].iov_len);
      }
    }
    if (message == nullptr || !passes_flotilla_socket(*message)) return REAL(sendmsg)(fd, message, flags);
    return send_passing(fd, *message, flags);
  }
  if (message == nullptr) return fail_with(EFAULT);
  if (check_control(*message) != 0) return -1;
  return transmit(fd, message->msg_iov, static_cast<int>(message->msg_iovlen), flags,
                  static_cast<const sockaddr*>(message->msg_name), message->msg_namelen);
}

// The batch calls are their single calls in a row, as Linux runs them: the first may wait, the rest
// take only what is there, and an error after the first message ends the batch with the count so far.
FLOTILLA_EXPORT int recvmmsg(int fd, mmsghdr* messages, unsigned int count, int flags, timespec* timeout) {
  if (!is_socket(fd)) return REAL(recvmmsg)(fd, messages, count, flags, timeout);
  if (messages == nullptr) return fail_with(EFAULT);
  if (timeout != nullptr && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1'000'000'000)) {
    return fail_with(EINVAL);
  }
  // Linux looks at the timeout only after each datagram, and MSG_WAITFORONE stops waiting after the first.
  const std::uint64_t deadline =
      timeout == nullptr ? 0 : flotilla::monotonic_ns() + static_cast<std::uint64_t>(timeout->tv_sec) * 1'000'000'000 +
                                   static_cast<std::uint64_t>(timeout->tv_nsec);
  int next_flags = flags & ~MSG_WAITFORONE;
  unsigned int done = 0;
  for (; done < count && done < INT32_MAX; ++done) {
    const ssize_t got = recvmsg(fd, &messages[done].msg_hdr, next_flags);
    if (got < 0) {
      if (done > 0) break;
      return -1;
    }
    messages[done].msg_len = static_cast<unsigned int>(got);
    if ((flags & MSG_WAITFORONE) != 0) next_flags |= MSG_DONTWAIT;
    if (timeout != nullptr && flotilla::monotonic_ns() >= deadline) {
      ++done;
      break;
    }
  }
  return static_cast<int>(done);
}

FLOTILLA_EXPORT int sendmmsg(int fd, mmsghdr* messages, unsigned int count, int flags) {
  if (!is_socket(fd)) {
    const bool passing = messages != nullptr && std::any_of(messages, messages + count, [](const mmsghdr& one) {
      return passes_flotilla_socket(one.msg_hdr);
    });
    if (!passing) return REAL(sendmmsg)(fd, messages, count, flags);
    // One at a time, each with its own record, as sendmmsg's partial results allow.
    unsigned int sent = 0;
    for (; sent < count; ++sent) {
      const ssize_t bytes = passes_flotilla_socket(messages[sent].msg_hdr)
                                ? send_passing(fd, messages[sent].msg_hdr, flags)
                                : REAL(sendmsg)(fd, &messages[sent].msg_hdr, flags);
      if (bytes < 0) break;
      messages[sent].msg_len = static_cast<unsigned int>(bytes);
    }
    return sent > 0 ? static_cast<int>(sent) : -1;
  }
  if (messages == nullptr) return fail_with(EFAULT);
  constexpr unsigned int kMostPerCall = 1024;  // UIO_MAXIOV: Linux sends at most this many per call
  unsigned int done = 0;
  for (; done < std::min(count, kMostPerCall); ++done) {
    const ssize_t sent = sendmsg(fd, &messages[done].msg_hdr, flags);
    if (sent < 0) {
      if (done > 0) break;
      return -1;
    }
    messages[done].msg_len = static_cast<unsigned int>(sent);
  }
  return static_cast<int>(done);
}

FLOTILLA_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off64_t* offset, size_t count) {
  if (!is_socket(out_fd) && !is_socket(in_fd)) return REAL(sendfile64)(out_fd, in_fd, offset, count);
  if (!is_socket(out_fd)) return fail_with(EINVAL);
  return send_file(out_fd, in_fd, offset, count);
}

FLOTILLA_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) {
  if (!is_socket(out_fd) && !is_socket(in_fd)) return REAL(sendfile)(out_fd, in_fd, offset, count);
  if (!is_socket(out_fd)) return fail_with(EINVAL);
  off64_t wide = offset != nullptr ? *offset : 0;
  const ssize_t sent = send_file(out_fd, in_fd, offset != nullptr ? &wide : nullptr, count);
  if (offset != nullptr && sent >= 0) *offset = static_cast<off_t>(wide);
  return sent;
}

FLOTILLA_EXPORT ssize_t splice(int in_fd, loff_t* in_offset, int out_fd, loff_t* out_offset, size_t length,
                               unsigned int flags) {
  if (!is_socket(in_fd) && !is_socket(out_fd)) return REAL(splice)(in_fd, in_offset, out_fd, out_offset, length, flags);
  return fail_with(EINVAL);  // no pipe buffers behind a Flotilla socket; callers fall back to read/write
}

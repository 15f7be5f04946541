#include "dataplane/fd_passing.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace flotilla {
namespace {

constexpr std::size_t kControlBytes = CMSG_SPACE(sizeof(int) * kMaxPassedFds);

}  // namespace

Status send_fds(int socket, std::span<const std::byte> payload, std::span<const int> fds) {
  if (payload.empty()) return Error{Errc::invalid_argument, 0, "send_fds: empty payload"};
  if (fds.size() > kMaxPassedFds) return Error{Errc::invalid_argument, 0, "send_fds: too many fds"};

  iovec io{const_cast<std::byte*>(payload.data()), payload.size()};
  alignas(cmsghdr) std::byte control[kControlBytes] = {};
  msghdr message{};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  if (!fds.empty()) {
    message.msg_control = control;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t sent = ::sendmsg(socket, &message, MSG_NOSIGNAL);
    if (sent >= 0) {
      if (static_cast<std::size_t>(sent) != payload.size()) {
        return Error{Errc::truncated, 0, "send_fds: short send"};
      }
      return {};
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) return Error{Errc::closed, errno, "send_fds"};
    return Error::from_errno("send_fds: sendmsg");
  }
}

Result<ReceivedFds> recv_fds(int socket, std::span<std::byte> payload) {
  if (payload.empty()) return Error{Errc::invalid_argument, 0, "recv_fds: empty buffer"};
  iovec io{payload.data(), payload.size()};
  alignas(cmsghdr) std::byte control[kControlBytes] = {};
  msghdr message{};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);

  ssize_t received = -1;
  do {
    received = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  if (received < 0) return Error::from_errno("recv_fds: recvmsg");

  ReceivedFds result;
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
      result.fds.emplace_back(fd);
    }
  }
  if ((message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    return Error{Errc::truncated, 0, "recv_fds: message did not fit"};  // result's fds close here
  }
  if (received == 0 && result.fds.empty()) return Error{Errc::closed, 0, "recv_fds"};
  result.payload_bytes = static_cast<std::size_t>(received);
  return result;
}

}  // namespace flotilla

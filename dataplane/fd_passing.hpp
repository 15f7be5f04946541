// Hands file descriptors (shared regions, eventfds) to another process over a Unix socket with
// SCM_RIGHTS. Control-path only: it allocates and makes system calls.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "dataplane/result.hpp"
#include "dataplane/unique_fd.hpp"

namespace flotilla {

inline constexpr std::size_t kMaxPassedFds = 64;

// Sends `payload` (at least one byte) with `fds` attached, as one message.
Status send_fds(int socket, std::span<const std::byte> payload, std::span<const int> fds);

struct ReceivedFds {
  std::size_t payload_bytes = 0;
  std::vector<UniqueFd> fds;
};

// Receives one message into `payload`. Descriptors arrive close-on-exec. A message whose payload or
// descriptors did not fit is refused with Errc::truncated, and any descriptors that did arrive are
// closed. A peer that hung up gives Errc::closed.
Result<ReceivedFds> recv_fds(int socket, std::span<std::byte> payload);

}  // namespace flotilla

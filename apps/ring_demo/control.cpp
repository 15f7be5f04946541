#include "apps/ring_demo/control.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "dataplane/fd_passing.hpp"

namespace flotilla::ring_demo {

std::string_view role_name(Role role) {
  switch (role) {
    case Role::producer:
      return "producer";
    case Role::consumer:
      return "consumer";
  }
  return "unknown";
}

std::optional<Role> parse_role(std::string_view name) {
  if (name == "producer") return Role::producer;
  if (name == "consumer") return Role::consumer;
  return std::nullopt;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), control_(std::move(other.control_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (running()) kill_and_reap();
    pid_ = std::exchange(other.pid_, -1);
    control_ = std::move(other.control_);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (running()) kill_and_reap();
}

std::optional<int> ChildProcess::poll_exit() {
  if (!running()) return std::nullopt;
  int status = 0;
  pid_t reaped;
  do {
    reaped = ::waitpid(pid_, &status, WNOHANG);
  } while (reaped < 0 && errno == EINTR);
  if (reaped == 0) return std::nullopt;
  pid_ = -1;
  control_.reset();
  if (reaped < 0) return -1;  // not our child any more; treat as gone
  return status;
}

int ChildProcess::kill_and_reap() {
  if (!running()) return -1;
  ::kill(pid_, SIGKILL);
  int status = 0;
  pid_t reaped;
  do {
    reaped = ::waitpid(pid_, &status, 0);
  } while (reaped < 0 && errno == EINTR);
  pid_ = -1;
  control_.reset();
  return reaped < 0 ? -1 : status;
}

namespace {

constexpr int kChildControlFd = 3;

// Everything exec needs, built before fork: the child may only make async-signal-safe calls.
struct ExecArguments {
  std::vector<std::string> strings;
  std::vector<char*> argv;
};

ExecArguments exec_arguments(Role role, int control_fd, std::uint64_t incarnation) {
  ExecArguments args;
  args.strings = {
      "flotilla-ring-demo",       "--role",        std::string(role_name(role)), "--control-fd",
      std::to_string(control_fd), "--incarnation", std::to_string(incarnation)};
  for (auto& s : args.strings) args.argv.push_back(s.data());
  args.argv.push_back(nullptr);
  return args;
}

Status wait_readable(int fd, std::chrono::milliseconds timeout) {
  pollfd entry{fd, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int rc = ::poll(&entry, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
    if (rc > 0) return {};
    if (rc == 0) return Error{Errc::system, ETIMEDOUT, "child did not report ready in time"};
    if (errno != EINTR) return Error::from_errno("poll control socket");
  }
}

}  // namespace

Result<ChildProcess> spawn_child(Role role, std::uint64_t incarnation, std::uint64_t messages,
                                 std::span<const int> fds,
                                 std::chrono::milliseconds ready_timeout) {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) {
    return Error::from_errno("socketpair");
  }
  UniqueFd ours(ends[0]);
  UniqueFd theirs(ends[1]);
  ExecArguments args = exec_arguments(role, kChildControlFd, incarnation);
  const pid_t supervisor = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) return Error::from_errno("fork");
  if (pid == 0) {
    // Child. Die with the supervisor, so a crashed or killed supervisor leaves nothing behind
    // (PDEATHSIG survives exec). If it already died before the prctl, go now.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != supervisor) ::_exit(126);
    // The child starts with stdin/stdout/stderr and its control socket as descriptor 3, nothing
    // else: the supervisor's own descriptors are close-on-exec, and whatever the supervisor itself
    // inherited from its parent is closed here.
    if (theirs.get() == kChildControlFd) {
      if (::fcntl(kChildControlFd, F_SETFD, 0) != 0) ::_exit(126);
    } else if (::dup2(theirs.get(), kChildControlFd) != kChildControlFd) {  // clears CLOEXEC
      ::_exit(126);
    }
    ::close_range(kChildControlFd + 1, ~0u, 0);
    ::execv("/proc/self/exe", args.argv.data());
    ::_exit(127);
  }
  ChildProcess child(pid, std::move(ours));  // from here on, any failure kills and reaps it
  theirs.reset();
  const int control = child.control_fd();

  SetupMessage setup{};
  setup.magic = SetupMessage::kMagic;
  setup.role = role;
  setup.region_count = static_cast<std::uint32_t>(fds.size());
  setup.incarnation = incarnation;
  setup.messages = messages;
  if (auto sent = send_fds(control, std::as_bytes(std::span(&setup, 1)), fds); !sent) {
    return sent.error();
  }
  if (auto ready = wait_readable(control, ready_timeout); !ready) return ready.error();
  ReadyMessage reply{};
  auto received = recv_fds(control, std::as_writable_bytes(std::span(&reply, 1)));
  if (!received) return received.error();
  if (received->payload_bytes != sizeof(reply) || !received->fds.empty() ||
      reply.magic != ReadyMessage::kMagic || reply.incarnation != incarnation || reply.pid != pid) {
    return Error{Errc::bad_layout, 0, "child's ready message"};
  }
  return child;
}

Result<ReceivedSetup> receive_setup(int control_fd, Role role, std::uint64_t incarnation) {
  SetupMessage setup{};
  auto received = recv_fds(control_fd, std::as_writable_bytes(std::span(&setup, 1)));
  if (!received) return received.error();
  const std::uint32_t expected_regions =
      role == Role::producer ? kProducerRegions : kConsumerRegions;
  if (received->payload_bytes != sizeof(setup) || setup.magic != SetupMessage::kMagic ||
      setup.role != role || setup.incarnation != incarnation || setup.messages == 0 ||
      setup.region_count != expected_regions || received->fds.size() != expected_regions) {
    return Error{Errc::bad_layout, 0, "setup message does not match this role"};
  }
  return ReceivedSetup{setup, std::move(received->fds)};
}

Status send_ready(int control_fd, std::uint64_t incarnation) {
  ReadyMessage ready{};
  ready.magic = ReadyMessage::kMagic;
  ready.incarnation = incarnation;
  ready.pid = ::getpid();
  return send_fds(control_fd, std::as_bytes(std::span(&ready, 1)), {});
}

std::string describe_wait_status(int status) {
  if (status < 0) return "unknown status";
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::sigabbrev_np(WTERMSIG(status));
    return std::string("killed by SIG") +
           (name != nullptr ? name : std::to_string(WTERMSIG(status)));
  }
  return "status " + std::to_string(status);
}

}  // namespace flotilla::ring_demo

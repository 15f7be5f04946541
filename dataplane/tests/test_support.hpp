// Helpers shared by the dataplane tests: child processes, and messages that prove their own
// integrity (a sequence number plus a checksum over the rest, so a torn or stale slot shows).
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <functional>

#include "dataplane/hash.hpp"
#include "dataplane/message.hpp"

namespace flotilla::testing {

struct CheckedBody {
  std::uint64_t sequence;
  std::uint64_t words[5];
  std::uint64_t checksum;
};
static_assert(sizeof(CheckedBody) <= Message::kBodyBytes);


inline std::uint64_t checksum_of(const CheckedBody& body) {
  std::uint64_t sum = mix64(body.sequence);
  for (std::uint64_t word : body.words) sum = mix64(sum ^ word);
  return sum;
}

inline Message checked_message(std::uint64_t sequence) {
  CheckedBody body{};
  body.sequence = sequence;
  for (std::uint64_t i = 0; i < 5; ++i) body.words[i] = mix64(sequence * 5 + i + 1);
  body.checksum = checksum_of(body);
  return Message::make(MessageKind::data, body);
}

// True when the message is whole (its checksum matches its contents) and carries `expected`.
inline bool is_checked_message(const Message& message, std::uint64_t expected) {
  if (message.kind != MessageKind::data) return false;
  const auto body = message.read<CheckedBody>();
  return body.sequence == expected && body.checksum == checksum_of(body);
}

// How many times larger the stress tests run: 1 in the unit suite, more in the slow suite
// (FLOTILLA_TEST_SCALE, set by meson for the slow registrations).
inline std::uint64_t test_scale() {
  const char* text = std::getenv("FLOTILLA_TEST_SCALE");
  if (text == nullptr) return 1;
  const unsigned long long scale = std::strtoull(text, nullptr, 10);
  return scale == 0 ? 1 : scale;
}

// Runs `body` in a forked child that exits with body's return value, and dies with the parent.
inline pid_t fork_child(const std::function<int()>& body) {
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(3);
    ::_exit(body());
  }
  return pid;
}

// Waits for a child and returns its exit code, or 128+signal when a signal ended it.
inline int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace flotilla::testing

// How the supervisor starts a child and hands it its regions: fork + exec of this same binary with
// `--role R --control-fd N --incarnation K`, then one SCM_RIGHTS message over a SOCK_SEQPACKET
// socketpair carrying a SetupMessage and exactly the descriptors that role needs. The child answers
// with a ReadyMessage once it has attached everything, so the supervisor knows the new incarnation
// is live (and can time a restart).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "dataplane/result.hpp"
#include "dataplane/unique_fd.hpp"

namespace flotilla::ring_demo {

enum class Role : std::uint32_t { producer = 1, consumer = 2 };

std::string_view role_name(Role role);
std::optional<Role> parse_role(std::string_view name);

// The order regions travel in. The consumer gets the first five; the producer all six, with the
// state store and the supervisor control reopened read-only.
enum RegionIndex : std::uint32_t {
  kChannelRegion = 0,
  kDoorbellRegion,
  kPoolRegion,
  kStatsRegion,
  kStateRegion,
  kControlRegion,
};
inline constexpr std::uint32_t kConsumerRegions = 5;
inline constexpr std::uint32_t kProducerRegions = 6;

struct SetupMessage {
  static constexpr std::uint64_t kMagic = 0x70757465'536f6c46ull;  // "FloSetup"
  std::uint64_t magic;
  Role role;
  std::uint32_t region_count;
  std::uint64_t incarnation;
  std::uint64_t messages;
};

struct ReadyMessage {
  static constexpr std::uint64_t kMagic = 0x79646165'526f6c46ull;  // "FloReady"
  std::uint64_t magic;
  std::uint64_t incarnation;
  std::int64_t pid;
};

// A child the supervisor started. Destroying it kills (SIGKILL) and reaps it if still running.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(pid_t pid, UniqueFd control) : pid_(pid), control_(std::move(control)) {}
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  int control_fd() const { return control_.get(); }

  // Non-blocking: the wait status if the child has exited (it is then reaped), else nothing.
  std::optional<int> poll_exit();
  // Sends SIGKILL and reaps. Returns the wait status.
  int kill_and_reap();

 private:
  pid_t pid_ = -1;
  UniqueFd control_;
};

// Starts `role` as incarnation `incarnation`, hands it `fds`, and waits (at most `ready_timeout`)
// for its ReadyMessage.
Result<ChildProcess> spawn_child(Role role, std::uint64_t incarnation, std::uint64_t messages,
                                 std::span<const int> fds, std::chrono::milliseconds ready_timeout);

// Child side: receives the SetupMessage and descriptors on `control_fd`, after checking they are
// what `role` and `incarnation` (from the command line) say.
struct ReceivedSetup {
  SetupMessage setup;
  std::vector<UniqueFd> fds;
};
Result<ReceivedSetup> receive_setup(int control_fd, Role role, std::uint64_t incarnation);
Status send_ready(int control_fd, std::uint64_t incarnation);

// Describes a wait status: "exit status 3", "killed by SIGKILL".
std::string describe_wait_status(int status);

}  // namespace flotilla::ring_demo

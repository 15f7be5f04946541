// The supervisor: the one trusted process. It creates every shared region and channel, starts each
// component with only the descriptors it needs, pinned to its core, and watches it through a pidfd
// (exits, signals) and its heartbeat (hangs). A component that fails is restarted as a new
// incarnation with the same channels and state store, the buffers it held are reclaimed, and its
// peers are told so that they resend what was outstanding. A component that crashes too often in
// a window is marked failed instead of being restarted in a loop.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/result.hpp"
#include "dataplane/ring.hpp"
#include "dataplane/shared_region.hpp"
#include "components/name/snapshot_stream.hpp"
#include "recovery/config.hpp"
#include "dataplane/control_block.hpp"
#include "recovery/event_log.hpp"

namespace flotilla::recovery {

// idle and leased: external components (application slots) that programs lease.
enum class ComponentStatus { not_started, running, awaiting_restart, failed, stopped, idle, leased };
std::string_view status_name(ComponentStatus status);

// One entry of the name table, as a name server reported it.
struct NameRow {
  std::string name;
  std::string kind;  // direct, indirect, reservation
  ComponentId owner;
  std::uint64_t incarnation;  // of the endpoint (direct entries)
  std::uint32_t endpoint;
  std::uint64_t version;
  std::string members;  // indirect: "name:weight ..."
};

struct FleetStats {
  std::uint64_t registrations = 0;          // acknowledged by the fleet
  std::uint64_t registration_failures = 0;  // refused, timed out, or the server died: retried
  std::uint64_t bad_messages = 0;           // from name servers: malformed, unexpected, or a bad ring
};

// An application slot handed to a program (ComponentHost::lease): its name and the descriptors to
// send it, in the order of control_block.hpp (they stay the supervisor's: send, do not close).
struct Lease {
  std::string name;
  std::vector<int> fds;
};

struct ComponentView {
  std::string name;
  ComponentId id;
  ComponentStatus status;
  std::uint64_t incarnation;
  pid_t pid;
  std::size_t restarts;
};

class Supervisor {
 public:
  // `binary_dir` is where bare component binary names are looked up.
  static Result<std::unique_ptr<Supervisor>> create(SupervisorConfig config,
                                                    const std::string& binary_dir);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Spawns every component.
  Status start();
  // One round of watching: exits, heartbeats, due restarts, control messages. Waits at most
  // `timeout` for something to happen; `extra` descriptors (a control socket, say) are polled
  // too, and their revents filled in, so a caller can serve them from the same wait.
  void poll(std::chrono::milliseconds timeout, std::span<pollfd> extra = {});
  void run_for(std::chrono::milliseconds duration);
  // Kills every component and reaps it.
  void stop();

  Status inject(std::string_view component, Fault fault);

  // Application slots. lease() picks an idle external component for the program `holder` and
  // makes it a new incarnation (its peers are told, as for a restart); Errc::exhausted when all
  // are leased. release() ends the lease (the program's connection closed): another new
  // incarnation, so the peers drop the program's sockets, and its buffers are reclaimed.
  Result<Lease> lease(pid_t holder);
  void release(std::string_view component);

  const EventLog& log() const { return log_; }
  const SupervisorConfig& config() const { return config_; }
  std::optional<ComponentView> component(std::string_view name) const;
  std::vector<ComponentView> components() const;
  // The state-store region of a component (the supervisor keeps it across restarts).
  std::span<std::byte> state_of(std::string_view name) const;
  const CounterBlock* counters_of(std::string_view name) const;
  const NamedCounterTable* named_counters_of(std::string_view name) const;
  BufferPool& pool() { return *pool_; }

  // The name fleet: the components whose binary is flotilla-name-server. The supervisor registers
  // /proc/<component> after every spawn and asks a server for its table here. `server` empty:
  // the lowest-id serving one. Keeps watching (poll) while it waits, up to `timeout`.
  bool has_name_fleet() const;
  Result<std::vector<NameRow>> names(std::string_view server = {},
                                     std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));
  const FleetStats& fleet_stats() const { return fleet_stats_; }
  // Registrations not yet acknowledged.
  std::size_t pending_registrations() const { return registrations_.size(); }

 private:
  struct Slot;
  struct Channel;
  // One name the supervisor registers for a component: /proc/<name> for every component, and for a
  // replica of a group also /net/<group>/<index>, a member of the indirect name /net/<group> that
  // clients look up to pick a replica by load.
  struct Registration {
    std::size_t slot;
    std::uint64_t incarnation;
    name::Change change;
    Slot* server = nullptr;  // in flight to this name server
    std::uint64_t cookie = 0;
    std::uint64_t sent_ns = 0;
  };

  Supervisor(SupervisorConfig config, std::vector<std::string> binaries);
  Status create_regions();
  // Fills the slot's control block for its current incarnation; returns the descriptors it names,
  // in order from kControlFd.
  std::vector<int> grant_descriptors(Slot& slot);
  Status spawn(Slot& slot);
  // Queues (again) every name of the component in `slots_[index]`, at its current incarnation.
  void queue_registrations(std::size_t index);
  void handle_exit(Slot& slot);
  void check_heartbeat(Slot& slot, std::uint64_t now);
  void notify_peers(const Slot& restarted);
  void drain_control(Slot& slot);
  void fleet_member_down(const Slot& dead);
  void fleet_member_up(Slot& joiner);
  void pump_fleet();
  void on_fleet_message(Slot& server, const name::NameMessage& message);
  Slot* serving_name_server(std::string_view name = {});
  Slot* find(std::string_view name);
  const Slot* find(std::string_view name) const;
  std::uint64_t now_ns() const;
  // `at_ns` 0 means now.
  void record(EventKind kind, const Slot& slot, std::string detail, std::uint64_t value = 0,
              std::uint64_t at_ns = 0);

  SupervisorConfig config_;
  std::vector<std::string> binaries_;
  std::uint64_t started_ns_;
  std::optional<SharedRegion> bells_region_;
  DoorbellTable* bells_ = nullptr;
  std::optional<BufferPool> pool_;
  UniqueFd pool_read_only_;  // what components with `pool = "read-only"` get
  std::vector<std::unique_ptr<Channel>> channels_;
  struct DeclaredRegion;
  std::vector<std::unique_ptr<DeclaredRegion>> regions_;
  std::vector<std::unique_ptr<Slot>> slots_;
  EventLog log_;
  bool stopping_ = false;
  std::deque<Registration> registrations_;
  std::uint64_t next_cookie_ = 1;
  FleetStats fleet_stats_;
  Slot* dump_server_ = nullptr;  // a names() dump in progress
  std::unique_ptr<name::SnapshotDecoder> dump_;
};

}  // namespace flotilla::recovery

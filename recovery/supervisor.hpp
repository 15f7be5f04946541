// The supervisor: the one trusted process. It creates every shared region and channel, starts each
// component with only the descriptors it needs, pinned to its core, and watches it through a pidfd
// (exits, signals) and its heartbeat (hangs). A component that fails is restarted as a new
// incarnation with the same channels and state store, the buffers it held are reclaimed, and its
// peers are told so that they resend what was outstanding. A component that crashes too often in
// a window is marked failed instead of being restarted in a loop. That is all it does: registering
// components in the name fleet (registrar.hpp) and leasing external components to programs
// (application_seats.hpp) are parts beside it that observe its events.
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/control_block.hpp"
#include "dataplane/result.hpp"
#include "dataplane/ring.hpp"
#include "dataplane/shared_region.hpp"
#include "recovery/config.hpp"
#include "recovery/event_log.hpp"
#include "recovery/lifecycle_observer.hpp"

namespace flotilla::recovery {

// idle and leased: external components, which programs lease (recovery/application_seats.hpp).
enum class ComponentStatus { not_started, running, awaiting_restart, failed, stopped, idle, leased };
std::string_view status_name(ComponentStatus status);

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

  // Spawns every component the supervisor starts (not the external ones).
  Status start();
  // One round of watching: exits, heartbeats, due restarts, control messages. Waits at most
  // `timeout` for something to happen; `extra` descriptors (a control socket, say) are polled
  // too, and their revents filled in, so a caller can serve them from the same wait.
  void poll(std::chrono::milliseconds timeout, std::span<pollfd> extra = {});
  void run_for(std::chrono::milliseconds duration);
  // Kills every component and reaps it.
  void stop();
  bool stopping() const { return stopping_; }

  Status inject(std::string_view component, Fault fault);

  const EventLog& log() const { return log_; }
  const SupervisorConfig& config() const { return config_; }
  std::optional<ComponentView> component(std::string_view name) const;
  std::vector<ComponentView> components() const;
  // The state-store region of a component (the supervisor keeps it across restarts).
  std::span<std::byte> state_of(std::string_view name) const;
  const CounterBlock* counters_of(std::string_view name) const;
  const NamedCounterTable* named_counters_of(std::string_view name) const;
  BufferPool& pool() { return *pool_; }
  const BufferPool& pool() const { return *pool_; }

  // ---- For the parts beside the lifecycle (recovery/registrar.hpp, application_seats.hpp) ----
  // `observer` hears of every start, exit, stop and unhandled control message from now on; it
  // removes itself before it is destroyed.
  void add_observer(LifecycleObserver& observer);
  void remove_observer(LifecycleObserver& observer);
  // Adds an event about `component` to the log, stamped now.
  void record(EventKind kind, ComponentId component, std::uint64_t incarnation, std::string detail,
              std::uint64_t value = 0);
  // Puts `message` on the component's control ring; false when the ring is full.
  bool send_control(ComponentId component, const Message& message);
  // A channel between the supervisor and `component`, granted to it (from its next incarnation)
  // as kSupervisorChannel with peer kSupervisorId; returns the supervisor's end (side a).
  Result<ChannelEnd> open_supervisor_channel(ComponentId component, std::uint32_t capacity);
  // The eventfd an external component sleeps on: granted to it and to its peers, which write it,
  // and written with every notice on its control ring. The caller keeps it open.
  void set_wake_fd(ComponentId external, int fd);
  // An external component's next incarnation, held by the program `holder` (status leased); its
  // peers are told, as for a restart. Returns the descriptors to hand the holder, in the order of
  // control_block.hpp (they stay the supervisor's: send, do not close).
  std::vector<int> hand_over(ComponentId external, pid_t holder);
  // Ends the holder's incarnation with another new one that nobody holds (status idle): its
  // buffers are reclaimed and its peers told, so they drop what the holder left. Returns how
  // many buffers were reclaimed.
  std::size_t take_back(ComponentId external);

 private:
  struct ManagedComponent;
  struct Channel;
  struct DeclaredRegion;

  Supervisor(SupervisorConfig config, std::vector<std::string> binaries);
  Status create_regions();
  // Fills the component's control block for its current incarnation; returns the descriptors it
  // names, in order from kControlFd.
  std::vector<int> grant_descriptors(ManagedComponent& component);
  Status spawn(ManagedComponent& component);
  void handle_exit(ManagedComponent& component);
  void check_heartbeat(ManagedComponent& component, std::uint64_t now);
  void notify_peers(const ManagedComponent& restarted);
  void drain_control(ManagedComponent& component);
  void record_report(ManagedComponent& component, const ReportNotice& notice);
  ManagedComponent* find(std::string_view name);
  const ManagedComponent* find(std::string_view name) const;
  ManagedComponent& at(ComponentId id) { return *components_[id - 1]; }
  ComponentView view_of(const ManagedComponent& component) const;
  // Calls `event` on every observer with the component's view.
  template <class Event>
  void tell_observers(const ManagedComponent& component, Event event);
  std::uint64_t now_ns() const;
  // `at_ns` 0 means now.
  void record(EventKind kind, const ManagedComponent& component, std::string detail,
              std::uint64_t value = 0, std::uint64_t at_ns = 0);

  SupervisorConfig config_;
  std::vector<std::string> binaries_;
  std::uint64_t started_ns_;
  std::optional<SharedRegion> bells_region_;
  DoorbellTable* bells_ = nullptr;
  std::optional<BufferPool> pool_;
  UniqueFd pool_read_only_;  // what components with `pool = "read-only"` get
  std::vector<std::unique_ptr<Channel>> channels_;
  std::vector<std::unique_ptr<DeclaredRegion>> regions_;
  // Index i holds the component with id i + 1.
  std::vector<std::unique_ptr<ManagedComponent>> components_;
  std::vector<LifecycleObserver*> observers_;
  EventLog log_;
  bool stopping_ = false;
};

}  // namespace flotilla::recovery

#include "recovery/supervisor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <new>

#include "dataplane/channel.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/cpu.hpp"
#include "dataplane/idle_waiter.hpp"

namespace flotilla::recovery {

struct Supervisor::Channel {
  ChannelConfig config;
  SharedRegion region;
  ComponentId a;
  ComponentId b;
};

struct Supervisor::DeclaredRegion {
  RegionConfig config;
  SharedRegion region;
  UniqueFd read_only;  // what readers get: it cannot be mapped writable
};

// What the supervisor keeps of one component across all its incarnations: a component, not a
// process, since it outlives every process it runs as, and an external one is no process of ours.
struct Supervisor::ManagedComponent {
  ComponentConfig config;
  std::string binary;
  ComponentId id;
  SharedRegion control;
  SharedRegion state;
  ControlBlock* block = nullptr;
  RingProducer to_component;
  RingConsumer from_component;
  std::vector<std::size_t> channels;  // indices into channels_
  std::vector<std::pair<std::size_t, bool>> regions;  // indices into regions_, writable
  int wake_fd = -1;  // external components: the eventfd they sleep on (set_wake_fd; not ours)
  SharedRegion supervisor_link;  // open_supervisor_channel
  std::uint32_t supervisor_link_capacity = 0;  // 0: no channel to the supervisor

  ComponentStatus status = ComponentStatus::not_started;
  std::uint64_t incarnation = 0;
  pid_t pid = -1;
  UniqueFd pidfd;
  std::size_t restarts = 0;

  std::uint64_t last_heartbeat = 0;
  std::uint64_t heartbeat_changed_ns = 0;
  bool heartbeat_seen = false;
  bool killed_for_hang = false;

  std::deque<std::uint64_t> recent_crashes_ns;
  std::uint64_t restart_due_ns = 0;
  std::uint64_t detected_ns = 0;  // when the last failure was noticed
  bool awaiting_recovery = false;
  std::uint32_t reports = 0;  // by this incarnation
};

std::string_view status_name(ComponentStatus status) {
  switch (status) {
    case ComponentStatus::not_started: return "not started";
    case ComponentStatus::running: return "running";
    case ComponentStatus::awaiting_restart: return "restarting";
    case ComponentStatus::failed: return "failed";
    case ComponentStatus::stopped: return "stopped";
    case ComponentStatus::idle: return "idle";
    case ComponentStatus::leased: return "leased";
  }
  return "unknown";
}

namespace {

void copy_name(char (&out)[kNameBytes], const std::string& name) {
  std::memset(out, 0, kNameBytes);
  std::memcpy(out, name.data(), std::min<std::size_t>(name.size(), kNameBytes - 1));
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::string signal_text(int signal) {
  const char* name = sigabbrev_np(signal);
  return name != nullptr ? std::string("SIG") + name : "signal " + std::to_string(signal);
}


// In the forked child: put `fds` at 3, 4, ... and close everything else, so the component holds
// exactly what it was given. Runs between fork and exec: no allocation, no locks.
[[noreturn]] void exec_component(const char* binary, char* const* argv, char* const* envp, const int* fds,
                                 std::size_t fd_count, int core) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  sigset_t none;  // the supervisor blocks signals it reads through a signalfd; components must not
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (core >= 0) (void)pin_to_core(core);
  int moved[kMaxGrantedDescriptors];
  if (fd_count > kMaxGrantedDescriptors) ::_exit(126);
  for (std::size_t i = 0; i < fd_count; ++i) {
    // out of the way of the targets
    moved[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, kControlFd + static_cast<int>(kMaxGrantedDescriptors));
    if (moved[i] < 0) ::_exit(126);
  }
  for (std::size_t i = 0; i < fd_count; ++i) {
    if (::dup2(moved[i], kControlFd + static_cast<int>(i)) < 0) ::_exit(126);
  }
  ::close_range(static_cast<unsigned>(kControlFd + fd_count), ~0u, 0);
  ::execve(binary, argv, envp);
  ::_exit(127);
}

// Every seat holds about ten descriptors here (its channels, regions, control block and wake
// eventfd), so 128 seats pass the usual soft limit of 1024; the hard limit is ours to take.
Status raise_descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return Error::from_errno("getrlimit(RLIMIT_NOFILE)");
  if (limit.rlim_cur == limit.rlim_max) return {};
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return Error::from_errno("setrlimit(RLIMIT_NOFILE)");
  return {};
}

}  // namespace

Result<std::unique_ptr<Supervisor>> Supervisor::create(SupervisorConfig config,
                                                       const std::string& binary_dir) {
  if (auto raised = raise_descriptor_limit(); !raised) return raised.error();
  std::vector<std::string> binaries;
  for (const auto& component : config.components) {
    if (component.external) {
      binaries.emplace_back();
      continue;
    }
    std::string path = component.binary.find('/') == std::string::npos
                           ? binary_dir + "/" + component.binary
                           : component.binary;
    if (::access(path.c_str(), X_OK) != 0) return Error::from_errno("component binary");
    binaries.push_back(std::move(path));
  }
  std::unique_ptr<Supervisor> supervisor(new Supervisor(std::move(config), std::move(binaries)));
  if (auto status = supervisor->create_regions(); !status) return status.error();
  return supervisor;
}

Supervisor::Supervisor(SupervisorConfig config, std::vector<std::string> binaries)
    : config_(std::move(config)), binaries_(std::move(binaries)), started_ns_(monotonic_ns()) {}

Supervisor::~Supervisor() { stop(); }

std::uint64_t Supervisor::now_ns() const { return monotonic_ns() - started_ns_; }

void Supervisor::record(EventKind kind, const ManagedComponent& component, std::string detail, std::uint64_t value,
                        std::uint64_t at_ns) {
  log_.add(Event{at_ns != 0 ? at_ns : now_ns(), kind, component.config.name, component.incarnation,
                 std::move(detail), value});
}

Status Supervisor::create_regions() {
  auto bells = SharedRegion::create("flotilla-doorbells", sizeof(DoorbellTable));
  if (!bells) return bells.error();
  bells_region_.emplace(std::move(bells.value()));
  bells_ = new (bells_region_->data()) DoorbellTable{};

  auto pool = BufferPool::create(1, config_.buffer_size, config_.pool_buffers);
  if (!pool) return pool.error();
  pool_.emplace(std::move(pool.value()));
  auto pool_read_only = pool_->region().reopen_read_only();
  if (!pool_read_only) return pool_read_only.error();
  pool_read_only_ = std::move(pool_read_only.value());

  for (std::size_t i = 0; i < config_.components.size(); ++i) {
    auto component = std::make_unique<ManagedComponent>();
    component->config = config_.components[i];
    component->binary = binaries_[i];
    component->id = static_cast<ComponentId>(i + 1);
    auto control = SharedRegion::create("flotilla-control-" + component->config.name,
                                        ControlBlock::region_bytes());
    if (!control) return control.error();
    component->control = std::move(control.value());
    auto state = SharedRegion::create("flotilla-state-" + component->config.name, component->config.state_bytes);
    if (!state) return state.error();
    component->state = std::move(state.value());
    component->block = new (component->control.data()) ControlBlock{};
    component->block->magic = ControlBlock::kMagic;
    component->block->version = ControlBlock::kVersion;
    component->block->id = component->id;
    copy_name(component->block->name, component->config.name);
    auto rings = component->control.bytes().subspan(ControlBlock::rings_offset());
    const auto to_component = rings.subspan(0, ControlBlock::ring_bytes());
    const auto from_component = rings.subspan(ControlBlock::ring_bytes(), ControlBlock::ring_bytes());
    if (auto s = format_ring(to_component, kControlRingCapacity); !s) return s;
    if (auto s = format_ring(from_component, kControlRingCapacity); !s) return s;
    auto producer = RingProducer::attach(to_component, 1, &bells_->bells[component->id], nullptr);
    auto consumer = RingConsumer::attach(from_component, 1, nullptr);
    if (!producer) return producer.error();
    if (!consumer) return consumer.error();
    component->to_component = producer.value();
    component->from_component = consumer.value();
    component->block->wake_fd = -1;
    if (component->config.external) component->status = ComponentStatus::idle;
    components_.push_back(std::move(component));
  }

  for (const auto& config : config_.channels) {
    const ManagedComponent* a = find(config.a);
    const ManagedComponent* b = find(config.b);
    if (a == nullptr || b == nullptr) return Error{Errc::invalid_argument, 0, "a channel names no component"};
    // An application seat's channel costs its ring headers until a program leases the seat.
    const auto faults = a->config.external || b->config.external ? SharedRegion::Faults::on_use
                                                                 : SharedRegion::Faults::at_map;
    auto region = SharedRegion::create("flotilla-channel-" + config.name, channel_bytes(config.capacity), faults);
    if (!region) return region.error();
    if (auto s = format_channel(region->bytes(), config.capacity); !s) return s;
    auto channel = std::make_unique<Channel>(Channel{config, std::move(region.value()), a->id, b->id});
    at(channel->a).channels.push_back(channels_.size());
    at(channel->b).channels.push_back(channels_.size());
    channels_.push_back(std::move(channel));
  }

  for (const auto& config : config_.regions) {
    auto region = SharedRegion::create("flotilla-region-" + config.name, config.bytes);
    if (!region) return region.error();
    auto read_only = region->reopen_read_only();
    if (!read_only) return read_only.error();
    const std::size_t index = regions_.size();
    regions_.push_back(std::make_unique<DeclaredRegion>(
        DeclaredRegion{config, std::move(region.value()), std::move(read_only.value())}));
    for (auto& component : components_) {
      for (const auto& name : config.writers) {
        if (name == component->config.name) component->regions.emplace_back(index, true);
      }
      for (const auto& name : config.readers) {
        if (name == component->config.name) component->regions.emplace_back(index, false);
      }
    }
  }
  return {};
}

Status Supervisor::start() {
  for (auto& component : components_) {
    if (component->status != ComponentStatus::not_started) continue;  // external ones are idle
    if (auto status = spawn(*component); !status) return status;
  }
  return {};
}

std::vector<int> Supervisor::grant_descriptors(ManagedComponent& component) {
  ControlBlock& block = *component.block;
  block.incarnation = component.incarnation;
  block.fault_request.store(static_cast<std::uint32_t>(Fault::none), std::memory_order_release);
  block.channel_count = static_cast<std::uint32_t>(component.channels.size());

  std::vector<int> fds;
  const auto next_number = [&fds] { return kControlFd + static_cast<int>(fds.size()); };
  fds.push_back(component.control.fd());
  fds.push_back(bells_region_->fd());
  fds.push_back(component.state.fd());
  fds.push_back(component.config.pool_writable ? pool_->region().fd() : pool_read_only_.get());
  block.pool_writable = component.config.pool_writable ? 1 : 0;
  std::vector<std::pair<ChannelGrant*, int>> peer_wakes;
  for (std::size_t i = 0; i < component.channels.size(); ++i) {
    const Channel& channel = *channels_[component.channels[i]];
    const bool side_a = channel.a == component.id;
    const ManagedComponent& peer = at(side_a ? channel.b : channel.a);
    ChannelGrant& grant = block.channels[i];
    copy_name(grant.name, channel.config.name);
    grant.capacity = channel.config.capacity;
    grant.side = side_a ? ChannelSideCode::a : ChannelSideCode::b;
    grant.peer = peer.id;
    grant.fd = next_number();
    grant.peer_wake_fd = -1;
    grant.peer_idle = peer.status == ComponentStatus::idle ? 1 : 0;
    fds.push_back(channel.region.fd());
    if (peer.wake_fd >= 0) peer_wakes.emplace_back(&grant, peer.wake_fd);
  }
  if (component.supervisor_link_capacity != 0) {
    ChannelGrant& grant = block.channels[component.channels.size()];
    copy_name(grant.name, kSupervisorChannel);
    grant.capacity = component.supervisor_link_capacity;
    grant.side = ChannelSideCode::b;
    grant.peer = kSupervisorId;
    grant.fd = next_number();
    grant.peer_wake_fd = -1;
    grant.peer_idle = 0;
    fds.push_back(component.supervisor_link.fd());
    block.channel_count = static_cast<std::uint32_t>(component.channels.size() + 1);
  }
  block.region_count = static_cast<std::uint32_t>(component.regions.size());
  for (std::size_t i = 0; i < component.regions.size(); ++i) {
    const auto [index, writable] = component.regions[i];
    const DeclaredRegion& declared = *regions_[index];
    RegionGrant& grant = block.regions[i];
    copy_name(grant.name, declared.config.name);
    grant.bytes = declared.region.size();
    grant.writable = writable ? 1 : 0;
    grant.fd = next_number();
    fds.push_back(writable ? declared.region.fd() : declared.read_only.get());
  }
  for (auto [grant, wake] : peer_wakes) {
    grant->peer_wake_fd = next_number();
    fds.push_back(wake);
  }
  block.wake_fd = -1;
  if (component.wake_fd >= 0) {
    block.wake_fd = next_number();
    fds.push_back(component.wake_fd);
  }
  return fds;
}

Status Supervisor::spawn(ManagedComponent& component) {
  ++component.incarnation;
  component.reports = 0;
  const std::vector<int> fds = grant_descriptors(component);

  // argv is built before fork: the child must not allocate.
  std::vector<std::string> words{component.binary};
  words.insert(words.end(), component.config.args.begin(), component.config.args.end());
  std::vector<char*> argv;
  for (auto& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  // The supervisor's environment, with the wait policy its configuration chose for this one.
  const std::string wait_prefix = std::string(kWaitPolicyVariable) + "=";
  std::string wait_setting = wait_prefix + component.config.wait;
  std::vector<char*> envp;
  for (char** variable = environ; *variable != nullptr; ++variable) {
    if (std::strncmp(*variable, wait_prefix.c_str(), wait_prefix.size()) != 0) envp.push_back(*variable);
  }
  if (!component.config.wait.empty()) envp.push_back(wait_setting.data());
  envp.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) return Error::from_errno("fork");
  if (pid == 0) {
    exec_component(component.binary.c_str(), argv.data(), envp.data(), fds.data(), fds.size(), component.config.core);
  }

  component.pid = pid;
  component.pidfd.reset(pidfd_open(pid));
  if (!component.pidfd.valid()) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return Error::from_errno("pidfd_open");
  }
  component.status = ComponentStatus::running;
  component.heartbeat_seen = false;
  component.killed_for_hang = false;
  component.last_heartbeat = component.block->counters.read(Counter::heartbeat);
  component.heartbeat_changed_ns = now_ns();
  record(component.incarnation == 1 ? EventKind::start : EventKind::restart, component,
         "pid " + std::to_string(pid) + (component.config.core >= 0 ? ", core " + std::to_string(component.config.core) : ""));
  tell_observers(component, &LifecycleObserver::started);
  return {};
}

void Supervisor::handle_exit(ManagedComponent& component) {
  siginfo_t info{};
  if (::waitid(P_PIDFD, static_cast<id_t>(component.pidfd.get()), &info, WEXITED | WNOHANG) != 0 ||
      info.si_pid == 0) {
    return;  // not gone yet
  }
  component.pidfd.reset();
  component.pid = -1;
  const std::uint64_t now = now_ns();
  const bool clean_exit = info.si_code == CLD_EXITED && info.si_status == 0;
  std::string how = info.si_code == CLD_EXITED ? "exit code " + std::to_string(info.si_status)
                                               : signal_text(info.si_status);
  if (component.killed_for_hang) how += " (killed after hang)";
  record(EventKind::exit, component, how, static_cast<std::uint64_t>(info.si_status), now);
  if (!component.killed_for_hang) component.detected_ns = now;

  tell_observers(component, &LifecycleObserver::exited);

  const std::size_t reclaimed = pool_->reclaim(component.id);
  record(EventKind::reclaimed, component, std::to_string(reclaimed) + " buffers", reclaimed);

  if (stopping_ || clean_exit) {
    component.status = ComponentStatus::stopped;
    return;
  }
  const auto window_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(config_.restart.window).count());
  component.recent_crashes_ns.push_back(now);
  while (!component.recent_crashes_ns.empty() && now - component.recent_crashes_ns.front() > window_ns) {
    component.recent_crashes_ns.pop_front();
  }
  if (component.recent_crashes_ns.size() >= config_.restart.crash_limit) {
    component.status = ComponentStatus::failed;
    // No next incarnation will take back what this one parked.
    (void)pool_->reclaim(parked_owner(component.id));
    record(EventKind::failed, component,
           std::to_string(component.recent_crashes_ns.size()) + " crashes within " +
               std::to_string(config_.restart.window.count()) + " ms; not restarting");
    return;
  }
  // The first restart is immediate; each further crash in the window doubles the delay.
  std::uint64_t backoff_ns = 0;
  if (component.recent_crashes_ns.size() > 1) {
    const std::uint64_t max_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(config_.restart.max_backoff).count());
    const std::size_t doublings = std::min<std::size_t>(component.recent_crashes_ns.size() - 2, 40);
    backoff_ns = std::min<std::uint64_t>(1'000'000ull << doublings, max_ns);
  }
  component.restart_due_ns = now + backoff_ns;
  component.status = ComponentStatus::awaiting_restart;
}

void Supervisor::check_heartbeat(ManagedComponent& component, std::uint64_t now) {
  const std::uint64_t beat = component.block->counters.read(Counter::heartbeat);
  if (beat != component.last_heartbeat) {
    component.last_heartbeat = beat;
    component.heartbeat_changed_ns = now;
    component.heartbeat_seen = true;
    return;
  }
  if (component.killed_for_hang) return;
  const auto limit = component.heartbeat_seen ? config_.heartbeat_timeout : config_.startup_grace;
  const auto limit_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count());
  if (now - component.heartbeat_changed_ns <= limit_ns) return;
  component.killed_for_hang = true;
  component.detected_ns = now;
  record(EventKind::hang_detected, component,
         "no heartbeat for " + std::to_string((now - component.heartbeat_changed_ns) / 1'000'000) + " ms",
         0, now);
  ::kill(component.pid, SIGKILL);
}

void Supervisor::notify_peers(const ManagedComponent& restarted) {
  const std::uint32_t idle = restarted.status == ComponentStatus::idle ? 1 : 0;
  const Message notice = Message::make(MessageKind::peer_restarted,
                                       PeerRestartedNotice{restarted.id, idle, restarted.incarnation});
  for (std::size_t index : restarted.channels) {
    const Channel& channel = *channels_[index];
    ManagedComponent& peer = at(channel.a == restarted.id ? channel.b : channel.a);
    // A peer whose control ring is full is not reading it; it will learn from the ring header.
    (void)peer.to_component.send_burst(std::span(&notice, 1));
  }
}

void Supervisor::record_report(ManagedComponent& component, const ReportNotice& notice) {
  ++component.reports;
  if (component.reports > kMaxReportsPerIncarnation + 1) return;
  if (component.reports == kMaxReportsPerIncarnation + 1) {
    record(EventKind::reported, component, "further reports of this incarnation are dropped");
    return;
  }
  // Untrusted text: up to its first NUL, anything unprintable shown as '?'.
  std::string text;
  for (char c : notice.text) {
    if (c == '\0') break;
    text.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  record(EventKind::reported, component, text);
}

void Supervisor::drain_control(ManagedComponent& component) {
  Message messages[kControlRingCapacity];
  auto received = component.from_component.recv_burst(messages);
  if (!received) return;
  for (std::size_t i = 0; i < received.value(); ++i) {
    if (messages[i].kind == kReportKind) {
      record_report(component, messages[i].read<ReportNotice>());
      continue;
    }
    if (messages[i].kind != kRecoveredKind) {
      for (LifecycleObserver* observer : observers_) observer->control_message(view_of(component), messages[i]);
      continue;
    }
    const auto notice = messages[i].read<RecoveredNotice>();
    if (!component.awaiting_recovery || notice.incarnation != component.incarnation) continue;
    component.awaiting_recovery = false;
    // Served-at comes from the component; trust it only when it falls between detection and now.
    std::uint64_t at = now_ns();
    if (notice.served_at_ns > started_ns_ && notice.served_at_ns - started_ns_ >= component.detected_ns &&
        notice.served_at_ns - started_ns_ <= at) {
      at = notice.served_at_ns - started_ns_;
    }
    const std::uint64_t took = at - component.detected_ns;
    char detail[64];
    std::snprintf(detail, sizeof(detail), "%.3f ms after the failure was detected",
                  static_cast<double>(took) / 1e6);
    record(EventKind::recovered, component, detail, took, at);
  }
}

void Supervisor::poll(std::chrono::milliseconds timeout, std::span<pollfd> extra) {
  std::vector<pollfd> watched(extra.begin(), extra.end());
  std::vector<ManagedComponent*> owners;
  for (auto& component : components_) {
    if (component->status == ComponentStatus::running && component->pidfd.valid()) {
      watched.push_back(pollfd{component->pidfd.get(), POLLIN, 0});
      owners.push_back(component.get());
    }
  }
  // Wake often enough to see a heartbeat stop well within its limit, and in time for restarts.
  std::int64_t wait_ms = std::min<std::chrono::milliseconds>(timeout, config_.heartbeat_timeout / 5).count();
  const std::uint64_t before = now_ns();
  for (const auto& component : components_) {
    if (component->status != ComponentStatus::awaiting_restart) continue;
    const std::uint64_t due = component->restart_due_ns > before ? component->restart_due_ns - before : 0;
    wait_ms = std::min<std::int64_t>(wait_ms, static_cast<std::int64_t>((due + 999'999) / 1'000'000));
  }
  const int ready = ::poll(watched.data(), watched.size(), static_cast<int>(std::max<std::int64_t>(wait_ms, 0)));
  for (std::size_t i = 0; i < extra.size(); ++i) extra[i].revents = ready > 0 ? watched[i].revents : 0;
  if (ready > 0) {
    for (std::size_t i = extra.size(); i < watched.size(); ++i) {
      if ((watched[i].revents & (POLLIN | POLLHUP)) != 0) handle_exit(*owners[i - extra.size()]);
    }
  }
  const std::uint64_t now = now_ns();
  for (auto& component : components_) {
    if (component->status == ComponentStatus::running) check_heartbeat(*component, now);
    if (component->status == ComponentStatus::awaiting_restart && now >= component->restart_due_ns) {
      ++component->restarts;
      if (auto status = spawn(*component); status) {
        component->awaiting_recovery = true;
        notify_peers(*component);
      } else {
        component->status = ComponentStatus::failed;
        record(EventKind::failed, *component, "restart failed: " + status.error().message());
      }
    }
    drain_control(*component);
  }
  for (LifecycleObserver* observer : observers_) observer->polled();
}

void Supervisor::run_for(std::chrono::milliseconds duration) {
  const auto until = MonoClock::now() + duration;
  while (MonoClock::now() < until) {
    poll(std::chrono::duration_cast<std::chrono::milliseconds>(until - MonoClock::now()) +
         std::chrono::milliseconds(1));
  }
}

void Supervisor::stop() {
  stopping_ = true;
  // An external component's pid is a program run with `flotilla run`, not a child of ours: it is
  // not killed (its lease connection closes with us, and its sockets then fail with ENETDOWN).
  const auto ours = [](const ManagedComponent& component) { return component.pid > 0 && !component.config.external; };
  for (auto& component : components_) {
    if (ours(*component)) ::kill(component->pid, SIGKILL);
  }
  for (auto& component : components_) {
    if (ours(*component)) {
      ::waitpid(component->pid, nullptr, 0);
      component->pid = -1;
      component->pidfd.reset();
      pool_->reclaim(component->id);
      record(EventKind::stopped, *component, "");
    }
    tell_observers(*component, &LifecycleObserver::stopped);
    component->pid = -1;
    if (component->status != ComponentStatus::failed) component->status = ComponentStatus::stopped;
  }
}

std::vector<int> Supervisor::hand_over(ComponentId external, pid_t holder) {
  ManagedComponent& component = at(external);
  ++component.incarnation;
  std::vector<int> fds = grant_descriptors(component);
  component.status = ComponentStatus::leased;
  component.pid = holder;
  notify_peers(component);
  return fds;
}

std::size_t Supervisor::take_back(ComponentId external) {
  ManagedComponent& component = at(external);
  ++component.incarnation;
  component.block->incarnation = component.incarnation;
  component.status = ComponentStatus::idle;
  component.pid = -1;
  const std::size_t reclaimed = pool_->reclaim(component.id);
  notify_peers(component);
  return reclaimed;
}

Status Supervisor::inject(std::string_view name, Fault fault) {
  ManagedComponent* component = find(name);
  if (component == nullptr) return Error{Errc::invalid_argument, 0, "no such component"};
  if (component->config.external) {
    return Error{Errc::invalid_argument, 0, "an external component: faults go to the stack's own components"};
  }
  if (component->status != ComponentStatus::running) {
    return Error{Errc::invalid_argument, 0, "component is not running"};
  }
  component->block->fault_request.store(static_cast<std::uint32_t>(fault), std::memory_order_release);
  record(EventKind::fault_injected, *component, std::string(fault_name(fault)));
  // Wake it if it sleeps, so the fault happens now rather than at its next timeout.
  Doorbell& bell = bells_->bells[component->id];
  bell.sequence.fetch_add(1, std::memory_order_release);
  futex_wake_one(bell.sequence);
  return {};
}

void Supervisor::add_observer(LifecycleObserver& observer) { observers_.push_back(&observer); }

void Supervisor::remove_observer(LifecycleObserver& observer) { std::erase(observers_, &observer); }

template <class Event>
void Supervisor::tell_observers(const ManagedComponent& component, Event event) {
  if (observers_.empty()) return;
  const ComponentView view = view_of(component);
  for (LifecycleObserver* observer : observers_) (observer->*event)(view);
}

void Supervisor::record(EventKind kind, ComponentId component, std::uint64_t incarnation, std::string detail,
                        std::uint64_t value) {
  log_.add(Event{now_ns(), kind, at(component).config.name, incarnation, std::move(detail), value});
}

bool Supervisor::send_control(ComponentId component, const Message& message) {
  auto sent = at(component).to_component.send_burst(std::span(&message, 1));
  return sent && sent.value() == 1;
}

Result<ChannelEnd> Supervisor::open_supervisor_channel(ComponentId id, std::uint32_t capacity) {
  ManagedComponent& component = at(id);
  if (component.channels.size() >= kMaxChannelsPerComponent) {
    return Error{Errc::invalid_argument, 0, "the component has no channel left for the supervisor"};
  }
  auto link = SharedRegion::create("flotilla-channel-supervisor-" + component.config.name, channel_bytes(capacity));
  if (!link) return link.error();
  component.supervisor_link = std::move(link.value());
  const auto bytes = component.supervisor_link.bytes();
  if (auto s = format_channel(bytes, capacity); !s) return s.error();
  auto end = attach_channel(bytes, capacity, ChannelSide::a, 1, &bells_->bells[id], nullptr);
  if (!end) return end.error();
  component.supervisor_link_capacity = capacity;
  return end;
}

void Supervisor::set_wake_fd(ComponentId external, int fd) {
  ManagedComponent& component = at(external);
  component.wake_fd = fd;
  // A program asleep in its own poll learns of peer restarts too.
  component.to_component.set_consumer_wake_fd(fd);
}

Supervisor::ManagedComponent* Supervisor::find(std::string_view name) {
  for (auto& component : components_) {
    if (component->config.name == name) return component.get();
  }
  return nullptr;
}

const Supervisor::ManagedComponent* Supervisor::find(std::string_view name) const {
  for (const auto& component : components_) {
    if (component->config.name == name) return component.get();
  }
  return nullptr;
}

ComponentView Supervisor::view_of(const ManagedComponent& component) const {
  return ComponentView{component.config.name, component.id, component.status, component.incarnation,
                       component.pid, component.restarts};
}

std::optional<ComponentView> Supervisor::component(std::string_view name) const {
  const ManagedComponent* component = find(name);
  if (component == nullptr) return std::nullopt;
  return view_of(*component);
}

std::vector<ComponentView> Supervisor::components() const {
  std::vector<ComponentView> views;
  for (const auto& component : components_) views.push_back(view_of(*component));
  return views;
}

std::span<std::byte> Supervisor::state_of(std::string_view name) const {
  const ManagedComponent* component = find(name);
  return component == nullptr ? std::span<std::byte>() : component->state.bytes();
}

const CounterBlock* Supervisor::counters_of(std::string_view name) const {
  const ManagedComponent* component = find(name);
  return component == nullptr ? nullptr : &component->block->counters;
}

const NamedCounterTable* Supervisor::named_counters_of(std::string_view name) const {
  const ManagedComponent* component = find(name);
  return component == nullptr ? nullptr : &component->block->named_counters;
}

}  // namespace flotilla::recovery

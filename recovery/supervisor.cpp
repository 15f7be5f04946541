#include "recovery/supervisor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "dataplane/channel.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/cpu.hpp"
#include "recovery/supervisor_slots.hpp"

namespace flotilla::recovery {

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

using namespace supervisor_detail;

namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::string signal_text(int signal) {
  const char* name = sigabbrev_np(signal);
  return name != nullptr ? std::string("SIG") + name : "signal " + std::to_string(signal);
}


// In the forked child: put `fds` at 3, 4, ... and close everything else, so the component holds
// exactly what it was given. Runs between fork and exec: no allocation, no locks.
[[noreturn]] void exec_component(const char* binary, char* const* argv, const int* fds,
                                 std::size_t fd_count, int core) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  sigset_t none;  // the supervisor blocks signals it reads through a signalfd; components must not
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (core >= 0) (void)pin_to_core(core);
  int moved[kMaxGrantedDescriptors];
  if (fd_count > kMaxGrantedDescriptors) ::_exit(126);
  for (std::size_t i = 0; i < fd_count; ++i) {
    moved[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 64);  // out of the way of the targets
    if (moved[i] < 0) ::_exit(126);
  }
  for (std::size_t i = 0; i < fd_count; ++i) {
    if (::dup2(moved[i], kControlFd + static_cast<int>(i)) < 0) ::_exit(126);
  }
  ::close_range(static_cast<unsigned>(kControlFd + fd_count), ~0u, 0);
  ::execv(binary, argv);
  ::_exit(127);
}

}  // namespace

Result<std::unique_ptr<Supervisor>> Supervisor::create(SupervisorConfig config,
                                                       const std::string& binary_dir) {
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

void Supervisor::record(EventKind kind, const Slot& slot, std::string detail, std::uint64_t value,
                        std::uint64_t at_ns) {
  log_.add(Event{at_ns != 0 ? at_ns : now_ns(), kind, slot.config.name, slot.incarnation,
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
    auto slot = std::make_unique<Slot>();
    slot->config = config_.components[i];
    slot->binary = binaries_[i];
    slot->id = static_cast<ComponentId>(i + 1);
    auto control = SharedRegion::create("flotilla-control-" + slot->config.name,
                                        ControlBlock::region_bytes());
    if (!control) return control.error();
    slot->control = std::move(control.value());
    auto state = SharedRegion::create("flotilla-state-" + slot->config.name, slot->config.state_bytes);
    if (!state) return state.error();
    slot->state = std::move(state.value());
    slot->block = new (slot->control.data()) ControlBlock{};
    slot->block->magic = ControlBlock::kMagic;
    slot->block->version = ControlBlock::kVersion;
    slot->block->id = slot->id;
    copy_name(slot->block->name, slot->config.name);
    auto rings = slot->control.bytes().subspan(ControlBlock::rings_offset());
    const auto to_component = rings.subspan(0, ControlBlock::ring_bytes());
    const auto from_component = rings.subspan(ControlBlock::ring_bytes(), ControlBlock::ring_bytes());
    if (auto s = format_ring(to_component, kControlRingCapacity); !s) return s;
    if (auto s = format_ring(from_component, kControlRingCapacity); !s) return s;
    auto producer = RingProducer::attach(to_component, 1, &bells_->bells[slot->id], nullptr);
    auto consumer = RingConsumer::attach(from_component, 1, nullptr);
    if (!producer) return producer.error();
    if (!consumer) return consumer.error();
    slot->to_component = producer.value();
    slot->from_component = consumer.value();
    slot->block->wake_fd = -1;
    if (slot->config.external) {
      slot->status = ComponentStatus::idle;
      slot->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!slot->wake.valid()) return Error::from_errno("eventfd");
      // A program asleep in its own poll learns of peer restarts too.
      slot->to_component.set_consumer_wake_fd(slot->wake.get());
    }
    if (is_name_server_binary(slot->binary)) {
      slot->name_server = true;
      auto link = SharedRegion::create("flotilla-channel-supervisor-" + slot->config.name,
                                       channel_bytes(kFleetLinkCapacity));
      if (!link) return link.error();
      slot->fleet_region = std::move(link.value());
      if (auto s = format_channel(slot->fleet_region.bytes(), kFleetLinkCapacity); !s) return s;
      auto end = attach_channel(slot->fleet_region.bytes(), kFleetLinkCapacity, ChannelSide::a, 1,
                                &bells_->bells[slot->id], nullptr);
      if (!end) return end.error();
      slot->fleet_link = name::NameChannel::wrap(end.value());
    }
    slots_.push_back(std::move(slot));
  }

  for (const auto& config : config_.channels) {
    auto region = SharedRegion::create("flotilla-channel-" + config.name, channel_bytes(config.capacity));
    if (!region) return region.error();
    if (auto s = format_channel(region->bytes(), config.capacity); !s) return s;
    const auto index_of = [&](const std::string& name) {
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (slots_[i]->config.name == name) return i;
      }
      return slots_.size();  // the config parser has already refused unknown names
    };
    auto channel = std::make_unique<Channel>(
        Channel{config, std::move(region.value()), index_of(config.a), index_of(config.b)});
    slots_[channel->a]->channels.push_back(channels_.size());
    slots_[channel->b]->channels.push_back(channels_.size());
    channels_.push_back(std::move(channel));
  }
  for (const auto& slot : slots_) {
    if (slot->name_server && slot->channels.size() >= kMaxChannelsPerComponent) {
      return Error{Errc::invalid_argument, 0, "a name server has no channel left for the supervisor"};
    }
  }

  for (const auto& config : config_.regions) {
    auto region = SharedRegion::create("flotilla-region-" + config.name, config.bytes);
    if (!region) return region.error();
    auto read_only = region->reopen_read_only();
    if (!read_only) return read_only.error();
    const std::size_t index = regions_.size();
    regions_.push_back(std::make_unique<DeclaredRegion>(
        DeclaredRegion{config, std::move(region.value()), std::move(read_only.value())}));
    for (auto& slot : slots_) {
      for (const auto& name : config.writers) {
        if (name == slot->config.name) slot->regions.emplace_back(index, true);
      }
      for (const auto& name : config.readers) {
        if (name == slot->config.name) slot->regions.emplace_back(index, false);
      }
    }
  }
  return {};
}

Status Supervisor::start() {
  for (auto& slot : slots_) {
    if (slot->status != ComponentStatus::not_started) continue;  // external slots are idle
    if (auto status = spawn(*slot); !status) return status;
  }
  return {};
}

std::vector<int> Supervisor::grant_descriptors(Slot& slot) {
  ControlBlock& block = *slot.block;
  block.incarnation = slot.incarnation;
  block.fault_request.store(static_cast<std::uint32_t>(Fault::none), std::memory_order_release);
  block.channel_count = static_cast<std::uint32_t>(slot.channels.size());

  std::vector<int> fds;
  const auto next_number = [&fds] { return kControlFd + static_cast<int>(fds.size()); };
  fds.push_back(slot.control.fd());
  fds.push_back(bells_region_->fd());
  fds.push_back(slot.state.fd());
  fds.push_back(slot.config.pool_writable ? pool_->region().fd() : pool_read_only_.get());
  block.pool_writable = slot.config.pool_writable ? 1 : 0;
  std::vector<std::pair<ChannelGrant*, int>> peer_wakes;
  for (std::size_t i = 0; i < slot.channels.size(); ++i) {
    const Channel& channel = *channels_[slot.channels[i]];
    const bool side_a = slots_[channel.a].get() == &slot;
    const Slot& peer = *slots_[side_a ? channel.b : channel.a];
    ChannelGrant& grant = block.channels[i];
    copy_name(grant.name, channel.config.name);
    grant.capacity = channel.config.capacity;
    grant.side = side_a ? ChannelSideCode::a : ChannelSideCode::b;
    grant.peer = peer.id;
    grant.fd = next_number();
    grant.peer_wake_fd = -1;
    fds.push_back(channel.region.fd());
    if (peer.wake.valid()) peer_wakes.emplace_back(&grant, peer.wake.get());
  }
  if (slot.name_server) {
    ChannelGrant& grant = block.channels[slot.channels.size()];
    copy_name(grant.name, kSupervisorChannel);
    grant.capacity = kFleetLinkCapacity;
    grant.side = ChannelSideCode::b;
    grant.peer = kSupervisorId;
    grant.fd = next_number();
    grant.peer_wake_fd = -1;
    fds.push_back(slot.fleet_region.fd());
    block.channel_count = static_cast<std::uint32_t>(slot.channels.size() + 1);
  }
  block.region_count = static_cast<std::uint32_t>(slot.regions.size());
  for (std::size_t i = 0; i < slot.regions.size(); ++i) {
    const auto [index, writable] = slot.regions[i];
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
  if (slot.wake.valid()) {
    block.wake_fd = next_number();
    fds.push_back(slot.wake.get());
  }
  return fds;
}

Status Supervisor::spawn(Slot& slot) {
  ++slot.incarnation;
  const std::vector<int> fds = grant_descriptors(slot);

  // argv is built before fork: the child must not allocate.
  std::vector<std::string> words{slot.binary};
  words.insert(words.end(), slot.config.args.begin(), slot.config.args.end());
  std::vector<char*> argv;
  for (auto& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) return Error::from_errno("fork");
  if (pid == 0) exec_component(slot.binary.c_str(), argv.data(), fds.data(), fds.size(), slot.config.core);

  slot.pid = pid;
  slot.pidfd.reset(pidfd_open(pid));
  if (!slot.pidfd.valid()) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return Error::from_errno("pidfd_open");
  }
  slot.status = ComponentStatus::running;
  slot.heartbeat_seen = false;
  slot.killed_for_hang = false;
  slot.last_heartbeat = slot.block->counters.read(Counter::heartbeat);
  slot.heartbeat_changed_ns = now_ns();
  record(slot.incarnation == 1 ? EventKind::start : EventKind::restart, slot,
         "pid " + std::to_string(pid) + (slot.config.core >= 0 ? ", core " + std::to_string(slot.config.core) : ""));
  // A founder serves from the start; a restarted name server once it reports fleet_joined.
  slot.fleet_ready = slot.name_server && slot.incarnation == 1;
  slot.fleet_alone = false;
  slot.fleet_donor = kNoComponent;
  if (slot.name_server && slot.incarnation > 1) fleet_member_up(slot);
  if (has_name_fleet()) {
    queue_registrations(static_cast<std::size_t>(slot.id - 1));
  }
  return {};
}

void Supervisor::handle_exit(Slot& slot) {
  siginfo_t info{};
  if (::waitid(P_PIDFD, static_cast<id_t>(slot.pidfd.get()), &info, WEXITED | WNOHANG) != 0 ||
      info.si_pid == 0) {
    return;  // not gone yet
  }
  slot.pidfd.reset();
  slot.pid = -1;
  const std::uint64_t now = now_ns();
  const bool clean_exit = info.si_code == CLD_EXITED && info.si_status == 0;
  std::string how = info.si_code == CLD_EXITED ? "exit code " + std::to_string(info.si_status)
                                               : signal_text(info.si_status);
  if (slot.killed_for_hang) how += " (killed after hang)";
  record(EventKind::exit, slot, how, static_cast<std::uint64_t>(info.si_status), now);
  if (!slot.killed_for_hang) slot.detected_ns = now;

  if (slot.name_server) {
    slot.fleet_ready = false;
    if (!stopping_) fleet_member_down(slot);
    for (Registration& registration : registrations_) {
      if (registration.server == &slot) registration.server = nullptr;  // resend elsewhere
    }
    if (dump_server_ == &slot) dump_server_ = nullptr;
  }

  const std::size_t reclaimed = pool_->reclaim(slot.id);
  record(EventKind::reclaimed, slot, std::to_string(reclaimed) + " buffers", reclaimed);

  if (stopping_ || clean_exit) {
    slot.status = ComponentStatus::stopped;
    return;
  }
  const auto window_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(config_.restart.window).count());
  slot.recent_crashes_ns.push_back(now);
  while (!slot.recent_crashes_ns.empty() && now - slot.recent_crashes_ns.front() > window_ns) {
    slot.recent_crashes_ns.pop_front();
  }
  if (slot.recent_crashes_ns.size() >= config_.restart.crash_limit) {
    slot.status = ComponentStatus::failed;
    // No next incarnation will take back what this one parked.
    (void)pool_->reclaim(parked_owner(slot.id));
    record(EventKind::failed, slot,
           std::to_string(slot.recent_crashes_ns.size()) + " crashes within " +
               std::to_string(config_.restart.window.count()) + " ms; not restarting");
    return;
  }
  // The first restart is immediate; each further crash in the window doubles the delay.
  std::uint64_t backoff_ns = 0;
  if (slot.recent_crashes_ns.size() > 1) {
    const std::uint64_t max_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(config_.restart.max_backoff).count());
    const std::size_t doublings = std::min<std::size_t>(slot.recent_crashes_ns.size() - 2, 40);
    backoff_ns = std::min<std::uint64_t>(1'000'000ull << doublings, max_ns);
  }
  slot.restart_due_ns = now + backoff_ns;
  slot.status = ComponentStatus::awaiting_restart;
}

void Supervisor::check_heartbeat(Slot& slot, std::uint64_t now) {
  const std::uint64_t beat = slot.block->counters.read(Counter::heartbeat);
  if (beat != slot.last_heartbeat) {
    slot.last_heartbeat = beat;
    slot.heartbeat_changed_ns = now;
    slot.heartbeat_seen = true;
    return;
  }
  if (slot.killed_for_hang) return;
  const auto limit = slot.heartbeat_seen ? config_.heartbeat_timeout : config_.startup_grace;
  const auto limit_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count());
  if (now - slot.heartbeat_changed_ns <= limit_ns) return;
  slot.killed_for_hang = true;
  slot.detected_ns = now;
  record(EventKind::hang_detected, slot,
         "no heartbeat for " + std::to_string((now - slot.heartbeat_changed_ns) / 1'000'000) + " ms",
         0, now);
  ::kill(slot.pid, SIGKILL);
}

void Supervisor::notify_peers(const Slot& restarted) {
  const Message notice = Message::make(MessageKind::peer_restarted,
                                       PeerRestartedNotice{restarted.id, 0, restarted.incarnation});
  for (std::size_t index : restarted.channels) {
    const Channel& channel = *channels_[index];
    Slot& peer = *slots_[slots_[channel.a].get() == &restarted ? channel.b : channel.a];
    // A peer whose control ring is full is not reading it; it will learn from the ring header.
    (void)peer.to_component.send_burst(std::span(&notice, 1));
  }
}

void Supervisor::drain_control(Slot& slot) {
  Message messages[kControlRingCapacity];
  auto received = slot.from_component.recv_burst(messages);
  if (!received) return;
  for (std::size_t i = 0; i < received.value(); ++i) {
    if (messages[i].kind == kFleetJoinedKind) {
      const auto notice = messages[i].read<FleetNotice>();
      if (!slot.name_server || notice.member != slot.id || notice.incarnation != slot.incarnation) {
        ++fleet_stats_.bad_messages;
        continue;
      }
      if (!slot.fleet_ready) {
        slot.fleet_ready = true;
        slot.fleet_alone = false;
        record(EventKind::joined, slot, "serving");
      }
      continue;
    }
    if (messages[i].kind != kRecoveredKind) continue;
    const auto notice = messages[i].read<RecoveredNotice>();
    if (!slot.awaiting_recovery || notice.incarnation != slot.incarnation) continue;
    slot.awaiting_recovery = false;
    // Served-at comes from the component; trust it only when it falls between detection and now.
    std::uint64_t at = now_ns();
    if (notice.served_at_ns > started_ns_ && notice.served_at_ns - started_ns_ >= slot.detected_ns &&
        notice.served_at_ns - started_ns_ <= at) {
      at = notice.served_at_ns - started_ns_;
    }
    const std::uint64_t took = at - slot.detected_ns;
    char detail[64];
    std::snprintf(detail, sizeof(detail), "%.3f ms after the failure was detected",
                  static_cast<double>(took) / 1e6);
    record(EventKind::recovered, slot, detail, took, at);
  }
}

void Supervisor::poll(std::chrono::milliseconds timeout, std::span<pollfd> extra) {
  std::vector<pollfd> watched(extra.begin(), extra.end());
  std::vector<Slot*> owners;
  for (auto& slot : slots_) {
    if (slot->status == ComponentStatus::running && slot->pidfd.valid()) {
      watched.push_back(pollfd{slot->pidfd.get(), POLLIN, 0});
      owners.push_back(slot.get());
    }
  }
  // Wake often enough to see a heartbeat stop well within its limit, and in time for restarts.
  std::int64_t wait_ms = std::min<std::chrono::milliseconds>(timeout, config_.heartbeat_timeout / 5).count();
  const std::uint64_t before = now_ns();
  for (const auto& slot : slots_) {
    if (slot->status != ComponentStatus::awaiting_restart) continue;
    const std::uint64_t due = slot->restart_due_ns > before ? slot->restart_due_ns - before : 0;
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
  for (auto& slot : slots_) {
    if (slot->status == ComponentStatus::running) check_heartbeat(*slot, now);
    if (slot->status == ComponentStatus::awaiting_restart && now >= slot->restart_due_ns) {
      ++slot->restarts;
      if (auto status = spawn(*slot); status) {
        slot->awaiting_recovery = true;
        notify_peers(*slot);
      } else {
        slot->status = ComponentStatus::failed;
        record(EventKind::failed, *slot, "restart failed: " + status.error().message());
      }
    }
    drain_control(*slot);
  }
  pump_fleet();
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
  // A leased slot's pid is a program run with `flotilla run`, not a child of ours: it is not
  // killed (its lease connection closes with us, and its sockets then fail with ENETDOWN).
  const auto ours = [](const Slot& slot) { return slot.pid > 0 && !slot.config.external; };
  for (auto& slot : slots_) {
    if (ours(*slot)) ::kill(slot->pid, SIGKILL);
  }
  for (auto& slot : slots_) {
    if (slot->config.external && slot->pid > 0) {
      slot->pid = -1;
      record(EventKind::released, *slot, "the stack stops");
    }
    if (ours(*slot)) {
      ::waitpid(slot->pid, nullptr, 0);
      slot->pid = -1;
      slot->pidfd.reset();
      pool_->reclaim(slot->id);
      record(EventKind::stopped, *slot, "");
    }
    if (slot->status != ComponentStatus::failed) slot->status = ComponentStatus::stopped;
  }
}

Result<Lease> Supervisor::lease(pid_t holder) {
  for (auto& owned : slots_) {
    Slot& slot = *owned;
    if (!slot.config.external || slot.status != ComponentStatus::idle) continue;
    // A new incarnation: the peers drop whatever the previous holder left behind.
    ++slot.incarnation;
    Lease lease{slot.config.name, grant_descriptors(slot)};
    slot.status = ComponentStatus::leased;
    slot.pid = holder;
    record(EventKind::leased, slot, "pid " + std::to_string(holder));
    notify_peers(slot);
    return lease;
  }
  return Error{Errc::exhausted, 0, "no free application slot (all are leased)"};
}

void Supervisor::release(std::string_view component) {
  Slot* slot = find(component);
  if (slot == nullptr || slot->status != ComponentStatus::leased) return;
  ++slot->incarnation;
  slot->block->incarnation = slot->incarnation;
  slot->status = ComponentStatus::idle;
  record(EventKind::released, *slot, "pid " + std::to_string(slot->pid));
  slot->pid = -1;
  const std::size_t reclaimed = pool_->reclaim(slot->id);
  if (reclaimed != 0) record(EventKind::reclaimed, *slot, std::to_string(reclaimed) + " buffers", reclaimed);
  notify_peers(*slot);
}

Status Supervisor::inject(std::string_view component, Fault fault) {
  Slot* slot = find(component);
  if (slot == nullptr) return Error{Errc::invalid_argument, 0, "no such component"};
  if (slot->config.external) {
    return Error{Errc::invalid_argument, 0, "an application slot: faults go to the stack's own components"};
  }
  if (slot->status != ComponentStatus::running) {
    return Error{Errc::invalid_argument, 0, "component is not running"};
  }
  slot->block->fault_request.store(static_cast<std::uint32_t>(fault), std::memory_order_release);
  record(EventKind::fault_injected, *slot, std::string(fault_name(fault)));
  // Wake it if it sleeps, so the fault happens now rather than at its next timeout.
  Doorbell& bell = bells_->bells[slot->id];
  bell.sequence.fetch_add(1, std::memory_order_release);
  futex_wake_one(bell.sequence);
  return {};
}

Supervisor::Slot* Supervisor::find(std::string_view name) {
  for (auto& slot : slots_) {
    if (slot->config.name == name) return slot.get();
  }
  return nullptr;
}

const Supervisor::Slot* Supervisor::find(std::string_view name) const {
  for (const auto& slot : slots_) {
    if (slot->config.name == name) return slot.get();
  }
  return nullptr;
}

// ---- The name fleet ----

std::optional<ComponentView> Supervisor::component(std::string_view name) const {
  const Slot* slot = find(name);
  if (slot == nullptr) return std::nullopt;
  return ComponentView{slot->config.name, slot->id, slot->status, slot->incarnation, slot->pid,
                       slot->restarts};
}

std::vector<ComponentView> Supervisor::components() const {
  std::vector<ComponentView> views;
  for (const auto& slot : slots_) views.push_back(*component(slot->config.name));
  return views;
}

std::span<std::byte> Supervisor::state_of(std::string_view name) const {
  const Slot* slot = find(name);
  return slot == nullptr ? std::span<std::byte>() : slot->state.bytes();
}

const CounterBlock* Supervisor::counters_of(std::string_view name) const {
  const Slot* slot = find(name);
  return slot == nullptr ? nullptr : &slot->block->counters;
}

const NamedCounterTable* Supervisor::named_counters_of(std::string_view name) const {
  const Slot* slot = find(name);
  return slot == nullptr ? nullptr : &slot->block->named_counters;
}

}  // namespace flotilla::recovery

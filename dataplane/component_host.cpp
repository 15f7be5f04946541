#include "dataplane/component_host.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "dataplane/clock.hpp"
#include "dataplane/crash.hpp"
#include "dataplane/fd_passing.hpp"
#include "dataplane/control_address.hpp"

namespace flotilla {
namespace {

// Takes over a descriptor the supervisor placed at `fd`, keeping its number. Close-on-exec, so
// nothing this component might start inherits it.
Result<UniqueFd> take_inherited(int fd) {
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return Error::from_errno("not started by the Flotilla supervisor (its descriptors are missing); "
                             "components run under 'flotilla up'");
  }
  return UniqueFd(fd);
}

}  // namespace

Result<std::unique_ptr<ComponentHost>> ComponentHost::attach(WaitPolicy policy) {
  Result<WaitPolicy> chosen = configured_wait_policy(policy, std::getenv(kWaitPolicyVariable));
  if (!chosen) return chosen.error();
  return attach_descriptors(chosen.value(), take_inherited);
}

Result<std::unique_ptr<ComponentHost>> ComponentHost::attach_descriptors(
    WaitPolicy policy, const std::function<Result<UniqueFd>(int)>& descriptor) {
  const auto attach_fd = [&](int fd, SharedRegion::Access access = SharedRegion::Access::read_write,
                              SharedRegion::Faults faults = SharedRegion::Faults::at_map) -> Result<SharedRegion> {
    auto taken = descriptor(fd);
    if (!taken) return taken.error();
    return SharedRegion::attach(std::move(taken.value()), access, faults);
  };
  std::unique_ptr<ComponentHost> host(new ComponentHost());
  auto control = attach_fd(kControlFd);
  if (!control) return control.error();
  host->control_ = std::move(control.value());
  if (host->control_.size() < ControlBlock::region_bytes()) {
    return Error{Errc::bad_layout, 0, "control region too small"};
  }
  host->block_ = reinterpret_cast<ControlBlock*>(host->control_.data());
  ControlBlock& block = *host->block_;
  if (block.magic != ControlBlock::kMagic || block.version != ControlBlock::kVersion ||
      block.id == kNoComponent || block.id >= kMaxComponents ||
      block.channel_count > kMaxChannelsPerComponent) {
    return Error{Errc::bad_layout, 0, "control block"};
  }
  block.name[kNameBytes - 1] = '\0';
  host->incarnation_ = block.incarnation;
  // A first incarnation has nothing to recover from.
  host->recovery_reported_ = host->incarnation_ <= 1;

  auto bells = attach_fd(kBellsFd);
  if (!bells) return bells.error();
  host->bells_region_ = std::move(bells.value());
  if (host->bells_region_.size() < sizeof(DoorbellTable)) {
    return Error{Errc::bad_layout, 0, "doorbell region too small"};
  }
  auto* table = reinterpret_cast<DoorbellTable*>(host->bells_region_.data());

  auto state = attach_fd(kStateFd);
  if (!state) return state.error();
  host->state_ = std::move(state.value());

  const auto pool_access = block.pool_writable != 0 ? SharedRegion::Access::read_write
                                                    : SharedRegion::Access::read_only;
  auto pool_region = attach_fd(kPoolFd, pool_access);
  if (!pool_region) return pool_region.error();
  auto pool = BufferPool::attach(std::move(pool_region.value()));
  if (!pool) return pool.error();
  host->pool_.emplace(std::move(pool.value()));
  host->pool_->set_counters(&block.counters);

  for (std::uint32_t i = 0; i < block.channel_count; ++i) {
    block.channels[i].name[kNameBytes - 1] = '\0';
    const ChannelGrant grant = block.channels[i];
    if (grant.peer == kNoComponent || grant.peer >= kMaxComponents) {
      return Error{Errc::bad_layout, 0, "channel grant names no peer"};
    }
    // A channel to an application seat (a peer woken through an eventfd) is touched once a
    // program holds the seat, not before.
    auto region = attach_fd(grant.fd, SharedRegion::Access::read_write,
                            grant.peer_wake_fd >= 0 ? SharedRegion::Faults::on_use : SharedRegion::Faults::at_map);
    if (!region) return region.error();
    const auto side = grant.side == ChannelSideCode::a ? ChannelSide::a : ChannelSide::b;
    auto end = attach_channel(region->bytes(), grant.capacity, side, host->incarnation_,
                              &table->bells[grant.peer], &block.counters);
    if (!end) return end.error();
    if (grant.peer_wake_fd >= 0) {
      auto wake = descriptor(grant.peer_wake_fd);
      if (!wake) return wake.error();
      end->out.set_consumer_wake_fd(wake->get());
      host->peer_wake_fds_.push_back(std::move(wake.value()));
    }
    host->channel_regions_.push_back(std::move(region.value()));
    host->channels_.push_back(end.value());
  }

  if (block.region_count > kMaxRegionsPerComponent) {
    return Error{Errc::bad_layout, 0, "control block: too many regions"};
  }
  for (std::uint32_t i = 0; i < block.region_count; ++i) {
    RegionGrant& grant = block.regions[i];
    grant.name[kNameBytes - 1] = '\0';
    const auto access = grant.writable != 0 ? SharedRegion::Access::read_write
                                            : SharedRegion::Access::read_only;
    auto region = attach_fd(grant.fd, access);
    if (!region) return region.error();
    host->regions_.push_back(std::move(region.value()));
  }

  if (block.wake_fd >= 0) {
    auto wake = descriptor(block.wake_fd);
    if (!wake) return wake.error();
    host->wake_ = std::move(wake.value());
  }

  auto rings = host->control_.bytes().subspan(ControlBlock::rings_offset());
  auto in = RingConsumer::attach(rings.subspan(0, ControlBlock::ring_bytes()), host->incarnation_,
                                 &block.counters);
  auto out = RingProducer::attach(rings.subspan(ControlBlock::ring_bytes(), ControlBlock::ring_bytes()),
                                  host->incarnation_, nullptr, &block.counters);
  if (!in) return in.error();
  if (!out) return out.error();
  host->control_in_ = in.value();
  host->control_out_ = out.value();

  host->loop_ = std::make_unique<ComponentLoop>(table->bells[block.id], block.counters, policy);
  ComponentHost* self = host.get();
  if (auto s = host->loop_->set_control_input(host->control_in_,
                                              [self](std::span<const Message> m) { self->on_control(m); });
      !s) {
    return s.error();
  }
  if (auto s = host->loop_->add_poller([self] { return self->poll_faults(); }); !s) return s.error();
  return host;
}

Result<std::unique_ptr<ComponentHost>> ComponentHost::lease(const std::string& socket_path) {
  auto connection = connect_control(socket_path);
  if (!connection) return connection.error();
  static constexpr char kRequest[] = "lease";
  if (::send(connection->get(), kRequest, sizeof(kRequest) - 1, MSG_NOSIGNAL) < 0) {
    return Error::from_errno("lease request");
  }
  return lease_over(std::move(connection.value()));
}

bool ComponentHost::renumber(int from, int copy) {
  const auto take = [&](UniqueFd& held) {
    if (held.get() != from) return false;
    (void)held.release();
    held = UniqueFd(copy);
    return true;
  };
  const auto take_region = [&](SharedRegion& region) {
    if (region.fd() != from) return false;
    (void)region.replace_descriptor(UniqueFd(copy)).release();
    return true;
  };
  if (take_region(control_) || take_region(bells_region_) || take_region(state_) || take(lease_) || take(wake_)) return true;
  if (pool_ && take_region(pool_->region())) return true;
  for (SharedRegion& region : channel_regions_) {
    if (take_region(region)) return true;
  }
  for (SharedRegion& region : regions_) {
    if (take_region(region)) return true;
  }
  for (UniqueFd& fd : peer_wake_fds_) {
    if (take(fd)) return true;
  }
  return false;
}

Result<std::unique_ptr<ComponentHost>> ComponentHost::lease_through(int inherited_lease_fd) {
  // The supervisor answers on a connection of our own (the pair's other end), never on the
  // inherited one, whose readiness its first holder reads as the end of its lease.
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) return Error::from_errno("socketpair");
  UniqueFd ours(ends[0]);
  UniqueFd theirs(ends[1]);
  static constexpr char kRequest[] = "lease-through";
  const int passed[1] = {theirs.get()};
  if (auto sent = send_fds(inherited_lease_fd, std::as_bytes(std::span(kRequest, sizeof(kRequest) - 1)), passed); !sent) {
    return Error{Errc::closed, sent.error().sys_errno, "lease request through the inherited lease"};
  }
  theirs.reset();
  return lease_over(std::move(ours));
}

Result<std::unique_ptr<ComponentHost>> ComponentHost::lease_over(UniqueFd connection) {
  char reply[512];
  auto received = recv_fds(connection.get(), std::as_writable_bytes(std::span(reply, sizeof(reply) - 1)));
  if (!received) return received.error();
  reply[received->payload_bytes] = '\0';
  const std::string_view answer(reply, received->payload_bytes);
  if (!answer.starts_with("ok\n")) {
    // Kept for the life of the process: the error's context must outlive this call.
    static thread_local std::string refusal;
    refusal = std::string(answer.starts_with("error: ") ? answer.substr(7) : answer);
    while (!refusal.empty() && refusal.back() == '\n') refusal.pop_back();
    const Errc code = refusal.starts_with("no free") ? Errc::exhausted : Errc::invalid_argument;
    return Error{code, 0, refusal.c_str()};
  }
  // The descriptors come in the fixed order of control_block.hpp, from kControlFd on.
  std::vector<UniqueFd>& fds = received->fds;
  auto host = attach_descriptors(WaitPolicy{}, [&fds](int number) -> Result<UniqueFd> {
    const int index = number - kControlFd;
    if (index < 0 || static_cast<std::size_t>(index) >= fds.size() || !fds[static_cast<std::size_t>(index)].valid()) {
      return Error{Errc::bad_layout, 0, "lease: the control block names a descriptor that was not sent"};
    }
    return std::move(fds[static_cast<std::size_t>(index)]);
  });
  if (!host) return host.error();
  if (!(*host)->wake_.valid()) return Error{Errc::bad_layout, 0, "lease: no wake eventfd"};
  (*host)->lease_ = std::move(connection);
  (*host)->disarm_wake();  // a previous lessee may have left the eventfd readable
  return host;
}

void ComponentHost::run() {
  for (std::size_t i = 0; i < channels_.size(); ++i) {
    if (block_->channels[i].peer_idle != 0) loop_->set_input_idle(channels_[i].in, true);
  }
  loop_->run();
}

void ComponentHost::arm_wake() {
  Doorbell& bell = loop_->doorbell();
  bell.sleeping.store(Doorbell::eventfd_sleep, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with ring_doorbell's fence
}

void ComponentHost::disarm_wake() {
  loop_->doorbell().sleeping.store(Doorbell::awake, std::memory_order_relaxed);
  std::uint64_t count = 0;
  if (wake_.valid()) [[maybe_unused]] const ssize_t drained = ::read(wake_.get(), &count, sizeof(count));
}

std::span<std::byte> ComponentHost::region(std::string_view name) {
  for (std::uint32_t i = 0; i < regions_.size(); ++i) {
    if (name == std::string_view(block_->regions[i].name)) return regions_[i].bytes();
  }
  return {};
}

ChannelEnd* ComponentHost::channel(std::string_view name) {
  for (std::uint32_t i = 0; i < channels_.size(); ++i) {
    if (name == std::string_view(block_->channels[i].name)) return &channels_[i];
  }
  return nullptr;
}

ComponentId ComponentHost::peer_of(std::string_view name) const {
  for (std::uint32_t i = 0; i < channels_.size(); ++i) {
    if (name == std::string_view(block_->channels[i].name)) return block_->channels[i].peer;
  }
  return kNoComponent;
}

bool ComponentHost::poll_faults() {
  const auto fault = static_cast<Fault>(
      block_->fault_request.exchange(static_cast<std::uint32_t>(Fault::none), std::memory_order_acq_rel));
  switch (fault) {
    case Fault::none:
      return false;
    case Fault::crash:
      crash_by_sigsegv();
      return true;
    case Fault::abort:
      std::abort();
    case Fault::hang:
      for (;;) ::pause();  // the loop, and with it the heartbeat, stops here
    case Fault::corrupt:
      corrupt_next_ = true;
      return true;
    case Fault::forbidden_call:
      if (const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); fd >= 0) ::close(fd);  // unsandboxed: allowed
      return true;
  }
  block_->counters.add(Counter::corrupt);  // a fault code we do not know
  return false;
}

void ComponentHost::on_control(std::span<const Message> messages) {
  for (const Message& message : messages) {
    if (message.kind != MessageKind::peer_restarted) {
      if (control_handler_) {
        control_handler_(message);
      } else {
        block_->counters.add(Counter::corrupt);
      }
      continue;
    }
    const auto notice = message.read<PeerRestartedNotice>();
    if (notice.peer == kNoComponent || notice.peer >= kMaxComponents) {
      block_->counters.add(Counter::corrupt);
      continue;
    }
    for (std::size_t i = 0; i < channels_.size(); ++i) {
      if (block_->channels[i].peer == notice.peer) loop_->set_input_idle(channels_[i].in, notice.idle != 0);
    }
    if (peer_restarted_) peer_restarted_(notice.peer, notice.incarnation);
  }
}

Result<std::size_t> ComponentHost::send(ChannelEnd& channel, std::span<const Message> messages) {
  if (!corrupt_next_ || messages.empty()) return channel.out.send_burst(messages);
  Message garbled = messages[0];
  for (std::size_t i = 0; i < garbled.body.size(); ++i) {
    garbled.body[i] = static_cast<std::byte>(0xa5 ^ (i * 37));
  }
  auto sent = channel.out.send_burst(std::span(&garbled, 1));
  if (!sent || sent.value() == 0) return sent;
  corrupt_next_ = false;
  auto rest = channel.out.send_burst(messages.subspan(1));
  if (!rest) return rest;
  return 1 + rest.value();
}

bool ComponentHost::send_control(const Message& message) {
  auto sent = control_out_.send_burst(std::span(&message, 1));
  return sent && sent.value() == 1;
}

bool ComponentHost::report(std::string_view text) {
  ReportNotice notice{};
  std::memcpy(notice.text, text.data(), std::min(text.size(), sizeof(notice.text) - 1));
  return send_control(Message::make(kReportKind, notice));
}

void ComponentHost::report_recovered() {
  // The time is taken here, not when the supervisor gets round to reading its control rings.
  const Message notice = Message::make(kRecoveredKind, RecoveredNotice{incarnation_, monotonic_ns()});
  auto sent = control_out_.send_burst(std::span(&notice, 1));
  recovery_reported_ = sent && sent.value() == 1;
}

}  // namespace flotilla
